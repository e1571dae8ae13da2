"""Typed errors: one class per documented failure, each with a message that says what to do next.

No message built here ever contains the API key: errors are built from server bodies and request
fields only, and `redact` scrubs any text that reaches us from elsewhere.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from doitong_nb import _contract as contract
from doitong_nb._core import i18n
from doitong_nb._core.i18n import _, ngettext
from doitong_nb._core.redaction import redact


class DoitongError(Exception):
    """Base of every error doitong_nb raises on purpose."""

    code: str = "ERROR"
    status: int | None = None

    def __init__(self, message: str, *, job_id: str | None = None, status: int | None = None) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.job_id = job_id
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        suffix = (
            _(" (job {job_id})").format(job_id=self.job_id) if self.job_id and self.job_id not in self.message else ""
        )
        return self.message + suffix

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class InvalidRequestError(DoitongError, ValueError):
    """A parameter the service would refuse (400 BAD_USER_INPUT), caught before sending when possible."""

    code = contract.BAD_USER_INPUT
    status = 400

    def __init__(self, message: str, *, field: str | None = None, value: Any = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.field = field
        self.value = value


class AuthenticationError(DoitongError):
    code = contract.UNAUTHENTICATED
    status = 401


class InsufficientCreditsError(DoitongError):
    code = contract.INSUFFICIENT_CREDITS
    status = 402

    def __init__(
        self, message: str, *, credits_required: int | None = None, credits_available: int | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.credits_required = credits_required
        self.credits_available = credits_available


class NotFoundError(DoitongError):
    code = contract.NOT_FOUND
    status = 404


class RateLimitError(DoitongError):
    """429: too many requests, too many concurrent jobs, or the daily cap."""

    status = 429

    def __init__(
        self,
        message: str,
        *,
        code: str = contract.RATE_LIMITED,
        retry_after: float | None = None,
        reset_at: float | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.code = code
        self.retry_after = retry_after
        self.reset_at = reset_at


class ServerError(DoitongError):
    code = contract.INTERNAL
    status = 500


class NetworkError(DoitongError):
    """The connection failed and retrying within the deadline did not help."""

    code = "NETWORK"


class GenerationFailedError(DoitongError):
    """The job ran and failed on the service's side; its credits are refunded [assumed]."""

    def __init__(self, message: str, *, code: str = contract.GENERATION_FAILED, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.code = code


class JobTimeoutError(DoitongError):
    """We stopped waiting; the job goes on and can be picked up again by its id."""

    code = "TIMEOUT"


class UnknownStatusError(JobTimeoutError):
    """The service kept reporting a status nobody listed; the job is kept, resumable by its id."""

    code = "UNKNOWN_STATUS"


class SchemaMismatchError(DoitongError):
    """The service does not have the query (or REST path) the client reads a job's status with, and the
    client could not discover it: the user names it (`Flux(status_query=...)`); the job is kept."""

    code = "SCHEMA_MISMATCH"


class UnclearSubmissionError(DoitongError):
    """The answer to a submission was unclear (cut short, lost, or a 202 we could not follow): the job may exist and
    be charged. It is not sent again on a guess; it is kept in the journal and counted as possibly charged."""

    code = "UNCLEAR_SUBMISSION"

    def __init__(self, message: str, *, idempotency_key: str, credits: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.idempotency_key = idempotency_key
        self.credits = credits


def resume_hint(job_id: str | None) -> str:
    """What every "could not finish" message ends with: the job is kept, and the command that fetches it."""
    if not job_id:
        return _("the submission is kept in the journal: `%flux_jobs` (or `Flux().jobs()`) lists it")
    return _(
        "job {job_id} is paid for and kept in the journal: run `%flux_resume {job_id}` "
        "(or `Flux().resume({job_id!r})`) to fetch it later, at no new cost"
    ).format(job_id=job_id)


class DownloadError(DoitongError):
    """The output could not be fetched or did not decode; the job itself is paid and kept."""

    code = "DOWNLOAD"


class UnsafeResponseError(DoitongError):
    """The server sent an id, URL or body we refuse to act on (it could write outside the output folder)."""

    code = "UNSAFE_RESPONSE"


class BudgetExceededError(DoitongError):
    """The job would cross the credit budget the user set; nothing was sent."""

    code = "BUDGET"


class WebhookVerificationError(DoitongError):
    """A webhook call whose signature or timestamp does not check out: it is refused, never acted on."""

    code = "WEBHOOK_SIGNATURE"


class StoreIntegrityError(DoitongError):
    """A stored result's file is missing or was edited since it was generated."""

    code = "STORE_INTEGRITY"


class MissingResultError(StoreIntegrityError):
    """The lock file records this request, but neither the output folder nor the shared store has its image.

    Nothing is sent: a new image would differ from the one the notebook's science rests on. The message names
    the request and how to proceed (`on_missing="regenerate"` pays for a new one).
    """

    code = "MISSING_RESULT"


SETTING_OUTPUT_DIR = i18n.N_("output_dir=..., %config Flux.output_dir or DOITONG_OUTPUT_DIR")  # shown with _()
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
_GONE = (errno.ENOENT, errno.ENOTDIR, getattr(errno, "ESTALE", errno.ENOENT), errno.ENODEV, errno.ENXIO, errno.EIO)


class StorageError(DoitongError):
    """The output folder or its journal could not take a write: full, read-only, missing, gone, or busy.

    Raised per item: `job_id` names a job that is paid for but not stored (None when nothing was sent).
    `waiting` counts the jobs that are paid and waiting to be fetched, `journaled` says whether this one
    is in the journal (else only this session remembers it), and the message says what to do.
    """

    code = "STORAGE"

    def __init__(
        self,
        problem: str,
        *,
        remedy: str | None = None,
        job_id: str | None = None,
        paid: bool = False,
        journaled: bool = True,
        waiting: int | None = None,
        kind: str = "failed",
    ) -> None:
        remedy = _("free some space") if remedy is None else remedy
        self.problem, self.remedy, self.paid, self.journaled, self.kind = problem, remedy, paid, journaled, kind
        self.waiting = waiting
        super().__init__(self._text(job_id), job_id=job_id)

    def _text(self, job_id: str | None) -> str:
        if not self.paid:
            return _("{problem}; nothing was sent or charged: {remedy}").format(
                problem=self.problem, remedy=self.remedy
            )
        if not self.journaled:
            return _(
                "job {job_id} is paid for, but {problem}, and the journal could not record it; this session "
                "remembers it: {remedy}, then re-run the same cell (or call) in this kernel to fetch it at no "
                "extra cost (a restarted kernel would not know it)"
            ).format(job_id=job_id, problem=self.problem, remedy=self.remedy)
        waiting = max(self.waiting or 1, 1)
        jobs = ngettext("{n} job is", "{n} jobs are", waiting).format(n=waiting)
        return _(
            "job {job_id} is done and paid for, but {problem}. {jobs} paid and waiting: {remedy}, then "
            "re-run the same cell (or call) to fetch them at no extra cost"
        ).format(job_id=job_id, problem=self.problem, jobs=jobs, remedy=self.remedy)

    def with_context(
        self,
        *,
        job_id: str | None = None,
        paid: bool | None = None,
        journaled: bool | None = None,
        waiting: int | None = None,
    ) -> StorageError:
        """The same problem, told for one job (a new error: the message is rebuilt)."""
        return StorageError(
            self.problem,
            remedy=self.remedy,
            job_id=job_id if job_id is not None else self.job_id,
            paid=self.paid if paid is None else paid,
            journaled=self.journaled if journaled is None else journaled,
            waiting=self.waiting if waiting is None else waiting,
            kind=self.kind,
        )

    @classmethod
    def from_os(cls, exc: BaseException, folder: Any, doing: str) -> StorageError:
        """A filesystem or SQLite failure while `doing` something in `folder` (`doing` in the user's language),
        told in plain words."""
        number = getattr(exc, "errno", None)
        text = str(exc).lower()
        told = {"folder": folder, "reason": system_reason(exc), "doing": doing, "setting": _(SETTING_OUTPUT_DIR)}
        if number in _FULL or "disk is full" in text:
            return cls(
                _("the output folder {folder} is full ({reason}, while {doing})").format(**told),
                remedy=_("free some space in {folder}").format(**told),
                kind="full",
            )
        if "locked" in text or "busy" in text:
            return cls(
                _("the journal in {folder} is held by another process ({reason}, while {doing})").format(**told),
                remedy=_("let the other kernel or process finish (or stop it), then run this again"),
                kind="busy",
            )
        if number in _READ_ONLY or "readonly" in text or "read-only" in text:
            return cls(
                _("the output folder {folder} is not writable ({reason}, while {doing})").format(**told),
                remedy=_("make it writable, or choose another folder with {setting}").format(**told),
                kind="read-only",
            )
        if number in _GONE or "unable to open" in text or "disk i/o" in text:
            return cls(
                _(
                    "the output folder {folder} is gone or unreachable: deleted or unmounted? ({reason}, while {doing})"
                ).format(**told),
                remedy=_("make it available again (or choose another folder with {setting})").format(**told),
                kind="gone",
            )
        return cls(
            _("writing to {folder} failed ({reason}, while {doing})").format(**told),
            remedy=_("check the folder, or choose another with {setting}").format(**told),
        )


def system_reason(exc: BaseException, *, typed: bool = False) -> str:
    """What the system or a library said of a failure: its own sentence in English (the language it wrote it in,
    after its class's name when `typed`); in another language the error's name (`ENOSPC`, `EAI_NONAME`,
    `httpx.ReadTimeout`), since the sentence would stay untranslated."""
    number = getattr(exc, "errno", None)
    if i18n.current() == i18n.ENGLISH:
        said = getattr(exc, "strerror", None) or str(exc)
        return f"{type(exc).__name__}: {said}" if typed else said or type(exc).__name__
    if isinstance(number, int) and number in _ERROR_NAMES:
        return _ERROR_NAMES[number]
    return f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")


_ERROR_NAMES = {**errno.errorcode, **{getattr(socket, n): n for n in dir(socket) if n.startswith("EAI_")}}


def is_storage_failure(exc: BaseException) -> bool:
    """An OSError from the filesystem (it has an errno), as opposed to a decoder's OSError or a connection's."""
    return isinstance(exc, OSError) and exc.errno is not None
