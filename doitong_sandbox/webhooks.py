"""Signed webhook delivery with retries; only ever to loopback, so the sandbox sends nothing off the machine."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from doitong_nb import _contract as c

_BACKOFF_SECONDS = 1.0  # doubled after each failed attempt, then divided by speed
_TIMEOUT_SECONDS = 5.0


def is_loopback(url: str) -> bool:
    """True when the URL's host is this machine (127.0.0.0/8, ::1, localhost)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookSender:
    """Delivers each payload up to WEBHOOK_MAX_ATTEMPTS times and records every attempt in `log`."""

    def __init__(
        self,
        *,
        scaled: Callable[[float], float],
        clock: Callable[[], float],
        log: deque[dict[str, Any]],
        sign: Callable[[str, bytes, str], dict[str, str]] | None = None,
    ) -> None:
        self._sign = sign
        self._scaled = scaled
        self._clock = clock
        self.log = log
        self._tasks: set[asyncio.Task[None]] = set()
        # made with the sender, before any request, so no submission or delivery pays for its imports; no TLS
        # checks: every target is on loopback (is_loopback), and loading the CA bundle costs 25-50 ms a client
        self._client = httpx.AsyncClient(trust_env=False, verify=False, timeout=_TIMEOUT_SECONDS)

    def send(self, url: str, secret: str, payload: dict[str, Any], on_attempt: Callable[[], None]) -> None:
        """Start delivering in the background on the running loop; refusals are logged, never raised."""
        try:
            loop = asyncio.get_running_loop()
            refusal = None if is_loopback(url) else "not sent: webhook targets must be on loopback"
        except RuntimeError:
            refusal = "not sent: the sandbox is stopped"
        if refusal:
            entry = {"job_id": payload["id"], "url": url, "attempt": 0, "status": None, "skipped": True}
            self.log.append({**entry, "error": refusal, "headers": {}, "body": ""})
            return
        task = loop.create_task(self._deliver(url, secret, payload, on_attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, secret: str, payload: dict[str, Any], on_attempt: Callable[[], None]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        for attempt in range(1, c.WEBHOOK_MAX_ATTEMPTS + 1):
            timestamp = str(int(self._clock()))
            headers = {
                "Content-Type": "application/json",
                c.HEADER_TIMESTAMP: timestamp,
                c.HEADER_SIGNATURE: c.webhook_signature(secret, body, timestamp),
            }
            if self._sign is not None:  # a dialect's signing scheme
                headers = {"Content-Type": "application/json", **self._sign(secret, body, timestamp)}
            entry: dict[str, Any] = {
                "job_id": payload["id"],
                "url": url,
                "attempt": attempt,
                "status": None,
                "skipped": False,
                "error": None,
                "headers": headers,
                "body": body.decode(),
            }
            on_attempt()
            try:
                response = await self._client.post(url, content=body, headers=headers)
                entry["status"] = response.status_code
            except httpx.HTTPError as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
            self.log.append(entry)
            if entry["status"] is not None and 200 <= entry["status"] < 300:
                return
            if attempt < c.WEBHOOK_MAX_ATTEMPTS:
                await asyncio.sleep(self._scaled(_BACKOFF_SECONDS * 2 ** (attempt - 1)))

    async def drain(self) -> None:
        """Wait for the deliveries under way, and for those they start, to end."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel deliveries still waiting and close the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
