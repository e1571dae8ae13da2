"""A sandbox in its own process (the `python -m doitong_sandbox` CLI), so that its rendering
never competes with the measured client for the GIL. Loopback only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx

_KEYS = ("base_url", "cdn_url", "api_key", "webhook_secret")


class CliSandbox:
    """`with CliSandbox(plan="pro", speed=16) as box: box.base_url, box.api_key, box.stats()`."""

    def __init__(
        self, *, plan: str = "pro", credits: int = 100_000, speed: float | str = 1.0, api_key: str = "sbx_bench"
    ) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "doitong_sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--cdn-port",
            "0",
            "--plan",
            plan,
            "--credits",
            str(credits),
            "--speed",
            str(speed),
            "--api-key",
            api_key,
        ]
        self.process: subprocess.Popen[str] | None = None
        self.info: dict[str, str] = {}

    def __enter__(self) -> CliSandbox:
        env = dict(os.environ)
        env.pop("DOITONG_API_KEY", None)
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 30
        assert self.process.stdout is not None
        while len(self.info) < len(_KEYS):
            line = self.process.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"sandbox did not start: {self.argv}")
            name, _, value = line.strip().partition("=")
            if name in _KEYS:
                self.info[name] = value
        assert self.base_url.startswith("http://127.0.0.1:"), self.base_url
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        for _ in range(200):
            try:
                self.stats()
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("sandbox does not answer /_sandbox/stats")

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    @property
    def base_url(self) -> str:
        return self.info["base_url"]

    @property
    def cdn_url(self) -> str:
        return self.info["cdn_url"]

    @property
    def api_key(self) -> str:
        return self.info["api_key"]

    @property
    def webhook_secret(self) -> str:
        return self.info["webhook_secret"]

    def stats(self) -> dict[str, Any]:
        """The sandbox's counters: {"total": {...}, "keys": {key: {...}}}."""
        response = httpx.get(self.base_url + "/_sandbox/stats", timeout=10)
        response.raise_for_status()
        return response.json()
