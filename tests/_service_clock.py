"""A service clock the tests move themselves (`Sandbox(clock=...)`): time at the sandbox without waiting for it."""

from __future__ import annotations

import time


class Clock:
    """A service clock the test moves itself: rate windows and jobs see its time, and nothing waits for real."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
