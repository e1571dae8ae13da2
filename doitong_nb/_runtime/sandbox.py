"""The one place that starts the bundled sandbox (doitong_sandbox): once per process, when no settings name a
service.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from doitong_nb._core.env import ENV_API_KEY
from doitong_nb._core.settings import Settings

if TYPE_CHECKING:
    from doitong_sandbox import Sandbox


_sandbox: Sandbox | None = None
_sandbox_lock = threading.Lock()


def shared_sandbox(plan: str, credits: int, speed: float) -> Sandbox:
    """The process's bundled sandbox, started on first use (with its first caller's plan, credits and speed) and
    announced once, as a note on stdout."""
    global _sandbox
    with _sandbox_lock:
        if _sandbox is None:
            from doitong_sandbox import Sandbox

            _sandbox = Sandbox(plan=plan, credits=credits, speed=speed)
            _sandbox.start()
            print(
                f"doitong_nb: no {ENV_API_KEY} set, so images come from the bundled offline sandbox "
                f"at {_sandbox.base_url} (procedural, marked SANDBOX, {speed:g}x the real speed, no real credits).",
            )  # stdout: a note, not an error (a notebook shows stderr in red)
        return _sandbox


def connect(settings: Settings) -> Settings:
    """`settings` with the bundled sandbox's address, key and webhook secret filled in when they name no service;
    the sandbox starts on first use, once per process."""
    if not settings.sandbox or settings.base_url:
        return settings
    box = shared_sandbox(settings.sandbox_plan, settings.sandbox_credits, settings.sandbox_speed)
    secret = settings.webhook_secret or box.webhook_secret
    return replace(settings, api_key=box.api_key, base_url=box.base_url, webhook_secret=secret)
