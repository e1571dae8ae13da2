"""Rendered outputs: each job's image is rendered while the job runs, as the real service generates it.

Rendering at download time would put tens of milliseconds of CPU (seconds for 4096x4096) on the
path between a job finishing and its client's next request, which a speed-scaled sandbox magnifies.
So rendering starts in the background when a job is accepted, on a small pool of its own (a burst
of submissions never renders more than two images at once), and the CDN awaits the result. A
bounded number of results is kept; an evicted one is rendered again on request.
"""

from __future__ import annotations

import asyncio
import importlib
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doitong_sandbox.engine import Job

_KEPT = 32  # rendered (or rendering) outputs kept; a pro plan runs 10 jobs at once
_KEPT_BYTES = 256 * 1024 * 1024  # and no more bytes than this (a 4096x4096 PNG is tens of MB)
_RENDER_THREADS = 2


def _render(job: Job) -> bytes:
    from doitong_sandbox.render import render  # lazy: numpy, and the slow part

    spec = job.spec
    return render(spec.prompt, spec.width, spec.height, job.seed, raw=spec.raw, output_format=spec.output_format)


class Outputs:
    """Job id -> its rendering, started by `start()` on the server's loop and awaited by `get()`."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(_RENDER_THREADS, thread_name_prefix="sandbox-render")
        self._pool.submit(importlib.import_module, "doitong_sandbox.render")  # now, not in the first job's way
        self._renders: OrderedDict[str, asyncio.Future[bytes]] = OrderedDict()

    def start(self, job: Job, on_rendered: Callable[[], None] | None = None) -> None:
        """Begin rendering `job`'s image in the background; `on_rendered` is called on the loop when done."""
        if job.id not in self._renders:
            render = self._renders[job.id] = asyncio.get_running_loop().run_in_executor(self._pool, _render, job)
            if on_rendered is not None:
                render.add_done_callback(lambda f: f.cancelled() or f.exception() or on_rendered())
            while len(self._renders) > 1 and (len(self._renders) > _KEPT or self._kept_bytes() > _KEPT_BYTES):
                _, oldest = self._renders.popitem(last=False)
                oldest.cancel()  # a render not yet begun is dropped; a running one finishes unheard

    def _kept_bytes(self) -> int:
        done = (r for r in self._renders.values() if r.done() and not r.cancelled() and r.exception() is None)
        return sum(len(r.result()) for r in done)

    async def get(self, job: Job) -> bytes:
        """The image's bytes, rendering it now if it was never started or has been evicted."""
        self.start(job)
        self._renders.move_to_end(job.id)
        return await asyncio.shield(self._renders[job.id])

    def close(self) -> None:
        """Drop pending renders and wait for running ones, so a stopped sandbox leaves no thread behind."""
        for render in self._renders.values():
            render.cancel()
        self._renders.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
