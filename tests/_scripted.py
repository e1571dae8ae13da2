"""A driver for the engine's flows with no I/O, the h11 way: each `Send` is answered from a prepared list, each
`Sleep` advances a fake clock, `Work` runs, a `Fetch` gets a small JPEG, a `WaitFor` gets its future's result at
once when it is resolved, else None after its seconds on the fake clock; what the flow sent is recorded."""

from __future__ import annotations

import io
from collections.abc import Callable, Generator
from typing import Any

from PIL import Image

from doitong_nb import _contract as contract
from doitong_nb._core.steps import Fetch, Fetched, Reply, Send, Sleep, WaitFor, Work

Answer = Reply | BaseException


def jpeg(size: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (40, 90, 160)).save(buf, "JPEG")
    return buf.getvalue()


class Script:
    """Runs a flow to its end (or a step at a time), answering its Sends in order from `answers`."""

    def __init__(self, *answers: Answer, image: bytes = b"", sink: Callable[[Any, bytes], None] | None = None) -> None:
        """`sink(dest, data)` takes a Fetch's bytes instead of the file `dest` (an in-memory store's)."""
        self.answers = list(answers)
        self.image = image
        self.sink = sink
        self.now = 0.0
        self.sent: list[Send] = []
        self.sent_at: list[float] = []
        self.slept: list[float] = []
        self.waited: list[float] = []  # each WaitFor's seconds, whether or not it waited them
        self.before_send: Callable[[Send], None] | None = None

    def clock(self) -> float:
        return self.now

    def step(self, step: Any) -> tuple[Any, BaseException | None]:
        """The outcome of one step: (value, None), or (None, the exception a driver throws in)."""
        if isinstance(step, Send):
            if self.before_send:
                self.before_send(step)
            self.sent.append(step)
            self.sent_at.append(self.now)
            answer = self.answers.pop(0)
            return (None, answer) if isinstance(answer, BaseException) else (answer, None)
        if isinstance(step, Sleep):
            self.slept.append(step.seconds)
            self.now += step.seconds
            return None, None
        if isinstance(step, Work):
            try:
                return step.fn(), None
            except Exception as exc:
                return None, exc
        if isinstance(step, WaitFor):
            self.waited.append(step.seconds)
            if step.future.done():
                return step.future.result(), None
            self.now += step.seconds
            return None, None
        if isinstance(step, Fetch):
            if self.sink is not None:
                self.sink(step.dest, self.image)
            else:
                step.dest.write_bytes(self.image)
            return Fetched(200, len(self.image), len(self.image)), None
        raise AssertionError(f"unexpected step {step!r}")

    def run(self, flow: Generator[Any, Any, Any]) -> Any:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = self.step(step)

    def kinds(self) -> list[str]:
        return [s.call.kind for s in self.sent]

    def keys(self) -> list[str | None]:
        return [s.headers.get(contract.HEADER_IDEMPOTENCY) for s in self.sent]
