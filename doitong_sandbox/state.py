"""A sandbox's state in a folder, so a restarted sandbox knows its jobs, balance and keys like the real service.

One sandbox a folder, and it is the only writer: it holds the folder's owner lock (an OS file lock, released when
its process dies however it dies) for its whole life, writes `state.json` atomically (a temporary file renamed over
it) before each answer leaves, and says in `endpoint.json` where it listens. Another sandbox asked to start on the
same folder gets `StateInUse` with that endpoint and uses the running one: two writers would lose each other's
charges, and two kernels of one user share one account on the real service too. The start lock, held while a
sandbox starts, means nobody reads the endpoint of a sandbox half started.

What is kept: the keys and their webhook secrets, plans, balances, counters, request windows and idempotency
records, and every job with the parameters its procedural image is rendered from (prompt, size, seed...), so its
status and its image read the same after a restart. Logs of requests are not kept.
"""

from __future__ import annotations

import json
import os
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from doitong_sandbox.validation import Spec

if TYPE_CHECKING:
    from doitong_sandbox.engine import Account, Engine

FORMAT = 1  # of state.json; a file of another format is refused, never half read
STATE, ENDPOINT, OWNER_LOCK, START_LOCK = "state.json", "endpoint.json", "owner.lock", "start.lock"


def user_state_dir() -> Path:
    """Where the bundled sandbox of doitong_nb keeps its state unless told otherwise: the user's data folder."""
    import platformdirs

    return platformdirs.user_data_path("doitong-nb", appauthor=False) / "sandbox"


@dataclass(frozen=True)
class Endpoint:
    """Where a running sandbox listens and its default key; the key and secret stay out of the repr."""

    base_url: str
    cdn_url: str
    pid: int
    speed: float
    api_key: str = field(repr=False)
    webhook_secret: str = field(repr=False)


class StateInUse(RuntimeError):
    """Another sandbox owns this state folder; `endpoint` says where it listens (None: it is not listening)."""

    def __init__(self, folder: Path, endpoint: Endpoint | None) -> None:
        where = f"the sandbox at {endpoint.base_url} (pid {endpoint.pid})" if endpoint else "another process"
        super().__init__(f"the sandbox state in {folder} is in use by {where}; stop it first")
        self.folder, self.endpoint = folder, endpoint


# --- locks -------------------------------------------------------------------------------------------


def _lock(f: BinaryIO, blocking: bool) -> bool:
    """Lock an open file for this process; False if another holds it (when not blocking)."""
    try:
        import fcntl
    except ImportError:  # Windows: a lock on the file's first byte
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _open_lock(path: Path) -> BinaryIO:
    return open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b")


@contextmanager
def _starting(folder: Path) -> Iterator[None]:
    """The start lock: one sandbox at a time starts on (or resets) this folder."""
    with _open_lock(folder / START_LOCK) as f:
        _lock(f, blocking=True)
        yield  # closing the file releases the lock


def _owner(folder: Path) -> BinaryIO | None:
    """The folder's owner lock, open and held, or None while another process holds it."""
    f = _open_lock(folder / OWNER_LOCK)
    if _lock(f, blocking=False):
        return f
    f.close()
    return None


def _folder(folder: str | os.PathLike[str]) -> Path:
    path = Path(folder)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


# --- files -------------------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> None:
    """Replace `path` by `data` whole, or not at all (a crash leaves the old file), readable by its owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_endpoint(folder: str | os.PathLike[str]) -> Endpoint | None:
    """The endpoint the folder's running sandbox wrote, if any (it may have died since: see `StateInUse`)."""
    try:
        return Endpoint(**json.loads((Path(folder) / ENDPOINT).read_bytes()))
    except FileNotFoundError:
        return None


class StateFile:
    """A claimed state folder: its state as last saved, `save()` for each change, `close()` to let go."""

    def __init__(self, folder: Path, owner: BinaryIO) -> None:
        self.folder, self._owner = folder, owner
        path = folder / STATE
        try:
            self._written = path.read_bytes()
        except FileNotFoundError:
            self._written = b""
        self.data: dict[str, Any] | None = json.loads(self._written) if self._written else None
        if self.data is not None and self.data.get("format") != FORMAT:
            self.close()
            raise ValueError(
                f"{path} is of format {self.data.get('format')!r}, not {FORMAT}; `doitong-sandbox --reset "
                f"--state {folder}` starts afresh"
            )

    def save(self, data: dict[str, Any]) -> None:
        """Write `data` if it differs from what is on disk."""
        encoded = json.dumps({"format": FORMAT, **data}, separators=(",", ":")).encode()
        if encoded != self._written:
            _write(self.folder / STATE, encoded)
            self._written = encoded

    def announce(self, endpoint: Endpoint) -> None:
        _write(self.folder / ENDPOINT, json.dumps(asdict(endpoint)).encode())

    def close(self) -> None:
        """Forget the endpoint and release the owner lock (safe to call twice)."""
        if not self._owner.closed:
            with suppress(FileNotFoundError):
                (self.folder / ENDPOINT).unlink()
            self._owner.close()


@contextmanager
def claim(folder: str | os.PathLike[str]) -> Iterator[StateFile]:
    """Own `folder` (StateInUse if a sandbox does), holding the start lock until the block ends: start the
    servers and `announce()` inside it. The claim is let go if the block fails."""
    path = _folder(folder)
    with _starting(path):
        owner = _owner(path)
        if owner is None:
            raise StateInUse(path, read_endpoint(path))
        store = StateFile(path, owner)
        try:
            yield store
        except BaseException:
            store.close()
            raise


def owned(folder: str | os.PathLike[str]) -> bool:
    """Whether a sandbox runs on `folder` now."""
    path = Path(folder)
    if not path.is_dir():
        return False
    with _starting(path):
        owner = _owner(path)
        if owner is None:
            return True
        owner.close()
        return False


def reset(folder: str | os.PathLike[str]) -> bool:
    """Remove the folder's state (StateInUse while a sandbox runs on it); False if there was none."""
    path = Path(folder)
    if not path.is_dir():
        return False
    with _starting(path):
        owner = _owner(path)
        if owner is None:
            raise StateInUse(path, read_endpoint(path))
        with owner:
            try:
                (path / STATE).unlink()
            except FileNotFoundError:
                return False
            return True


# --- the engine's state as JSON ----------------------------------------------------------------------


def snapshot(engine: Engine, api_key: str) -> dict[str, Any]:
    """Everything `restore` needs, as JSON values; `api_key` is the sandbox's default key."""
    return {
        "api_key": api_key,
        "storage_secret": engine.storage_secret,
        "unattributed": dict(engine.unattributed),
        "accounts": [
            {
                "key": a.key,
                "plan": a.plan.name,
                "credits": a.credits,
                "webhook_secret": a.webhook_secret,
                "requests": list(a.requests.times),
                "submissions": list(a.submissions.times),
                "idempotency": a.idempotency,
                "stats": dict(a.stats),
                "last_submitted": a.last_submitted,
            }
            for a in engine.accounts.values()
        ],
        "jobs": [
            {**{k: v for k, v in vars(job).items() if k != "spec"}, "spec": asdict(job.spec)}
            for job in engine.jobs.values()
        ],
    }


def restore(engine: Engine, data: dict[str, Any], plan: str) -> Account:
    """Put a `snapshot` back into a new engine, the default key on `plan` (a plan is a setting, the balance is
    state); returns the default key's account."""
    from doitong_sandbox.engine import Job

    engine.storage_secret = data["storage_secret"]
    engine.unattributed.update(data["unattributed"])
    for saved in data["accounts"]:
        account = engine.add_key(
            plan if saved["key"] == data["api_key"] else saved["plan"], saved["credits"], saved["key"]
        )
        account.webhook_secret = saved["webhook_secret"]
        account.requests.times = deque(saved["requests"])
        account.submissions.times = deque(saved["submissions"])
        account.idempotency = {k: (job_id, at) for k, (job_id, at) in saved["idempotency"].items()}
        account.stats = Counter(saved["stats"])
        account.last_submitted = saved["last_submitted"]
    for saved in data["jobs"]:
        job = Job(**{**saved, "spec": Spec(**saved["spec"])})
        engine.jobs[job.id] = job
        if job.final is None:
            engine.accounts[job.key].pending[job.id] = job
    return engine.accounts[data["api_key"]]
