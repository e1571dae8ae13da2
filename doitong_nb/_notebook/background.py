"""Background cells: `%%flux --background` returns at once with a live card that becomes the result.

The cell starts its flows on the client's loop thread (`Flux.start`: the same runtime, store, journal and rate
budget as the panel and every other cell) and returns a `BackgroundJob`. A light thread of the cell's own context
repaints the card by its display id (status, elapsed, predicted remaining); when the flows end, the card is
replaced in place by the result cards. "Stop waiting" (the card's button, `job.cancel()` or `%flux_jobs --cancel
ID`) stops this kernel waiting, not the job: it goes on at the service, paid for, and stays in the journal, so
`%flux_resume` fetches it at no new cost.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import html
import importlib
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from doitong_nb._core.i18n import _, ngettext
from doitong_nb._core.polling import expected_seconds

_TICK = 0.5  # seconds between repaints of the live card
_ids = itertools.count(1)
_jobs: list[BackgroundJob] = []  # this kernel's background cells, oldest first
_jobs_lock = threading.Lock()


# what a kernel's first cell would otherwise import while the user waits: the client (httpx, the store), the cards,
# and the live card's widgets (ipywidgets and its comm machinery: a third of the first background cell's time)
_FIRST_CELL_MODULES = ("doitong_nb._runtime.client", "doitong_nb._notebook.display", "ipywidgets")


def prepare_first_cell(shell: Any) -> threading.Thread | None:
    """In a kernel, import what the first cell needs on a thread while the user reads or types, so that cell
    returns as fast as the later ones. The next cell to run waits for what is left first: a cell and the thread
    never import at once. A shell with no kernel (a terminal, a test) shows no widget and is left alone."""
    if getattr(shell, "kernel", None) is None:
        return None
    thread = threading.Thread(target=_import_first_cell_modules, name="flux-prepare", daemon=True)

    def wait_for_it(*_info: Any) -> None:
        thread.join()
        shell.events.unregister("pre_run_cell", wait_for_it)

    shell.events.register("pre_run_cell", wait_for_it)
    thread.start()
    return thread


def _import_first_cell_modules() -> None:
    for name in _FIRST_CELL_MODULES:
        with contextlib.suppress(ImportError):  # the cell that needs it says so, in its own words
            importlib.import_module(name)


def running() -> list[BackgroundJob]:
    """The background cells of this kernel still waiting for their images."""
    with _jobs_lock:
        return [job for job in _jobs if not job.done]


def all_jobs() -> list[BackgroundJob]:
    with _jobs_lock:
        return list(_jobs)


def find(name: str) -> BackgroundJob | None:
    with _jobs_lock:
        return next((job for job in _jobs if job.name == name), None)


class BackgroundJob:
    """A background cell's handle: `.result()` waits for it, `.cancel()` stops waiting, its repr shows the state.

    `requests` are the cell's (request, variant) pairs; `start(i, progress)` starts the i-th flow and returns its
    concurrent future; `finish(results)` builds the final display (the cards) from the successful results.
    """

    def __init__(
        self,
        requests: Sequence[tuple[Any, int]],
        start: Callable[[int, Callable[[str, float, str], None]], concurrent.futures.Future[Any]],
        finish: Callable[[list[Any]], Any],
        *,
        predicted: Callable[[Any], float | None] | None = None,
        unfinished: Callable[[], list[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = f"bg{next(_ids)}"
        self.bound_as: str | None = None  # the notebook variable holding this handle (`-o NAME`), if any
        self.requests = list(requests)
        self._clock = clock
        self._started = clock()
        self._finish = finish
        self._predicted = predicted
        self._unfinished = unfinished
        self._status = ["starting"] * len(self.requests)
        self._done = threading.Event()
        self._cancelled = False
        self._outcomes: list[Any] | None = None
        self._handle: Any = None
        self._button: Any = None
        self._html: Any = None
        self._lock = threading.Lock()
        self._remaining = len(self.requests)
        self._ended = 0.0
        self._futures = [start(index, self._progress_for(index)) for index in range(len(self.requests))]
        for future in self._futures:  # after all are listed: a replayed flow may be done already
            future.add_done_callback(self._one_done)
        with _jobs_lock:
            _jobs.append(self)

    # --- state -------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def elapsed(self) -> float:
        return (self._ended if self.done else self._clock()) - self._started

    @property
    def state(self) -> str:
        if self._cancelled:
            return "stopped waiting"
        if not self.done:
            statuses = set(self._status)
            return (
                next(iter(statuses))
                if len(statuses) == 1
                else f"{sum(s == 'completed' for s in self._status)}/{len(self._status)} done"
            )
        failures = [o for o in self._outcomes or [] if isinstance(o, BaseException)]
        return "failed" if failures and len(failures) == len(self._outcomes or []) else "completed"

    def remaining(self) -> float | None:
        """Predicted seconds left for the slowest image, from the engine's learned duration model."""
        if self.done:
            return 0.0
        per_image = []
        for request, _variant in self.requests:
            predicted = self._predicted(request) if self._predicted else None
            per_image.append(predicted if predicted is not None else expected_seconds(request.width * request.height))
        return max(0.0, max(per_image) - self.elapsed) if per_image else None

    def _progress_for(self, index: int) -> Callable[[str, float, str], None]:
        def report(status: str, elapsed: float, detail: str) -> None:
            self._status[index] = status

        return report

    def _one_done(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            self._settle()

    def _settle(self) -> None:
        outcomes: list[Any] = []
        for future in self._futures:
            if future.cancelled():
                outcomes.append(concurrent.futures.CancelledError())
            else:
                error = future.exception()
                outcomes.append(error if error is not None else future.result())
        self._outcomes = outcomes
        self._ended = self._clock()
        self._done.set()

    # --- the handle ------------------------------------------------------------------------------------------
    def result(self, timeout: float | None = None) -> Any:
        """Wait for the images: one ImageResult, or a list for several; the first failure is raised."""
        if not self._done.wait(timeout):
            raise TimeoutError(
                _("{name} is still {state} after {seconds} s; it goes on in the background").format(
                    name=self.name, state=self._state_text(), seconds=timeout
                )
            )
        if self._cancelled:
            from doitong_nb._core.errors import DoitongError

            raise DoitongError(self.cancel_text())
        outcomes = self._outcomes or []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes[0] if len(outcomes) == 1 else outcomes

    def cancel(self) -> None:
        """Stop waiting (paid jobs stay in the journal, resumable at no new cost); the card says so."""
        if self.done:
            return
        self._cancelled = True
        for future in self._futures:
            future.cancel()
        self._done.wait(10)

    def job_ids(self) -> list[str]:
        """The ids of this cell's jobs that were sent and are not delivered yet."""
        return self._unfinished() if self._unfinished else []

    def cancel_text(self) -> str:
        """What stopping did, in plain text (no markdown: it is shown as is)."""
        ids = self.job_ids()
        if ids:
            text = _(
                "{name}: stopped waiting. The job {ids} goes on at the service and is paid for; %flux_resume --all "
                "(or running the cell again) fetches it without charging again."
            )
        else:
            text = _(
                "{name}: stopped waiting. A job already sent goes on at the service and is paid for; %flux_resume "
                "--all (or running the cell again) fetches it without charging again."
            )
        return text.format(name=self.name, ids=", ".join(ids))

    def _state_text(self) -> str:
        """The state as the user reads it ('2/3 done' is '2/3 완료' in Korean)."""
        from doitong_nb._notebook.display import status_text

        if not self.done and not self._cancelled and len(set(self._status)) > 1:
            done = sum(s == "completed" for s in self._status)
            return _("{done}/{total} done").format(done=done, total=len(self._status))
        return status_text(self.state)

    def summary(self) -> str:
        left = self.remaining()
        parts = [self.name, self._state_text(), _("{seconds:.1f} s").format(seconds=self.elapsed)]
        if not self.done and left is not None:
            parts.append(_("about {seconds:.0f} s left").format(seconds=left))
        prompt = self.requests[0][0].prompt if self.requests else ""
        prompt = prompt if len(prompt) <= 40 else prompt[:39] + "…"
        n = len(self.requests)
        count = ngettext("{n} image: ", "{n} images: ", n).format(n=n) if n > 1 else ""
        return " · ".join(parts) + f" · {count}{prompt!r}"

    def __repr__(self) -> str:
        return f"<BackgroundJob {self.summary()}>"

    # --- the live card -----------------------------------------------------------------------------------------
    def show(self) -> None:
        """Display the live card (with a "Stop waiting" button when ipywidgets can show one) and keep it up to date."""
        from IPython.display import display

        card = self._card_html()
        try:
            import ipywidgets as widgets
        except ImportError:  # pragma: no cover - ipywidgets is a dependency
            widgets = None
        if widgets is not None:
            self._html = widgets.HTML(card)
            self._button = widgets.Button(
                description=_("Stop waiting"),
                tooltip=_("stop waiting here; the job goes on, paid for, and %flux_resume fetches it"),
            )
            self._button.on_click(lambda _: self.cancel())
            box = widgets.HBox([self._html, self._button])
            self._handle = display(box, display_id=True)
        else:
            self._handle = display({"text/plain": self.summary(), "text/html": card}, raw=True, display_id=True)
        run = contextvars.copy_context().run  # ipykernel keeps the cell's parent header in a context variable
        threading.Thread(target=run, args=(self._follow,), name="flux-background", daemon=True).start()

    def _card_html(self) -> str:
        text = html.escape(self.summary())
        waits = f"<code>{html.escape(self.bound_as or self.name)}.result()</code>"
        running = html.escape(_("running in the background: other cells can run; {call} waits for it"))
        return (
            '<div style="font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;'
            'padding:6px 10px;border:1px dashed rgba(127,127,127,.5);border-radius:8px">'
            f'⏳ {text}<br><span style="opacity:.7">{running.format(call=waits)}</span></div>'
        )

    def _follow(self) -> None:
        while not self._done.wait(_TICK):
            if self._html is not None:
                self._html.value = self._card_html()
            elif self._handle is not None:
                self._handle.update({"text/plain": self.summary(), "text/html": self._card_html()}, raw=True)
        self._final_paint()

    def _final_paint(self) -> None:
        if self._button is not None:
            self._button.close()
        if self._html is not None:
            self._html.close()
        if self._handle is None:
            return
        if self._cancelled:
            text = self.cancel_text()
            self._handle.update({"text/plain": text, "text/html": f"<div>{html.escape(text)}</div>"}, raw=True)
            return
        results = [o for o in self._outcomes or [] if not isinstance(o, BaseException)]
        failures = [o for o in self._outcomes or [] if isinstance(o, BaseException)]
        if results:
            self._handle.update(self._finish(results))
        if failures:
            from doitong_nb._notebook.display import error_text

            text = "\n".join(error_text(f) for f in failures)
            if results:
                from IPython.display import display

                display({"text/plain": text}, raw=True)
            else:
                self._handle.update({"text/plain": text, "text/html": f"<pre>{html.escape(text)}</pre>"}, raw=True)
