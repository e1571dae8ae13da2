"""Reliability against hostile conditions: a killed process, and a server whose answers must not be trusted.

The crash test drives a real sandbox on loopback from a subprocess. The untrusted-server tests point
`base_url` at a tiny hostile HTTP server on loopback (Flux builds its own httpx clients, so there is
no transport to inject): it answers with job ids, URLs and bodies no honest service would send.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from doitong_nb import _contract as contract
from doitong_nb._core.errors import DownloadError, UnsafeResponseError
from doitong_nb._runtime.client import Flux
from doitong_sandbox import Faults, Sandbox

PROMPT = "A futuristic city with flying cars and neon lights"

# --- crash safety -------------------------------------------------------------------------------

_BATCH_SCRIPT = """
import sys
from doitong_nb._runtime.client import Flux

key, url, out = sys.argv[1:4]
prompts = [f"a crash-safe lighthouse, study {i}" for i in range(8)]
with Flux(api_key=key, base_url=url, output_dir=out) as flux:
    results = flux.batch(prompts, size="256x256", seed=5, progress=False)
print(len(results.images), len(results.errors))
"""


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix in (".jpg", ".jpeg", ".png"))


@pytest.mark.timeout(120)
def test_batch_killed_mid_run_resumes_with_each_image_once_and_charged_once(tmp_path: Path) -> None:
    """The kill lands while a submission is accepted and charged at the service but its answer has not come
    back (a slow_submit fault holds it), the case only the journaled Idempotency-Key can recover: resent with it
    because an earlier session in this folder saw the service echo its key (the submission rule)."""
    out = tmp_path / "out"
    with Sandbox(plan="pro", credits=1000, speed=16) as box:  # ~0.5 s a job
        with Flux(api_key=box.api_key, base_url=box.base_url, output_dir=out) as earlier:
            warm = earlier.generate("a lighthouse before the crash", size="256x256", seed=5)
            assert earlier.engine.idempotency_honoured
        box.faults = Faults(slow_submit=1, slow_seconds=600.0)  # the next submission's answer waits 37 s at speed 16
        argv = [sys.executable, "-c", _BATCH_SCRIPT, box.api_key, box.base_url, str(out)]
        first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while box.stats()["total"]["held_submissions"] == 0 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        assert first.returncode == -signal.SIGKILL, "the first run ended before it could be killed"
        at_kill = box.stats()["total"]
        assert at_kill["held_submissions"] == 1 and at_kill["jobs_created"] >= 1

        second = subprocess.run(argv, capture_output=True, text=True, timeout=90)
        assert second.returncode == 0, second.stderr[-2000:]
        assert second.stdout.split() == ["8", "0"], second.stdout + second.stderr[-2000:]
        total = box.stats()["total"]

    # the submission in flight at the kill was sent again with its Idempotency-Key and answered with its job
    assert total["idempotent_replays"] >= 1
    images = [p for p in _images(out) if p.stem != warm.job_id]
    assert len(images) == 8
    assert len({p.stem for p in images}) == 8
    for image in images:
        assert json.loads(image.with_suffix(".json").read_text(encoding="utf-8"))["job_id"] == image.stem
    assert total["jobs_created"] == 1 + 8
    assert total["credits_charged"] == (1 + 8) * contract.credit_cost(256, 256)
    assert not any((out / ".partial").glob("*"))


# --- an untrusted server ----------------------------------------------------------------------------


def _jpeg(width: int = 256, height: int = 256) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


@dataclass
class Cdn:
    """What the hostile host serves for any GET: status, body and the Content-Length it claims."""

    body: bytes = b""
    status: int = 200
    content_length: int | None = None  # None: the true length
    content_type: str = "image/jpeg"


@dataclass
class Hostile:
    """A fake API + CDN on one loopback port that returns `job` for every GraphQL call."""

    job: dict[str, Any]
    cdn: Cdn = field(default_factory=Cdn)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def handler(self) -> Callable[..., BaseHTTPRequestHandler]:
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                hostile.requests.append(("POST", self.path, dict(self.headers)))
                query = str(body.get("query", ""))
                if "account" in query:
                    payload = {"data": {"account": {"credits": 1000, "plan": "pro"}}}
                else:
                    name = "job" if query.startswith("query Job") else "generate"
                    payload = {"data": {name: hostile.job}}
                self._send(200, json.dumps(payload).encode(), "application/json")

            def do_GET(self) -> None:
                hostile.requests.append(("GET", self.path, dict(self.headers)))
                cdn = hostile.cdn
                self._send(cdn.status, cdn.body, cdn.content_type, cdn.content_length)

            def _send(self, status: int, data: bytes, kind: str, length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data) if length is None else length))
                self.send_header("Connection", "close")
                self.end_headers()
                with contextlib.suppress(OSError):  # the client may hang up on a refused body
                    self.wfile.write(data)
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    @property
    def cdn_gets(self) -> list[str]:
        return [path for method, path, _ in self.requests if method == "GET"]


@pytest.fixture
def hostile() -> Iterator[Callable[..., Hostile]]:
    servers: list[ThreadingHTTPServer] = []

    def start(job: dict[str, Any], cdn: Cdn | None = None) -> Hostile:
        state = Hostile(job=job, cdn=cdn or Cdn())
        server = ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        servers.append(server)
        state.url = f"http://127.0.0.1:{server.server_address[1]}"
        return state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def completed(job_id: str, url: str, width: int = 256, height: int = 256) -> dict[str, Any]:
    return {
        "id": job_id,
        "status": "completed",
        "url": url,
        "creditCost": 10,
        "metadata": {"width": width, "height": height},
    }


def generate_against(server: Hostile, tmp_path: Path) -> Any:
    with Flux(api_key="sk-hostile-test-key", base_url=server.url, output_dir=tmp_path / "out", timeout=10) as flux:
        return flux.generate(PROMPT, size="256x256", seed=1)


def outside_files(tmp_path: Path) -> list[Path]:
    """Files anywhere under tmp_path that are not inside the output folder."""
    out = tmp_path / "out"
    return [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents]


@pytest.mark.parametrize("job_id", ["../../x", "..", "a/b", "/etc/passwd", "job\x00id", "x" * 129, ""])
def test_hostile_job_id_that_is_not_a_safe_file_name_is_refused_and_nothing_is_written(
    hostile: Callable[..., Hostile], tmp_path: Path, job_id: str
) -> None:
    server = hostile({}, Cdn(body=_jpeg()))
    server.job = completed(job_id, f"{server.url}/outputs/job_ok.jpg")
    with pytest.raises(UnsafeResponseError, match="job id"):
        generate_against(server, tmp_path)
    assert server.cdn_gets == []
    assert outside_files(tmp_path) == []
    assert _images(tmp_path / "out") == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/outputs/job_ok.jpg",
        "http://evil.example/outputs/job_ok.jpg",
        "https://user:pw@evil.example/outputs/job_ok.jpg",  # https on a public host is allowed, credentials never
        "https://10.0.0.7/outputs/job_ok.jpg",
        "http://doitong.com.evil.example/outputs/job_ok.jpg",
        "javascript:alert(1)",
    ],
)
def test_hostile_output_url_off_the_service_is_refused_before_any_connection(
    hostile: Callable[..., Hostile], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    server = hostile(completed("job_ok", url), Cdn(body=_jpeg()))
    looked_up: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def recording_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(str(host))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)  # a connection to any host resolves it first
    with pytest.raises(UnsafeResponseError, match="refusing output URL"):
        generate_against(server, tmp_path)
    assert "evil.example" not in " ".join(looked_up)  # refused up front: no connect attempt, no retries
    assert server.cdn_gets == []
    assert _images(tmp_path / "out") == []


def test_a_completed_job_without_a_url_is_read_again_and_named_never_fetched(
    hostile: Callable[..., Hostile], tmp_path: Path
) -> None:
    """An empty url is no URL yet (a service that writes it a moment late): read again until the deadline, then an
    error naming the job and its resume command; nothing is fetched."""
    server = hostile(completed("job_ok", ""), Cdn(body=_jpeg()))
    with pytest.raises(DownloadError, match=r"job job_ok is completed, but .*no image URL.*%flux_resume job_ok"):
        generate_against(server, tmp_path)
    assert server.cdn_gets == [] and _images(tmp_path / "out") == []


def test_hostile_body_longer_than_announced_is_cut_there_and_refused_as_a_broken_image(
    hostile: Callable[..., Hostile], tmp_path: Path
) -> None:
    body = _jpeg()
    server = hostile({}, Cdn(body=body, content_length=len(body) // 2))
    server.job = completed("job_long", f"{server.url}/outputs/job_long.jpg")
    with pytest.raises(DownloadError, match="could not be downloaded") as caught:
        generate_against(server, tmp_path)
    assert caught.value.job_id == "job_long"
    assert _images(tmp_path / "out") == [] and outside_files(tmp_path) == []


def test_hostile_announced_size_over_the_limit_is_refused(hostile: Callable[..., Hostile], tmp_path: Path) -> None:
    server = hostile({}, Cdn(body=_jpeg(), content_length=10**12))
    server.job = completed("job_huge", f"{server.url}/outputs/job_huge.jpg")
    with pytest.raises(DownloadError, match=r"more than the \d+ allowed"):
        generate_against(server, tmp_path)
    assert _images(tmp_path / "out") == []


def test_hostile_non_image_body_is_refused_and_not_stored(hostile: Callable[..., Hostile], tmp_path: Path) -> None:
    html = b"<html><body>" + b"not an image " * 200 + b"</body></html>"
    server = hostile({}, Cdn(body=html, content_type="text/html"))
    server.job = completed("job_html", f"{server.url}/outputs/job_html.jpg")
    with pytest.raises(DownloadError, match="could not be downloaded"):
        generate_against(server, tmp_path)
    assert _images(tmp_path / "out") == [] and not list((tmp_path / "out").glob("job_html*"))


def test_hostile_image_of_another_size_than_announced_is_refused(
    hostile: Callable[..., Hostile], tmp_path: Path
) -> None:
    server = hostile({}, Cdn(body=_jpeg(512, 256)))
    server.job = completed("job_size", f"{server.url}/outputs/job_size.jpg")
    with pytest.raises(DownloadError, match="512x256"):
        generate_against(server, tmp_path)
    assert _images(tmp_path / "out") == []


def test_api_key_never_reaches_a_hostile_download_host(hostile: Callable[..., Hostile], tmp_path: Path) -> None:
    server = hostile({}, Cdn(body=_jpeg()))
    server.job = completed("job_fine", f"{server.url}/outputs/job_fine.jpg")
    img = generate_against(server, tmp_path)
    assert img.path == tmp_path / "out" / "job_fine.jpg"
    gets = [headers for method, _, headers in server.requests if method == "GET"]
    posts = [headers for method, _, headers in server.requests if method == "POST"]
    assert len(gets) == 1 and posts
    assert all("sk-hostile-test-key" not in json.dumps(h) for h in gets)
    assert all("sk-hostile-test-key" in h.get("Authorization", "") for h in posts)
