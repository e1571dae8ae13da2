"""When to read a job's status: at the moment it is predicted to be done, and rarely before.

The doc's loop asks every 2 s. We predict each job's duration from its pixel count and the
durations seen so far in this session (a speed-scaled sandbox and the real service both fit), read
once at the prediction, then close in with short steps; with nothing learned yet we back off
geometrically from a quick first look.
"""

from __future__ import annotations

import threading

from doitong_nb import _contract as contract

_FIRST_LOOK = 0.25  # seconds: with no history, the first status read
_GROWTH = 1.6  # with no history, each later read waits this much longer
_MAX_GAP = 5.0  # never wait longer than this between reads of a pending job
_ON_TIME_MARGIN = 0.07  # read this much after the prediction: durations vary by a few percent
_LATE_STEP = 0.08  # after the prediction: re-read every 8% of the predicted duration
_MIN_STEP = 0.01
_LEARNING = 0.3  # weight of the newest observation


expected_seconds = contract.typical_seconds  # the contract's duration model, before any job was seen


class DurationModel:
    """Learns how fast the service is relative to `expected_seconds` (thread-safe)."""

    def __init__(self) -> None:
        self._scale: float | None = None
        self._lock = threading.Lock()

    def observe(self, pixels: int, seconds: float) -> None:
        if seconds < 0:
            return
        ratio = seconds / expected_seconds(pixels)
        with self._lock:
            self._scale = ratio if self._scale is None else (1 - _LEARNING) * self._scale + _LEARNING * ratio

    def assume(self, scale: float) -> None:
        """A prior for the first jobs (e.g. a speed-scaled service): ignored once a job has been timed."""
        with self._lock:
            if self._scale is None and scale > 0:
                self._scale = scale

    def predict(self, pixels: int) -> float | None:
        """Predicted seconds from acceptance to completion, or None before any observation."""
        with self._lock:
            return None if self._scale is None else self._scale * expected_seconds(pixels)

    def next_delay(self, pixels: int, elapsed: float, reads: int, hint: float | None = None) -> float:
        """Seconds to wait before the next status read of a job accepted `elapsed` seconds ago."""
        if hint is not None and hint >= 0:
            return hint
        predicted = self.predict(pixels)
        if predicted is None:
            return min(_MAX_GAP, _FIRST_LOOK * _GROWTH**reads)
        on_time = predicted + (max(_MIN_STEP, _ON_TIME_MARGIN * predicted) if predicted > 0 else 0.0)
        if elapsed < on_time:
            return min(on_time - elapsed, _MAX_GAP)
        if reads == 0:  # its predicted end has passed already (an instant service): look now
            return 0.0
        return min(max(_MIN_STEP, _LATE_STEP * predicted), _MAX_GAP)
