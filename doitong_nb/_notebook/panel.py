"""The widget panel: the engine behind a form, a live job list and a gallery.

The panel only builds requests and shows results; every job runs through the same client as the
magics (store, replay, journal, rate budget), in the panel's own worker thread so that the kernel
stays free while images are made. Each panel keeps its own jobs and gallery.

Widgets leave nothing a saved notebook can show (reopened or exported, the cell read `VBox(children=...`), so
the panel also writes its results into the notebook: below the live panel, one ordinary output holds their cards
(the same as `%%flux` shows) and the `%%flux` cell that redoes each, updated by display id as images land.
"""

from __future__ import annotations

import html
import random
import shlex
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Union

import ipywidgets as widgets

from doitong_nb import _contract as contract
from doitong_nb._core.errors import DoitongError, InvalidRequestError, RateLimitError
from doitong_nb._core.i18n import N_, _
from doitong_nb._core.request import MAX_SEED, GenerationRequest, per_image
from doitong_nb._core.result import credits_text
from doitong_nb._notebook import session as _session
from doitong_nb._notebook.display import cost_text, error_text, result_bundle, seed_text, status_text
from doitong_nb._notebook.previews import make_preview

if TYPE_CHECKING:
    from doitong_nb._core.result import ImageResult
    from doitong_nb._runtime.client import Flux

ClientSource = Union["Flux", Callable[[], "Flux"], None]

SIZES = (
    ("1024 × 1024", "1024x1024"),
    ("2048 × 2048", "2048x2048"),
    ("4096 × 4096", "4096x4096"),
    ("3840 × 2160 · 4K UHD", "3840x2160"),
    (N_("Custom…"), ""),
)
ASPECTS = ((N_("— (use size)"), ""), *((r, r) for r in ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9")))
QUALITIES = ((N_("service default"), ""), *((q, q) for q in contract.QUALITIES))
FORMATS = tuple((f.upper(), f) for f in contract.OUTPUT_FORMATS)
MAX_COUNT = 16
THUMB_PX, DETAIL_PX = 256, 768
_WORKERS = 2  # one click's batch (Generate waits for it) and the account query; a batch's images interleave
_TICK = 0.5  # seconds between repaints of the running jobs' elapsed time

_CSS = """<style>
.flux-panel{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;gap:8px;padding:12px 14px;
  border:1px solid rgba(127,127,127,.3);border-radius:12px;background:rgba(127,127,127,.04);max-width:1000px}
.flux-panel .flux-header{justify-content:space-between;align-items:baseline}
.flux-panel .flux-title{font-size:15px;font-weight:600}
.flux-panel .flux-account{font-size:12px;opacity:.8}
.flux-panel .flux-prompt textarea{font-size:13px;border-radius:6px}
.flux-panel .flux-row{flex-wrap:wrap;gap:4px 14px;align-items:center}
.flux-panel .flux-generate button{font-weight:600;border-radius:6px}
.flux-panel .flux-estimate{font-size:13px}
.flux-panel :is(.flux-caption,.flux-job,.flux-banner,.flux-detail) .widget-html-content{line-height:1.4}
.flux-banner .flux-banner-box{padding:8px 12px;border-radius:8px;font-size:13px;line-height:1.45;
  background:rgba(215,58,73,.12);border:1px solid rgba(215,58,73,.55)}
.flux-job{font-size:12px;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.flux-job .flux-bar{display:inline-block;width:56px;height:6px;margin-right:8px;border-radius:3px;vertical-align:middle;
  background:linear-gradient(90deg,rgba(47,129,247,.15),rgba(47,129,247,.8),rgba(47,129,247,.15));
  background-size:200% 100%;animation:flux-slide 1.2s linear infinite}
@keyframes flux-slide{from{background-position:100% 0}to{background-position:-100% 0}}
.flux-gallery{gap:10px}
.flux-thumb{position:relative;border:1px solid rgba(127,127,127,.3);border-radius:8px;overflow:hidden;
  background:rgba(127,127,127,.08)}
.flux-thumb.flux-selected{outline:2px solid rgba(47,129,247,.9);outline-offset:1px}
.flux-thumb .flux-open{position:absolute;inset:0;width:100%;height:100%;margin:0;opacity:0;cursor:zoom-in}
.flux-thumb .flux-caption{display:block;height:auto;margin:0;padding:5px 8px 6px;opacity:.85}
.flux-thumb .flux-caption .widget-html-content{display:block;height:auto;line-height:16px;font-size:11px}
.flux-thumb .flux-caption .widget-html-content>div{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.flux-badge{display:inline-block;padding:0 6px;border-radius:999px;font-size:10px;font-weight:600;
  background:rgba(46,160,67,.16);border:1px solid rgba(46,160,67,.55)}
.flux-detail{gap:6px}
</style>"""


def _labelled(options: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """A dropdown's (label, value) pairs with the labels in the user's language (the values are options)."""
    return [(_(label), value) for label, value in options]


def _classed(widget: widgets.Widget, *names: str) -> widgets.Widget:
    for name in names:
        widget.add_class(name)
    return widget


def _magics_client() -> Callable[[], Flux] | None:
    """The loaded extension's client (read on every job, so `%config Flux.*` changes reach the panel)."""
    magics = _session.current
    return None if magics is None else lambda: magics.client


def _client_source(client: ClientSource) -> Callable[[], Flux]:
    if callable(client):
        return client
    if client is not None:
        return lambda: client
    from_magics = _magics_client()
    if from_magics is not None:
        return from_magics
    from doitong_nb._runtime.client import Flux

    own = Flux()
    return lambda: own


def _banner_text(exc: BaseException) -> str:
    """error_text, plus the wall-clock time a rate limit resets, which tells the user when to come back."""
    text = error_text(exc)
    if isinstance(exc, RateLimitError) and exc.reset_at is not None:
        text += " " + _("(the limit resets at {time})").format(time=f"{datetime.fromtimestamp(exc.reset_at):%H:%M:%S}")
    return text


def flux_cell(result: ImageResult) -> str:
    """The `%%flux` cell that makes `result` again: replayed at 0 credits while the store keeps it.

    Every option is spelled out (a later `%config Flux.size` does not change it); an unseeded result is given
    the seed the service chose, so the cell makes the same pixels (the panel's unseeded copies are variants a cell
    cannot name). The prompt is escaped for the cell's `{expr}` and `$name` expansion.
    """
    r = result.request
    words = ["%%flux", *(["--aspect", r.aspect_ratio] if r.aspect_ratio else ["--size", r.size])]
    seed = r.seed if r.seed is not None else result.seed
    if seed is not None:
        words += ["--seed", str(seed)]
    if r.raw:
        words.append("--raw")
    if r.version != contract.DEFAULT_VERSION:
        words += ["--version", r.version]
    if r.quality is not None:
        words += ["--quality", r.quality]
    if r.output_format != "jpeg":
        words += ["--format", r.output_format]
    prompt = r.prompt.replace("$", "$$").replace("{", "{{").replace("}", "}}")
    return shlex.join(words).replace("'%%flux'", "%%flux") + "\n" + prompt


class _PanelBox(widgets.VBox):
    """The panel's widget: shown, it is the live panel followed by its results as a static output; its text
    (what a notebook reopened without widget state shows) says what it is instead of the widget tree."""

    def __init__(self, panel: FluxPanel, children: list[widgets.Widget]) -> None:
        super().__init__(children)
        self._panel = panel

    def __repr__(self) -> str:
        return _("Flux panel (interactive: run the cell to use it; its results are saved below it)")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)
        self._panel._record_here()


@dataclass(eq=False)  # compared by identity: each is one row
class _Job:
    """One image of one Generate click, with its own progress row."""

    number: int
    request: GenerationRequest
    row: widgets.HTML
    queued_at: float = field(default_factory=time.monotonic)
    status: str = "queued"

    def paint(self) -> None:
        """Its number, size, seed, status and elapsed time (the engine's request counts mean nothing to a user)."""
        r = self.request
        elapsed = _("{seconds:.1f} s").format(seconds=time.monotonic() - self.queued_at)
        parts = [f"#{self.number}", r.size, seed_text(r.seed), status_text(self.status), elapsed]
        text = html.escape(" · ".join(parts))
        self.row.value = f'<span class="flux-bar"></span>{text}'


class FluxPanel:
    """The widgets of one panel and the jobs it started; `widget` is what the notebook displays."""

    def __init__(self, client: ClientSource = None) -> None:
        self._client = _client_source(client)
        self._executor = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="flux-panel")
        self._lock = threading.Lock()
        self._jobs: list[_Job] = []
        self._results: list[ImageResult] = []
        self._errors: list[str] = []
        self._counter = 0
        self._ticker: threading.Thread | None = None
        self._records: list[Any] = []  # display handles of the static outputs that carry the results
        self._build()
        self._start_from_settings()
        self._refresh_estimate()
        self._refresh_account()
        self._executor.submit(self._fetch_account)

    def _start_from_settings(self) -> None:
        """The client's settings are the panel's starting values: on the extension's client, `%config Flux.*` >
        the environment > the defaults, as for `%%flux` (_runtime/settings.py)."""
        settings = self._client().settings
        self.budget.value = "" if settings.max_credits is None else str(settings.max_credits)
        listed = settings.size in (value for _label, value in SIZES)
        self.size.value = settings.size if listed else ""  # "" is "Custom…"
        if not listed:
            self.custom_size.value = settings.size

    # --- layout -----------------------------------------------------------------------------------
    def _build(self) -> None:
        wide = {"description_width": "initial"}
        self.prompt = _classed(
            widgets.Textarea(
                placeholder=_("Describe the image: a lighthouse on a basalt cliff at dawn, volumetric fog…"),
                layout=widgets.Layout(width="100%", height="76px"),
            ),
            "flux-prompt",
        )
        self.size = widgets.Dropdown(options=_labelled(SIZES), value="1024x1024", description=_("Size"), style=wide)
        self.custom_size = widgets.Text(
            value="1536x1024", placeholder=_("WIDTHxHEIGHT"), layout=widgets.Layout(width="110px", display="none")
        )
        self.aspect = widgets.Dropdown(
            options=_labelled(ASPECTS),
            value="",
            description=_("Aspect"),
            style=wide,
            layout=widgets.Layout(width="190px"),
        )
        self.seed = widgets.Text(
            placeholder=_("random"), description=_("Seed"), style=wide, layout=widgets.Layout(width="150px")
        )
        self.dice = _classed(
            widgets.Button(tooltip=_("roll a random seed"), icon="random", layout=widgets.Layout(width="36px")),
            "flux-dice",
        )
        self.raw = widgets.ToggleButton(
            description="RAW", tooltip=_("the natural, less processed look"), layout=widgets.Layout(width="64px")
        )
        self.version = widgets.Dropdown(
            options=contract.VERSIONS, value=contract.DEFAULT_VERSION, description=_("Version"), style=wide
        )
        self.count = widgets.BoundedIntText(  # a tooltip: with none, ipywidgets titles the label "null"
            value=1,
            min=1,
            max=MAX_COUNT,
            description=_("Count"),
            tooltip=_("number of images (shown as a grid)"),
            style=wide,
            layout=widgets.Layout(width="110px"),
        )
        self.quality = widgets.Dropdown(options=_labelled(QUALITIES), value="", description=_("Quality"), style=wide)
        self.output_format = widgets.Dropdown(
            options=FORMATS, value="jpeg", description=_("Format"), style=wide, layout=widgets.Layout(width="150px")
        )
        self.budget = widgets.Text(
            placeholder=_("no limit"),
            description=_("Spend at most"),
            tooltip=_("credits this session may spend in all; empty: no limit"),
            style=wide,
            layout=widgets.Layout(width="200px"),
        )
        self.generate = _classed(
            widgets.Button(description=_("Generate"), button_style="primary", icon="magic"), "flux-generate"
        )
        self.estimate = _classed(widgets.HTML(), "flux-estimate")
        self.account = _classed(widgets.HTML(), "flux-account")
        self.banner = _classed(widgets.HTML(layout=widgets.Layout(display="none")), "flux-banner")
        self.dismiss = widgets.Button(description=_("Dismiss"), layout=widgets.Layout(display="none", width="90px"))
        self.jobs = _classed(widgets.VBox(), "flux-jobs")
        self.gallery = _classed(
            widgets.GridBox(layout=widgets.Layout(grid_template_columns="repeat(auto-fill, minmax(170px, 1fr))")),
            "flux-gallery",
        )
        self.detail_view = widgets.HTML()
        self.close_detail = widgets.Button(description=_("Close"), icon="times", layout=widgets.Layout(width="90px"))
        self.copy_cell = widgets.Button(
            description=_("Copy as %%flux cell"), icon="copy", tooltip=_("the cell that makes this image again")
        )
        # A widget's click cannot insert a cell (IPython's set_next_input works only in an executing cell): the
        # code is offered here, selected and copied by the user, and saved with the results below the panel.
        self.cell_code = widgets.Textarea(layout=widgets.Layout(width="100%", height="64px", display="none"))
        self.detail = _classed(
            widgets.VBox(
                [self.detail_view, widgets.HBox([self.close_detail, self.copy_cell]), self.cell_code],
                layout=widgets.Layout(display="none"),
            ),
            "flux-detail",
        )
        self._shown: ImageResult | None = None

        header = _classed(
            widgets.HBox([_classed(widgets.HTML("Flux Ultra"), "flux-title"), self.account]), "flux-header"
        )
        settings = _classed(
            widgets.HBox([self.size, self.custom_size, self.aspect, widgets.HBox([self.seed, self.dice]), self.raw]),
            "flux-row",
        )
        more = _classed(
            widgets.HBox([self.version, self.quality, self.output_format, self.count, self.budget]), "flux-row"
        )
        action = _classed(widgets.HBox([self.generate, self.estimate]), "flux-row")
        errors = widgets.HBox([self.banner, self.dismiss], layout=widgets.Layout(align_items="flex-start"))
        parts = [widgets.HTML(_CSS), header, self.prompt, settings, more, action, errors, self.jobs, self.gallery]
        self.widget = _classed(_PanelBox(self, [*parts, self.detail]), "flux-panel")

        controls = (self.size, self.custom_size, self.aspect, self.seed, self.quality, self.count, self.budget)
        for control in controls:
            control.observe(self._on_settings, names="value")
        self.dice.on_click(self._roll_seed)
        self.generate.on_click(self._on_generate)
        self.dismiss.on_click(lambda _: self._clear_errors())
        self.close_detail.on_click(lambda _: self._hide_detail())
        self.copy_cell.on_click(lambda _: self._offer_cell())

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # --- the results, written into the notebook -------------------------------------------------------
    def _record_here(self) -> None:
        """Below the panel just shown, the output that carries its results: an ordinary display (cards and text)
        that the notebook saves, so the results outlive the widgets."""
        from IPython.display import display

        self._records.append(display(self._record(), raw=True, display_id=True))

    def _record(self) -> dict[str, str]:
        """This panel's results as `%%flux` shows them (newest first), each with the cell that redoes it."""
        results = self.results
        if not results:
            text = _("No images yet: each one made in the panel above is kept here, saved with the notebook.")
            return {
                "text/plain": text,
                "text/html": f'<div style="font-size:12px;opacity:.7">{html.escape(text)}</div>',
            }
        preview_px = self._client().settings.preview_px
        bundle = result_bundle(results, preview_px)
        cells = [flux_cell(r) for r in results]
        code = "".join(
            f'<pre style="font-size:11px;margin:4px 0;padding:6px 8px;white-space:pre-wrap;user-select:all;'
            f'border:1px solid rgba(127,127,127,.3);border-radius:6px">{html.escape(c)}</pre>'
            for c in cells
        )
        again = _("The cells that make them again (newest first; replayed at 0 credits while the store keeps them):")
        page = f'{bundle["text/html"]}<div style="font-size:12px;margin-top:8px">{html.escape(again)}</div>{code}'
        return {"text/plain": bundle["text/plain"] + "\n\n" + "\n\n".join(cells), "text/html": page}

    def _write_record(self) -> None:
        record = self._record()
        for handle in list(self._records):
            handle.update(record, raw=True)

    # --- settings -> requests ---------------------------------------------------------------------
    def _seed(self) -> int | None:
        text = self.seed.value.strip()
        if not text:
            return None
        if not text.isdigit():
            said = _("seed {value} must be a whole number from 0 to {most}").format(value=repr(text), most=MAX_SEED)
            raise InvalidRequestError(said, field="seed")
        return int(text)

    def _budget(self) -> int | None:
        text = self.budget.value.strip()
        if not text:
            return None
        if not text.isdigit():
            said = _("spend limit {value} must be a whole number of credits").format(value=repr(text))
            raise InvalidRequestError(said, field="max_credits")
        return int(text)

    def requests(self, prompt: str | None = None) -> list[tuple[GenerationRequest, int]]:
        """(request, variant) per image, as the magics make them: seeds N, N+1... or unseeded variants."""
        options: dict[str, Any] = {
            "raw": self.raw.value,
            "version": self.version.value,
            "quality": self.quality.value or None,
            "output_format": self.output_format.value,
        }
        if self.aspect.value:
            options["aspect_ratio"] = self.aspect.value
        else:
            options["size"] = self.size.value or self.custom_size.value
        base = GenerationRequest.build(self.prompt.value if prompt is None else prompt, seed=self._seed(), **options)
        return per_image(base, self.count.value)

    def _on_settings(self, _change: Any = None) -> None:
        self.custom_size.layout.display = "" if self.size.value == "" and not self.aspect.value else "none"
        self.size.disabled = bool(self.aspect.value)
        self._refresh_estimate()
        self._refresh_account()

    def _refresh_estimate(self) -> None:
        try:
            pairs = self.requests(prompt="estimate")  # the prompt does not change the price
        except DoitongError as exc:
            self.estimate.value = f'<span style="color:#d73a49">{html.escape(str(exc))}</span>'
            return
        each = pairs[0][0].estimated_credits
        total = each * len(pairs)
        split = f" ({len(pairs)} × {each})" if len(pairs) > 1 else ""
        self.estimate.value = f"≈ <b>{credits_text(total)}</b>{split} · {html.escape(pairs[0][0].size)}"

    def _refresh_account(self) -> None:
        client = self._client()
        bold = "<b>{}</b>".format
        parts = [html.escape(_("session {credits}")).format(credits=bold(credits_text(client.session_credits)))]
        if client.balance is not None:
            parts.append(html.escape(_("balance {credits}")).format(credits=bold(client.balance)))
        limit = self.budget.value.strip()
        if limit.isdigit():
            parts.append(html.escape(_("limit {credits}").format(credits=credits_text(int(limit)))))
        if client.settings.sandbox:
            parts.append(html.escape(_("sandbox")))
        self.account.value = " · ".join(parts)

    def _roll_seed(self, _button: Any = None) -> None:
        self.seed.value = str(random.randint(0, MAX_SEED - MAX_COUNT))

    def _fetch_account(self) -> None:
        try:
            self._client().account()
        except Exception as exc:
            self._show_error(exc)
        self._refresh_account()

    # --- jobs -------------------------------------------------------------------------------------
    def _on_generate(self, _button: Any = None) -> list[_Job]:
        """Queue the images of the current settings; returns at once, the work runs in a worker thread.

        Generate is disabled until they are done: a double click queued a second batch (two rows, a duplicate
        thumbnail). The kernel runs clicks one after another, so a click already on its way when the button
        was disabled finds it so here and does nothing. The engine's quote is weighed against the panel's spend
        limit over what the session spent."""
        if self.generate.disabled:
            return []
        self._clear_errors()
        try:
            client = self._client()
            pairs = self.requests()
            limit = self._budget()
            quote = client.quote(  # no limit of its own: the session's max_credits
                pairs,
                max_credits=limit,
                spent=client.session_credits,
                budget_name=_("the budget") if limit is not None else "max_credits",
            )
            client.admit(quote)
        except DoitongError as exc:
            self._show_error(exc)
            return []
        self._busy(True)
        with self._lock:
            jobs = []
            for item in quote.items:
                self._counter += 1
                row = _classed(widgets.HTML(), "flux-job")
                jobs.append(_Job(self._counter, item.request, row))
            self._jobs.extend(jobs)
            for job in jobs:
                job.paint()
            self.jobs.children = (*self.jobs.children, *(j.row for j in jobs))
        by_index = {item.index: job for item, job in zip(quote.items, jobs, strict=True)}
        future = self._executor.submit(  # the batch scheduler: paced at the plan's job slots, like `%%flux -n`
            client.generate_many,
            [r for r, _ in pairs],  # unseeded repeats become variants 0, 1, ... as quoted
            progress=False,
            item_progress=lambda index: self._progress(by_index[index]),
            item_done=lambda index, outcome: self._ended_item(by_index.get(index), outcome),
        )
        future.add_done_callback(lambda done: self._batch_done(done, jobs))
        self._start_ticker()
        return jobs

    def _busy(self, busy: bool) -> None:
        self.generate.disabled = busy
        self.generate.description = _("Generating…") if busy else _("Generate")

    def _progress(self, job: _Job) -> Callable[[str, float, str], None]:
        def report(status: str, elapsed: float, detail: str) -> None:
            job.status = status
            job.paint()

        return report

    def _ended_item(self, job: _Job | None, outcome: ImageResult | DoitongError) -> None:
        """An image of this click is ready (or failed); a seeded repeat shares its first's job and shows once."""
        if job is not None:
            if isinstance(outcome, DoitongError):
                self._ended(job, error=outcome)
            else:
                self._ended(job, result=outcome)

    def _ended(self, job: _Job, result: ImageResult | None = None, error: BaseException | None = None) -> None:
        if result is not None:
            try:
                self._add_to_gallery(result)
            except Exception as exc:  # e.g. an unreadable file: say so, keep the panel alive
                error = exc
        if error is not None:
            self._show_error(error)
        self._drop([job])
        self._refresh_account()

    def _drop(self, jobs: list[_Job]) -> None:
        """Take ended jobs off the list; with the last one, Generate is free again (before `running` says 0)."""
        with self._lock:
            self._jobs = [j for j in self._jobs if j not in jobs]
            self.jobs.children = tuple(c for c in self.jobs.children if all(c is not j.row for j in jobs))
            if not self._jobs:
                self._busy(False)

    def _batch_done(self, future: Future[list[Any]], jobs: list[_Job]) -> None:
        """The click's flows ended: a failure of the driver itself (not of a job) still reaches the banner, and
        the jobs it left unfinished leave the list."""
        error = future.exception()
        if error is not None:
            self._show_error(error)
        self._drop(jobs)

    def _start_ticker(self) -> None:
        """One thread per panel repaints the elapsed time of running jobs, and ends with the last of them."""
        with self._lock:
            if self._ticker is not None and self._ticker.is_alive():
                return
            self._ticker = threading.Thread(target=self._tick, name="flux-panel-ticker", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while True:
            time.sleep(_TICK)
            with self._lock:
                running = list(self._jobs)
            if not running:
                return
            for job in running:
                job.paint()

    # --- results ----------------------------------------------------------------------------------
    def _add_to_gallery(self, result: ImageResult) -> None:
        data, mime = make_preview(result.path, THUMB_PX)
        # overflow hidden: lumino styles widgets `overflow: visible`, and Chromium then paints the part that
        # object-fit: cover crops off a replaced element, over the caption below it. Cropped from the
        # top, so that a sandbox image keeps its SANDBOX banner (at the bottom) in view.
        fill = widgets.Layout(
            width="100%",
            height="150px",
            object_fit="cover",
            object_position="50% 100%",
            flex="none",
            margin="0",
            overflow="hidden",
        )
        image = widgets.Image(value=data, format=mime.split("/")[1], layout=fill)
        opener = _classed(
            widgets.Button(description=_("open"), tooltip=result.request.prompt, layout=widgets.Layout(height="auto")),
            "flux-open",
        )
        badge = '<span class="flux-badge">' + html.escape(_("replayed")) + "</span> " if result.replayed else ""
        seed = html.escape(seed_text(result.seed))
        # two lines, the seed first: a 10-digit seed after the badge and the cost was cut off by the ellipsis
        caption = _classed(
            widgets.HTML(
                f"<div>{seed}</div><div>{badge}{html.escape(cost_text(result))}</div>",
                tooltip=f"{result.width}×{result.height}",
            ),
            "flux-caption",
        )
        thumb = _classed(widgets.VBox([image, caption, opener]), "flux-thumb")
        if result.replayed:
            thumb.add_class("flux-replayed")
        opener.on_click(lambda _: self.show(result, thumb))
        with self._lock:
            self._results.insert(0, result)
            self.gallery.children = (thumb, *self.gallery.children)
        self._write_record()

    def show(self, result: ImageResult, thumb: widgets.Widget | None = None) -> None:
        """The large view of one result: preview, metadata, credits and a link to the full-resolution file."""
        for other in self.gallery.children:
            other.remove_class("flux-selected")
        if thumb is not None:
            thumb.add_class("flux-selected")
        self.detail_view.value = result_bundle([result], DETAIL_PX)["text/html"]
        self.detail.layout.display = ""
        self.cell_code.layout.display = "none"
        self._shown = result

    def _offer_cell(self) -> None:
        """Copy as %%flux cell: the code that redoes the shown result, in a box to copy into a new cell."""
        if self._shown is not None:
            self.cell_code.value = flux_cell(self._shown)
            self.cell_code.layout.display = ""

    def _hide_detail(self) -> None:
        self.detail.layout.display = "none"
        self._shown = None
        for other in self.gallery.children:
            other.remove_class("flux-selected")

    @property
    def results(self) -> list[ImageResult]:
        """This panel's finished images, newest first."""
        with self._lock:
            return list(self._results)

    @property
    def running(self) -> int:
        """How many of this panel's images are still queued or running."""
        with self._lock:
            return len(self._jobs)

    # --- errors -----------------------------------------------------------------------------------
    def _show_error(self, exc: BaseException) -> None:
        with self._lock:
            text = _banner_text(exc)
            if text not in self._errors:
                self._errors.append(text)
            items = "".join(f"<div>{html.escape(t)}</div>" for t in self._errors)
        self.banner.value = f'<div class="flux-banner-box" role="alert">{items}</div>'
        self.banner.layout.display = ""
        self.dismiss.layout.display = ""

    def _clear_errors(self) -> None:
        with self._lock:
            self._errors.clear()
        self.banner.value = ""
        self.banner.layout.display = "none"
        self.dismiss.layout.display = "none"

    @property
    def errors(self) -> list[str]:
        """The banner's messages, one line each."""
        with self._lock:
            return list(self._errors)


def panel(client: ClientSource = None) -> widgets.Widget:
    """The panel's widget: `doitong_nb.panel()` in a notebook, or `%flux_panel`; shown, its results follow it as
    an ordinary output that the notebook saves.

    `client` is a Flux client, or a function returning the current one (as `lambda: magics.client`);
    by default the loaded extension's client, so panel and magics share store, replay, journal and limits.
    """
    return FluxPanel(client).widget
