"""Fault injection: which requests the sandbox breaks on purpose, so clients can prove they recover.

Each fault is a probability (a float in [0, 1)) or a count (an int >= 1: the next N eligible
occurrences). Decisions come from a seeded RNG, so a run with the same traffic repeats exactly.
`fired` counts the faults each kind really injected, so a test can prove every kind it asked for happened.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, fields

KINDS = (
    "error_5xx",
    "rate_limit_429",
    "drop",
    "slow",
    "slow_submit",
    "truncate_cdn",
    "fail_job",
    "moderate_job",
    "queue_job",
)


@dataclass
class Faults:
    """Fault settings; assign a new instance to `Sandbox.faults` to change them while it runs."""

    error_5xx: float | int = 0
    rate_limit_429: float | int = 0
    rate_limit_seconds: float = 1.0  # the injected 429's Retry-After
    drop: float | int = 0
    slow: float | int = 0
    slow_seconds: float = 2.0
    slow_submit: float | int = 0  # a submission is accepted (and charged), then its answer held `slow_seconds`
    truncate_cdn: float | int = 0
    fail_job: float | int = 0
    moderate_job: float | int = 0  # the job fails with CONTENT_MODERATED (refunded), as a refused prompt does
    queue_job: float | int = 0  # the job waits `queue_seconds` in `queued` before it is processed
    queue_seconds: float = 3.0
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _left: dict[str, int] = field(init=False, repr=False, compare=False)
    fired: Counter[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name in KINDS:
                _check(f.name, getattr(self, f.name))
        for name in ("slow_seconds", "queue_seconds", "rate_limit_seconds"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        self._rng = random.Random(self.seed)
        self._left = {k: v for k in KINDS if _is_count(v := getattr(self, k))}
        self.fired = Counter()

    def fire(self, kind: str) -> bool:
        """Decide whether this eligible occurrence of `kind` is broken (consumes a count or a roll)."""
        if self._decide(kind):
            self.fired[kind] += 1
            return True
        return False

    def _decide(self, kind: str) -> bool:
        value = getattr(self, kind)
        if kind in self._left:
            if self._left[kind] <= 0:
                return False
            self._left[kind] -= 1
            return True
        return bool(value) and self._rng.random() < value

    def choice(self, options: tuple[int, ...]) -> int:
        """A seeded pick, e.g. which 5xx status to answer with."""
        return self._rng.choice(options)


def _is_count(value: float | int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check(name: str, value: float | int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a probability or a count, got {value!r}")
    if not (_is_count(value) or 0 <= value < 1):
        raise ValueError(f"{name} must be a probability in [0, 1) or a count >= 1, got {value!r}")
