"""The plan's request budget, kept on the client so that normal operation never meets a 429.

A sliding-window log of our own sends, corrected by what the server says in its X-RateLimit-*
headers (the same key may be busy elsewhere). `reserve()` books the next free slot and says how
long to wait for it, so concurrent callers never collide.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from . import contract

_MARGIN_FRACTION = 0.05  # slack at the window's edge: the server counts arrivals, we count sends
_MARGIN_SECONDS = 0.005
_LATENESS_DECAY = 0.9  # each send forgets a tenth of the lateness seen before


class Slot(NamedTuple):
    at: float  # the booked send time (the budget's clock)
    wait: float  # seconds from booking to `at`


class RateBudget:
    """Requests per window for one API key; thread-safe."""

    def __init__(
        self,
        limit: int | None = None,
        window: float = contract.RATE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sends: list[float] = []  # booked or actual send times, sorted
        self._lateness = 0.0  # how much later than booked our requests recently left (see sent())
        self._blocked_until = 0.0
        self._foreign = 0  # requests in the window that were not ours (another process, same key)
        self._lock = threading.Lock()

    def reserve(self) -> Slot:
        """Book a slot for one request: wait `slot.wait` seconds, send, then call `sent(slot)`."""
        with self._lock:
            now = self._clock()
            margin = self.window * _MARGIN_FRACTION + _MARGIN_SECONDS + self._lateness
            while self._sends and self._sends[0] <= now - self.window - margin:
                self._sends.pop(0)
            at = max(now, self._blocked_until, self._sends[-1] if self._sends else now)
            if self.limit is not None and self.window > 0:
                capacity = max(1, self.limit - self._foreign)
                in_window = [t for t in self._sends if t > at - self.window - margin]
                if len(in_window) >= capacity:
                    at = in_window[-capacity] + self.window + margin
            self._sends.append(at)
            return Slot(at, at - now)

    def sent(self, slot: Slot) -> None:
        """The request booked at `slot` leaves now. A send later than booked (its flow was held up by
        other work in the same thread) counts from now, and widens the margin of later bookings."""
        with self._lock:
            now = self._clock()
            late = now - slot.at
            self._lateness = max(late, self._lateness * _LATENESS_DECAY)
            if late > 0 and slot.at in self._sends:
                self._sends.remove(slot.at)
                bisect.insort(self._sends, now)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn the limit, the window and any foreign use of the key from a response's headers."""
        limit = _number(headers.get(contract.HEADER_RATE_LIMIT))
        remaining = _number(headers.get(contract.HEADER_RATE_REMAINING))
        reset = _number(headers.get(contract.HEADER_RATE_RESET))
        window = _number(headers.get(contract.HEADER_RATE_WINDOW))
        with self._lock:
            now = self._clock()
            if window is not None:
                self.window = window
            if limit:
                self.limit = int(limit)
            if limit and remaining is not None:
                ours = sum(1 for t in self._sends if now - self.window < t <= now)
                self._foreign = max(0, int(limit - remaining) - ours)
                if remaining <= 0 and reset is not None:
                    self._blocked_until = max(self._blocked_until, now + max(0.0, reset - time.time()))

    def block_for(self, seconds: float) -> None:
        """A 429 said to wait: nobody sends before then."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
