"""The plan's request budget, kept on the client so that normal operation never meets a 429.

A sliding-window log of our own requests, corrected by what the server says in its X-RateLimit-*
headers (the same key may be busy elsewhere). `reserve()` books the next free slot and says how
long to wait for it, so concurrent callers never collide.

The server counts a request when it arrives, which we cannot see; but it arrived after we sent
it and before its reply came. So each answered request is logged at its reply time, and one still
in flight at its send time plus the slowest recent round trip: a request booked a window after
that can never be counted with it, and the edge needs no wider margin than that.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from doitong_nb import _contract as contract

_MARGIN_SECONDS = 0.005  # at the window's edge, on top of the logged times
_FIRST_ROUND_TRIP = 0.25  # assumed for requests in flight before any reply was timed
_DECAY = 0.9  # each new sample forgets a tenth of the worst seen before


class Slot(NamedTuple):
    at: float  # when to send (the budget's clock)
    wait: float  # seconds from booking to `at`
    counted: float  # where the request stands in the log: the latest it can have reached the server


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
        self.window_told = False  # the server said its window (a speed-scaled sandbox's is short)
        self._clock = clock
        self._log: list[float] = []  # each request's `counted` time, sorted
        self._lateness = 0.0  # how much later than booked our requests recently left (see sent())
        self._round_trip: float | None = None  # the slowest recent send-to-reply time (see answered())
        self._blocked_until = 0.0
        self._foreign = 0  # requests in the window that were not ours (another process, same key)
        self.implausible_reset: str | None = None  # the last X-RateLimit-Reset no reading made sense of (for doctor)
        self._lock = threading.Lock()

    def reserve(self) -> Slot:
        """Book a slot for one request: wait `slot.wait` seconds, then `sent(slot)`, send, `answered(...)`."""
        with self._lock:
            now = self._clock()
            margin = _MARGIN_SECONDS + self._lateness
            while self._log and self._log[0] <= now - self.window - margin:
                self._log.pop(0)
            at = max(now, self._blocked_until)
            if self.limit is not None and self.window > 0:
                capacity = max(1, self.limit - self._foreign)
                in_window = [t for t in self._log if t > at - self.window - margin]
                if len(in_window) >= capacity:
                    at = max(at, in_window[-capacity] + self.window + margin)
            return self._log_at(Slot(at, at - now, at + self._trip()))

    def sent(self, slot: Slot) -> Slot:
        """The request booked as `slot` leaves now. One later than booked (its flow was held up by
        other work in the same thread) is logged from now, and widens later bookings' margin."""
        with self._lock:
            now = self._clock()
            late = now - slot.at
            self._lateness = max(late, self._lateness * _DECAY)
            self._unlog(slot.counted)
            return self._log_at(Slot(now, 0.0, now + self._trip()))

    def answered(self, slot: Slot) -> None:
        """The request `sent()` returned `slot` for has its reply (or failed) now: log it here, time the trip."""
        with self._lock:
            now = self._clock()
            trip = now - slot.at
            if trip >= 0:
                self._round_trip = trip if self._round_trip is None else max(trip, self._round_trip * _DECAY)
            self._unlog(slot.counted)
            self._log_at(slot._replace(counted=now))

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn the limit, the window and any foreign use of the key from a response's headers."""
        limit = _number(headers.get(contract.HEADER_RATE_LIMIT))
        remaining = _number(headers.get(contract.HEADER_RATE_REMAINING))
        reset = headers.get(contract.HEADER_RATE_RESET)
        window = _number(headers.get(contract.HEADER_RATE_WINDOW))
        with self._lock:
            now = self._clock()
            if window is not None:
                self.window, self.window_told = window, True
            if limit:
                self.limit = int(limit)
            if limit and remaining is not None:
                ours = sum(1 for t in self._log if now - self.window < t <= now + self._trip())  # sent ones
                self._foreign = max(0, int(limit - remaining) - ours)
                if remaining <= 0 and reset is not None:
                    wait = reset_seconds(reset)
                    if wait is None or wait > self.window + _MARGIN_SECONDS:  # no window resets further away
                        self.implausible_reset = str(reset)
                        wait = self.window if wait is not None else 0.0
                    self._blocked_until = max(self._blocked_until, now + wait)

    def cancel(self, slot: Slot) -> None:
        """A slot `reserve()` booked will not be used (its wait was past the caller's deadline)."""
        with self._lock:
            self._unlog(slot.counted)

    def block_for(self, seconds: float) -> None:
        """A 429 said to wait: nobody sends before then."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    def _trip(self) -> float:
        return _FIRST_ROUND_TRIP if self._round_trip is None else self._round_trip

    def _log_at(self, slot: Slot) -> Slot:
        bisect.insort(self._log, slot.counted)
        return slot

    def _unlog(self, counted: float) -> None:
        index = bisect.bisect_left(self._log, counted)
        if index < len(self._log) and self._log[index] == counted:
            del self._log[index]


def reset_seconds(reset: float | str, now: float | None = None) -> float | None:
    """Seconds until an X-RateLimit-Reset, read by what its value can be [assumed]: seconds left (any number below a
    Unix time of 2001), a Unix time in seconds, a Unix time in milliseconds (above RESET_IS_MILLISECONDS_ABOVE), or
    an HTTP date. None when it is none of these; the caller clamps a reading past the window."""
    text = reset if isinstance(reset, str) else repr(float(reset))
    form = reset_form(text)
    if form == "unreadable":
        return None
    if form == "http-date":
        return retry_after_seconds(text, now)
    number = float(text)
    if number != number:  # NaN
        return None
    if form == "seconds-left":
        return max(0.0, number)
    if form == "unix-milliseconds":
        number /= 1000
    return max(0.0, number - (time.time() if now is None else now))


def reset_form(reset: str) -> str:
    """How an X-RateLimit-Reset is written: the contract's "unix-seconds", or "seconds-left", "unix-milliseconds",
    "http-date", "unreadable" (the one reading of it, for `reset_seconds` and doctor)."""
    number = _number(reset)
    if number is None:
        return "http-date" if retry_after_seconds(reset) is not None else "unreadable"
    if number < contract.RESET_IS_UNIX_TIME_ABOVE:
        return "seconds-left"
    return "unix-milliseconds" if number > contract.RESET_IS_MILLISECONDS_ABOVE else "unix-seconds"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header in seconds: a number of seconds, or an HTTP date (RFC 9110); None when absent or
    unreadable. A date already past means at once."""
    if value is None:
        return None
    number = _number(value)
    if number is not None:
        return max(0.0, number) if number == number else None  # NaN is not a wait
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
