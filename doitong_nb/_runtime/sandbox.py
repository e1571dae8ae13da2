"""The one place that starts the bundled sandbox (doitong_sandbox), when no settings name a service.

One sandbox a user, its state in the user's data folder (DOITONG_SANDBOX_STATE names another), rather than one
process shared by every kernel of the machine: a sandbox in the kernel's own process needs no daemon to find, to
outlive its kernels or to keep in step with an upgraded package, and dies with the kernel it served. Its state
(jobs, balance, keys, idempotency records, the images' parameters) is written as it changes, so the next kernel's
sandbox goes on from it: a job journaled before Restart Kernel is still known, at no new charge, like on the real
service. While one kernel's sandbox runs, another kernel uses that one (one writer, no lost charge); when it is
gone, the next kernel to connect starts its own on the same state. `doitong-sandbox --reset` starts afresh.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from doitong_nb._core.env import ENV_API_KEY, ENV_SANDBOX_STATE
from doitong_nb._core.i18n import _
from doitong_nb._core.settings import Settings

if TYPE_CHECKING:
    from doitong_sandbox import Sandbox
    from doitong_sandbox.state import Endpoint


_sandbox: Sandbox | Endpoint | None = None  # this process's sandbox, or the one of the kernel it uses
_sandbox_lock = threading.Lock()


def state_dir() -> Path:
    """The folder the bundled sandbox keeps its state in: DOITONG_SANDBOX_STATE, else the user's data folder."""
    from doitong_sandbox.state import user_state_dir

    return Path(os.environ[ENV_SANDBOX_STATE]) if os.environ.get(ENV_SANDBOX_STATE) else user_state_dir()


def shared_sandbox(plan: str, credits: int, speed: float) -> Sandbox | Endpoint:
    """The bundled sandbox, started on first use (with its first caller's plan, credits and speed) and announced
    once, as a note on stdout; the running one of another kernel on the same state, if there is one."""
    global _sandbox
    with _sandbox_lock:
        if _sandbox is None or _gone(_sandbox):
            from doitong_sandbox import Sandbox
            from doitong_sandbox.state import StateInUse

            folder = state_dir()
            try:
                _sandbox = Sandbox(plan=plan, credits=credits, speed=speed, state_dir=folder).start()
            except StateInUse as busy:
                if busy.endpoint is None:
                    raise
                _sandbox, speed = busy.endpoint, busy.endpoint.speed
            note = _(
                "doitong_nb: no {variable} set, so images come from the bundled offline sandbox at {url} (procedural, "
                "marked SANDBOX, {speed}x the real speed, no real credits)."
            )
            # stdout: a note, not an error (a notebook shows stderr in red)
            print(note.format(variable=ENV_API_KEY, url=_sandbox.base_url, speed=f"{speed:g}"))
        return _sandbox


def _gone(box: Sandbox | Endpoint) -> bool:
    """Whether the other kernel whose sandbox this process uses has ended (so its state is free to take over)."""
    from doitong_sandbox.state import Endpoint, owned

    return isinstance(box, Endpoint) and not owned(state_dir())


def connect(settings: Settings) -> Settings:
    """`settings` with the bundled sandbox's address, key and webhook secret filled in when they name no service;
    the sandbox starts on first use, once per process."""
    if not settings.sandbox or settings.base_url:
        return settings
    box = shared_sandbox(settings.sandbox_plan, settings.sandbox_credits, settings.sandbox_speed)
    secret = settings.webhook_secret or box.webhook_secret
    return replace(settings, api_key=box.api_key, base_url=box.base_url, webhook_secret=secret)
