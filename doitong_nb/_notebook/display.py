"""Previews and the HTML / plain-text rendering of results, plus a live progress line.

The notebook keeps only a small preview; the full-resolution file stays on disk behind a link. Previews
are byte-deterministic (no metadata, fixed encoder settings) so re-running a cell does not churn the
notebook's diff, and everything rendered here is escaped: prompts are user text and ids come from a server.

Each image is stored once per output: one HTML card with the preview inlined, and a text/plain line beside it
(no image/jpeg copy). Why this shape rather than an image/jpeg output beside an image-less HTML card: a result
is shown through one bundle in most places (`ImageResult._repr_mimebundle_`, a progress line or background card
that becomes its result in place by display id, `gallery()`), and JupyterLab and Notebook 7 render only the
richest type of a bundle, so an image-less HTML card would hide the picture there. The HTML card is what Lab,
Notebook 7, nbconvert's HTML export and GitHub's notebook view show; nbconvert's Markdown export copies the HTML
with its inline image and writes no image file (the old image/jpeg copy made files the Markdown never linked);
LaTeX/PDF exports show the text line. `preview_px = 0` (`--preview none`) makes a link-only card with no image
bytes at all, for notebooks kept in git.
"""

from __future__ import annotations

import base64
import contextvars
import html
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from doitong_nb import _contract as contract
from doitong_nb._core.errors import DoitongError
from doitong_nb._core.i18n import N_, _, ngettext
from doitong_nb._core.result import credits_text, parse_time
from doitong_nb._engine.engine import WAITING_FOR_RATE, WAITING_FOR_SLOT
from doitong_nb._notebook.previews import fit, preview_of

if TYPE_CHECKING:
    from doitong_nb._core.result import ImageResult


# --- text ----------------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    """'12.3 s', '2 min 05 s' ('12.3초', '2분 05초')."""
    if value < 60:
        return _("{seconds:.1f} s").format(seconds=value)
    minutes, seconds = divmod(round(value), 60)
    return _("{minutes} min {seconds:02d} s").format(minutes=minutes, seconds=seconds)


def _short_id(job_id: str) -> str:
    return job_id if len(job_id) <= 16 else job_id[:12] + "…"


def _date(value: str | None) -> str:
    parsed = parse_time(value)
    return parsed.date().isoformat() if parsed else (value or _("an earlier run"))


def cost_text(result: ImageResult) -> str:
    """What the result cost in this session: a job picked up from the journal was paid when it was submitted."""
    if result.resumed:
        return _("picked up, already paid")
    return credits_text(0 if result.replayed else result.credits)


def _new_one_hint(result: ImageResult) -> str:
    """How to get another image instead of this replay: a seeded request makes the same pixels again."""
    if result.request.seed is None:
        return _("re-run with --refresh for a new one")
    return _("change --seed for a new one")


def _account_figures(session_credits: int | None, balance: int | None, footer: bool = False) -> list[str]:
    """A card's "session 60, balance 940"; a grid's footer, far from any card's cost, says what the figure is."""
    figures = []
    if session_credits is not None:
        if footer:
            figures.append(_("session total {credits}").format(credits=credits_text(session_credits)))
        else:
            figures.append(_("session {credits}").format(credits=session_credits))
    if balance is not None:
        figures.append(_("balance {credits}").format(credits=balance))
    return figures


def seed_text(seed: int | None) -> str:
    """'seed 7' ('시드 7'), or 'random seed' when none was asked for."""
    return _("random seed") if seed is None else _("seed {seed}").format(seed=seed)


# The words the engine and the faces report a job's progress by: shown in the user's language, an unknown status
# (a service's own word) as the service spelled it.
_PROGRESS = {
    "starting": N_("starting"),
    contract.STATUS_QUEUED: N_("queued"),
    contract.STATUS_PROCESSING: N_("processing"),
    "downloading": N_("downloading"),
    contract.STATUS_COMPLETED: N_("completed"),
    contract.STATUS_FAILED: N_("failed"),
    "stopped": N_("stopped"),
    "stopped waiting": N_("stopped waiting"),
    WAITING_FOR_RATE: N_("waiting for the plan's rate limit"),
    WAITING_FOR_SLOT: N_("waiting for a free job slot"),
}
_STATUS_READS = re.compile(r"(\d+) status reads")
_RETRYING = re.compile(r"retrying \((\d+)/(\d+)\)")


def status_text(status: str) -> str:
    """A job's status or what it waits for, as the user reads it: 'processing' is '처리 중' in Korean."""
    if status in _PROGRESS:
        return _(_PROGRESS[status])
    if match := _STATUS_READS.fullmatch(status):
        reads = int(match[1])
        return ngettext("{n} status read", "{n} status reads", reads).format(n=reads)
    if match := _RETRYING.fullmatch(status):
        return _("retrying ({attempt}/{attempts})").format(attempt=match[1], attempts=match[2])
    return status


def _no_preview(exc: OSError) -> str:
    """A card's or thumbnail's stand-in for an image file that could not be read (its provenance still shown)."""
    text = _("no preview: {error}").format(error=type(exc).__name__)
    return f'<div style="padding:24px;text-align:center;{_MUTED}">{html.escape(text)}</div>'


def _link(path: Path) -> tuple[str, str]:
    """(href, label): relative to the working directory when under it, as Jupyter serves such links."""
    absolute = os.path.abspath(path)
    try:
        relative = os.path.relpath(absolute, os.getcwd())
    except ValueError:  # another drive on Windows
        relative = os.pardir
    if relative.startswith(os.pardir):
        return Path(absolute).as_uri(), absolute
    posix = Path(relative).as_posix()
    return quote(posix), posix


def _made_in(result: ImageResult) -> str | None:
    """How long the job took; a replay says it was the original job's time, not this cell's."""
    if result.duration is None:
        return None
    if result.replayed:
        return _("made in {duration} originally").format(duration=_seconds(result.duration))
    return _("made in {duration}").format(duration=_seconds(result.duration))


def result_text(result: ImageResult, account: bool = True) -> str:
    """One line for terminals and text exports; a grid leaves the account figures to its last line."""
    parts = [f"<ImageResult {_short_id(result.job_id)} {result.width}x{result.height}"]
    if result.seed is not None:
        parts.append(f"seed={result.seed}")
    parts.append(result.version)
    if (made := _made_in(result)) is not None:
        parts.append(made)
    if result.replayed:
        replayed = _("replayed from {date}, {credits} ({hint})")
        parts.append(
            replayed.format(date=_date(result.created_at), credits=credits_text(0), hint=_new_one_hint(result))
        )
    else:
        parts.append(cost_text(result))
    if account and (figures := _account_figures(result.session_credits, result.balance)):
        parts.append(f"({', '.join(figures)})")
    if result.metadata.get("sandbox"):
        parts.append("[" + _("sandbox") + "]")
    return " ".join(parts) + f" -> {_link(result.path)[1]}>"


def error_text(exc: BaseException) -> str:
    """One line to print instead of a traceback: our errors already say what to do next."""
    text = " ".join(str(exc).split())
    if isinstance(exc, DoitongError):
        return error_prefix() + text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def error_prefix() -> str:
    """The words before our error's own: 'Flux error: ' ('Flux 오류: ')."""
    return _("Flux error: ")


# --- HTML ----------------------------------------------------------------------------------------

_FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"
_MONO = "font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace"
# text-align: JupyterLab's and Notebook 7's rendered-HTML styles right-align table cells, and a grid's cards sit in
# a table's cells (_core/grid.py): the card says left itself, so its text does not inherit that.
_CARD = (
    "margin:0;border:1px solid rgba(127,127,127,.3);border-radius:10px;overflow:hidden;"
    "background:rgba(127,127,127,.06);color:inherit;text-align:left"
)
_BADGE = "display:inline-block;padding:1px 7px;border-radius:999px;font-size:11px;font-weight:600;"
_BADGES = "display:flex;flex-wrap:wrap;align-items:center;gap:4px 8px;margin-bottom:4px"
_REPLAYED = _BADGE + "background:rgba(46,160,67,.16);border:1px solid rgba(46,160,67,.55)"
_SANDBOX = _BADGE + "background:rgba(210,153,34,.16);border:1px solid rgba(210,153,34,.6)"
_MUTED = "opacity:.72"
_SINGLE_BOX = 640  # px: a lone card fits its image in this square
_GRID_MIN, _GRID_MAX = 220, 300  # px: grid columns are at least MIN wide; a few images spread to about MAX
_GRID_PREVIEW_PX = 384  # a grid's previews: its columns' width with room for a 1.3x screen, ~50 KB each
_TALLEST_BOX = 4 / 3  # grid image boxes are at most this tall for their width; taller images are letterboxed


def _data_img(data: bytes, mime: str, width: int, height: int, alt: str, style: str) -> str:
    """A preview inlined as a data URI (`alt` already escaped): result cards and history thumbnails alike."""
    return (
        f'<img src="data:{mime};base64,{base64.b64encode(data).decode()}" alt="{alt}" width="{width}" '
        f'height="{height}" style="{style}">'
    )


def _full_resolution() -> str:
    return _("open full resolution")


def _no_charge() -> str:
    return _("identical request found in the store; nothing was charged")


def _sandbox_badge(title: str) -> str:
    """The "sandbox" badge, its tooltip saying what made the image or holds the account."""
    return f'<span style="{_SANDBOX}" title="{html.escape(title)}">' + html.escape(_("sandbox")) + "</span>"


def _card(result: ImageResult, preview_px: int, image_style: str, clamp_lines: int, account: bool) -> str:
    """One result's card; preview_px 0 leaves the image out (a link-only card: no image bytes in the notebook)."""
    esc = html.escape
    prompt = esc(result.request.prompt)
    href, label = _link(result.path)
    if not preview_px:
        image = (
            f'<div style="padding:10px 11px 0;{_MUTED};font-size:12px">'
            + esc(_("image not inlined: open it below"))
            + " ↘</div>"
        )
    else:
        try:
            data, mime, (w, h) = preview_of(result.path, preview_px)
            style = f"display:block;width:100%;height:auto;margin:0;{image_style}"
            image = _data_img(data, mime, w, h, prompt, style)
        except OSError as exc:  # missing or unreadable file: still show the provenance
            image = _no_preview(exc)
    badges = []
    if result.replayed:
        badges += [
            f'<span style="{_REPLAYED}" title="{esc(_no_charge())}">'
            + esc(_("replayed"))
            + f" · {esc(_date(result.created_at))} · {esc(credits_text(0))}</span>",
            f'<span style="{_MUTED};font-size:11px">{esc(_new_one_hint(result))}</span>',
        ]
    if result.metadata.get("sandbox"):
        badges.append(_sandbox_badge(_("generated by the local sandbox, not the real service")))
    badge_row = f'<div style="{_BADGES}">{"".join(badges)}</div>' if badges else ""
    facts = [
        f'<code style="{_MONO};font-size:11px;background:none;padding:0">{esc(result.job_id)}</code>',
        f"{result.width}×{result.height}",
    ]
    if result.seed is not None:
        facts.append(seed_text(result.seed))
    facts.append(esc(result.version))
    if (made := _made_in(result)) is not None:
        facts.append(made)
    money = [f"<b>{esc(cost_text(result))}</b>"]
    if account:
        money += _account_figures(result.session_credits, result.balance)
    clamp = f"display:-webkit-box;-webkit-line-clamp:{clamp_lines};-webkit-box-orient:vertical;overflow:hidden"
    return (
        f'<figure style="{_CARD}"><a href="{esc(href)}" target="_blank" title="{esc(_full_resolution())}">'
        f'{image}</a><figcaption style="padding:8px 11px 10px;font-size:12px;line-height:1.5">'
        f"{badge_row}"
        f'<div style="font-size:13px;margin-bottom:3px;{clamp}" title="{prompt}">{prompt}</div>'
        f'<div style="{_MUTED}">{" · ".join(facts)}</div>'
        f'<div style="{_MUTED}">{" · ".join(money)}</div>'
        f'<a href="{esc(href)}" target="_blank" style="color:inherit;{_MUTED};{_MONO};font-size:11px;'
        f'word-break:break-all">{esc(label)} ↗</a></figcaption></figure>'
    )


def result_bundle(
    results: list[ImageResult],
    preview_px: int = 1024,
    *,
    session_credits: int | None = None,
    balance: int | None = None,
) -> dict[str, str]:
    """text/plain and text/html for one result (a card) or several (a responsive grid of cards).

    A lone card shows its result's account figures. A grid's cards show what each one cost, and the
    session total and balance given here come once, below the grid: cards finish in any order, so
    figures taken as each one finished would read out of order.
    """
    single = len(results) == 1
    lines = [result_text(r, account=single) for r in results] or ["<" + _("no images") + ">"]
    footer = [] if single else _account_figures(session_credits, balance, footer=True)
    if footer:
        lines.append(", ".join(footer))
    if single:
        width = fit(results[0].width, results[0].height, _SINGLE_BOX)[0]
        grid, image_style, clamp = f"grid-template-columns:minmax(0,{max(width, 320)}px)", "", 4
    else:
        # One box shape for every card (the tallest image's, within reason) so captions line up.
        tallest = min(_TALLEST_BOX, max((r.height / r.width for r in results), default=1.0))
        grid = (
            f"grid-template-columns:repeat(auto-fill,minmax({_GRID_MIN}px,1fr));max-width:{len(results) * _GRID_MAX}px"
        )
        image_style = f"aspect-ratio:{1 / tallest:.4f};object-fit:contain;background:rgba(127,127,127,.1)"
        clamp = 3
        preview_px = min(preview_px, _GRID_PREVIEW_PX)
    cards = "".join(_card(r, preview_px, image_style, clamp, single) for r in results)
    page = f'<div style="display:grid;{grid};gap:12px;{_FONT};color:inherit">{cards}</div>'
    if footer:
        page += f'<div style="{_FONT};font-size:12px;margin-top:6px;{_MUTED}">{" · ".join(footer)}</div>'
    return {"text/plain": "\n".join(lines), "text/html": page}


def result_display(
    results: list[ImageResult],
    preview_px: int = 1024,
    *,
    session_credits: int | None = None,
    balance: int | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """(data, metadata) for IPython's display: result_bundle's card and text line, each image in it once (the
    module's docstring says why this shape); no metadata."""
    return result_bundle(results, preview_px, session_credits=session_credits, balance=balance), {}


# --- progress --------------------------------------------------------------------------------------


def _frontend() -> str | None:
    """'kernel' (Jupyter, VS Code...), 'terminal' (an interactive tty) or None (tests, pipes)."""
    try:
        from IPython import get_ipython
    except ImportError:
        ip = None
    else:
        ip = get_ipython()
    if ip is not None and ("IPKernelApp" in ip.config or type(ip).__name__ == "ZMQInteractiveShell"):
        return "kernel"
    isatty = getattr(sys.stderr, "isatty", None)
    return "terminal" if isatty is not None and isatty() else None


class ProgressLine:
    """A status line updated in place while a job runs, its clock ticking between status reports.

    Repaints are throttled to keep notebooks small; a light thread repaints the elapsed time every `tick`
    seconds (the engine reports only around its requests, which may be seconds apart).
    """

    min_interval = 0.25  # seconds between repaints, unless the status itself changes
    tick = 0.5  # seconds between repaints of the clock alone

    def __init__(self, label: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self._clock = clock
        self._started = clock()
        self._mode = _frontend()
        self._handle: Any = None
        self._last_paint = -math.inf
        self._status: str | None = None
        self._detail = ""
        self._width = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._ticker: threading.Thread | None = None

    def _line(self) -> str:
        elapsed = _seconds(self._clock() - self._started)
        status = status_text(self._status) if self._status else None
        detail = status_text(self._detail) if self._detail else None
        return " · ".join(p for p in (self.label, status, elapsed, detail) if p)

    def update(self, status: str, detail: str = "") -> None:
        """Show the job's status; repaints closer than min_interval are dropped (the ticker shows them)."""
        with self._lock:
            if self._closed.is_set():
                return
            changed = status != self._status
            self._status, self._detail = status, detail
            if changed or self._clock() - self._last_paint >= self.min_interval:
                self._repaint()
        if self._mode is not None and self._ticker is None:
            # a copy of the context: ipykernel keeps the cell's parent header in a context variable
            run = contextvars.copy_context().run
            self._ticker = threading.Thread(target=run, args=(self._tick,), name="flux-progress", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._closed.wait(self.tick):
            with self._lock:
                if not self._closed.is_set():
                    self._repaint()

    def _repaint(self) -> None:
        """Paint the current status with the current elapsed time; the caller holds the lock."""
        self._last_paint = self._clock()
        text = self._line()
        if self._mode == "kernel":
            from IPython.display import display

            if self._handle is None:  # becomes the cell's result: see close()
                self._handle = display(_BLANK, raw=True, display_id=True)
            span = f'<span style="{_MONO};font-size:12px;opacity:.75">⏳ {html.escape(text)}</span>'
            self._handle.update({"text/plain": text, "text/html": span}, raw=True)
        elif self._mode == "terminal":
            sys.stderr.write("\r" + text.ljust(self._width))
            sys.stderr.flush()
            self._width = len(text)

    def close(self, final: Any = None) -> None:
        """Stop the clock. In a notebook the line becomes `final` (the cell's cards) in place, or, with nothing to
        show, its last status; so no empty output is left behind. Tools that record only first displays (nbval)
        are given the display updates by notebooks/conftest.py, as nbclient and JupyterLab apply them."""
        with self._lock:
            if self._closed.is_set():  # stopped before: only the result is left to show
                if final is not None and self._handle is not None:
                    self._handle.update(final)
                    return
                if final is None:
                    return
            self._closed.set()
            if self._mode == "kernel" and self._handle is not None:
                if final is not None:
                    self._handle.update(final)
                else:
                    text = " · ".join(p for p in (self.label, status_text(self._status or "stopped")) if p)
                    self._handle.update({"text/plain": text}, raw=True)
                final = None
            elif self._mode == "terminal" and self._width:
                sys.stderr.write("\r" + " " * self._width + "\r")
                sys.stderr.flush()
            self._width = 0
        if self._ticker is not None:
            self._ticker.join()
        if final is not None:  # never painted, or not in a notebook: shown below
            from IPython.display import display

            display(final)

    def clear(self) -> None:
        """Stop the clock and leave nothing behind: a failed or interrupted cell's one line then stands alone."""
        self.close()
        if self._handle is not None:
            self._handle.update(_BLANK, raw=True)

    def replace_with(self, obj: Any) -> None:
        """Turn the line into obj (e.g. the ImageResult's card): in place in a notebook, else right below."""
        self.close(obj)


_BLANK = {"text/plain": ""}


# --- account, history, dry run ---------------------------------------------------------------------


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(
        f'<tr><th style="text-align:left;padding:2px 12px 2px 0;{_MUTED}">{html.escape(k)}</th>'
        f'<td style="text-align:left;padding:2px 0">{html.escape(v)}</td></tr>'
        for k, v in rows
    )
    return f'<table style="{_FONT};font-size:13px;border-collapse:collapse">{cells}</table>'


class AccountView:
    """`%flux_account`: where the account lives, plan, balance, the plan's limits and this session's spend.

    The host comes first and the bundled sandbox says so: its account reads like a real one otherwise.
    """

    def __init__(
        self,
        account: Any,
        plan: Any,
        session_credits: int,
        base_url: str,
        sandbox: bool,
        by_service: dict[str, int] | None = None,
    ) -> None:
        """`by_service`: the session's credits by service, when a login or logout changed it (said if several)."""
        host = urlsplit(base_url).netloc or base_url
        self.sandbox = sandbox
        service = _("{host} (sandbox: no real credits)").format(host=host) if sandbox else host
        self.rows = [(_("service"), service)]
        self.rows += [(_("plan"), account.plan), (_("balance"), credits_text(account.credits))]
        if plan is not None:
            daily = (
                _("unlimited")
                if plan.daily_limit is None
                else ngettext("{n} job", "{n} jobs", plan.daily_limit).format(n=f"{plan.daily_limit:,}")
            )
            self.rows += [
                (_("requests per minute"), str(plan.requests_per_minute)),
                (_("concurrent jobs"), str(plan.concurrent_jobs)),
                (_("daily limit"), daily),
            ]
        spent = credits_text(session_credits)
        if by_service and len(by_service) > 1:
            at = _("{credits} at {service}")
            spent += (
                " (" + ", ".join(at.format(credits=credits_text(n), service=w) for w, n in by_service.items()) + ")"
            )
        self.rows.append((_("spent this session"), spent))

    def __repr__(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.rows)

    def _repr_html_(self) -> str:
        badge = (
            f'<div style="{_FONT};margin-bottom:4px">'
            + _sandbox_badge(_("the bundled local sandbox, not the real service"))
            + "</div>"
            if self.sandbox
            else ""
        )
        return badge + _table(self.rows)


def history_table(results: list[ImageResult]) -> Any:
    """Stored results, newest job first, as a pandas DataFrame when pandas is installed, else a plain table.

    Ordered by the service's creation time: submissions happen in input order even when jobs finish in
    another, so a re-run shows the same table.
    """
    results = sorted(
        results, key=lambda r: parse_time(r.created_at) or datetime.min.replace(tzinfo=timezone.utc), reverse=True
    )
    rows = [
        {
            "job_id": r.job_id,
            "created": _date(r.created_at),
            "prompt": r.request.prompt,
            "size": f"{r.width}x{r.height}",
            "seed": r.seed,
            "credits": r.credit_cost,
            "file": _link(r.path)[1],
        }
        for r in results
    ]
    try:
        import pandas
    except ImportError:
        return _Rows(rows)
    return pandas.DataFrame(rows)


class _Rows:
    """A list of dicts shown as an HTML table (the no-pandas `%flux_history`)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        if not self.rows:
            return _("no stored results yet")
        return "\n".join("  ".join(str(v) for v in row.values()) for row in self.rows)

    def _repr_html_(self) -> str:
        if not self.rows:
            return "<em>" + html.escape(_("no stored results yet")) + "</em>"
        head = "".join(f'<th style="text-align:left;padding:2px 8px">{html.escape(k)}</th>' for k in self.rows[0])
        body = "".join(
            "<tr>"
            + "".join(f'<td style="text-align:left;padding:2px 8px">{html.escape(str(v))}</td>' for v in row.values())
            + "</tr>"
            for row in self.rows
        )
        return f'<table style="{_FONT};font-size:12px;border-collapse:collapse"><tr>{head}</tr>{body}</table>'


def dry_run_bundle(base_url: str, calls: list[Any], auth: dict[str, str], summary: str) -> dict[str, str]:
    """`--dry-run`: the `summary` of the quote, and the exact requests that would be sent (the key shown as a
    placeholder)."""
    import json

    blocks = []
    for call in calls:
        headers = {"Content-Type": "application/json", **auth}
        lines = [f"{call.method} {base_url}{call.path}", *(f"{k}: {v}" for k, v in headers.items())]
        if call.json is not None:
            lines += ["", json.dumps(call.json, indent=2, ensure_ascii=False)]
        blocks.append("\n".join(lines))
    text = "\n\n".join([summary, *blocks])
    pre = "".join(
        f'<pre style="{_MONO};font-size:12px;margin:6px 0;white-space:pre-wrap">{html.escape(b)}</pre>' for b in blocks
    )
    return {"text/plain": text, "text/html": f'<div style="{_FONT}"><strong>{html.escape(summary)}</strong>{pre}</div>'}


class Gallery:
    """Results shown as one grid of cards (what `%%flux -n` shows), for notebooks that make images in Python."""

    def __init__(self, results: list[ImageResult], preview_px: int = 1024) -> None:
        self.results, self.preview_px = list(results), preview_px

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return result_bundle(self.results, self.preview_px)


def gallery(results: list[ImageResult], preview_px: int = 1024) -> Gallery:
    """`display(gallery(results))`: the cards of several results in one grid, previews sized to it."""
    return Gallery(results, preview_px)


# --- history gallery -----------------------------------------------------------------------------------

_THUMB_PX = 192  # a gallery thumbnail's long side: ~8-15 KB each


class HistoryGallery:
    """`%flux_history`: stored results as thumbnails, newest first, each with its metadata and cost.

    HTML shows the gallery (each thumbnail stored once, inline); one text line per result stands in where HTML is
    not shown. `total` is how many matched before `--limit`.
    """

    def __init__(self, results: list[ImageResult], total: int, where: str = "") -> None:
        self.results = results
        self.total = total
        self.where = where

    def __len__(self) -> int:
        return len(self.results)

    def _heading(self) -> str:
        shown = len(self.results)
        heading = _("{n} stored result(s)").format(n=self.total)
        if self.where:
            heading = _("{n} stored result(s) matching {where}").format(n=self.total, where=self.where)
        if shown < self.total:
            heading += " " + _("(newest {shown} of {total}; --limit N shows more)").format(
                shown=shown, total=self.total
            )
        return heading

    def _line(self, r: ImageResult) -> str:
        seed = f" seed={r.seed}" if r.seed is not None else ""
        prompt = r.request.prompt if len(r.request.prompt) <= 60 else r.request.prompt[:59] + "…"
        return (
            f"{r.job_id}  {_date(r.created_at)}  {r.width}x{r.height}{seed}  {credits_text(r.credit_cost)}  {prompt!r}"
        )

    def __repr__(self) -> str:
        if not self.results:
            if self.where:
                return _("no stored results matching {where}").format(where=self.where)
            return _("no stored results yet")
        return "\n".join([self._heading(), *(self._line(r) for r in self.results)])

    def _thumb(self, r: ImageResult) -> str:
        esc = html.escape
        href = _link(r.path)[0]
        try:
            data, mime, (w, h) = preview_of(r.path, _THUMB_PX)
            image = _data_img(
                data,
                mime,
                w,
                h,
                esc(r.request.prompt),
                "display:block;width:100%;aspect-ratio:1;object-fit:contain;background:rgba(127,127,127,.1);margin:0",
            )
        except OSError as exc:
            image = _no_preview(exc)
        facts = [f"{r.width}×{r.height}"]
        if r.seed is not None:
            facts.append(esc(seed_text(r.seed)))
        facts.append(esc(credits_text(r.credit_cost)))
        clamp = "display:-webkit-box;-webkit-line-clamp:2;-webkit-box-orient:vertical;overflow:hidden"
        return (
            f'<figure style="{_CARD}"><a href="{esc(href)}" target="_blank" title="{esc(_full_resolution())}">'
            f'{image}</a><figcaption style="padding:5px 8px 7px;font-size:11px;line-height:1.45">'
            f'<div style="font-size:12px;{clamp}" title="{esc(r.request.prompt)}">{esc(r.request.prompt)}</div>'
            f'<div style="{_MUTED}">{esc(_date(r.created_at))} · {" · ".join(facts)}</div>'
            # the whole id, wrapped, selected by one click: `--rerun` needs all of it
            f'<code style="{_MUTED};{_MONO};font-size:10px;display:block;background:none;padding:0;'
            f'overflow-wrap:anywhere;user-select:all" title="%flux_history --rerun {esc(r.job_id)}">'
            f"{esc(r.job_id)}</code></figcaption></figure>"
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict[str, str], dict[str, Any]]:
        text = repr(self)
        if not self.results:
            return {"text/plain": text, "text/html": f"<em>{html.escape(text)}</em>"}, {}
        cards = "".join(self._thumb(r) for r in self.results)
        rerun = html.escape(_("{command} makes one again ({credits}: a replay)")).format(
            command="<code>%flux_history --rerun ID</code>", credits=html.escape(credits_text(0))
        )
        page = (
            f'<div style="{_FONT};font-size:12px;margin-bottom:6px;{_MUTED}">{html.escape(self._heading())} · '
            f"{rerun}</div>"
            f'<div style="display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px;'
            f'{_FONT};color:inherit">{cards}</div>'
        )
        return {"text/plain": text, "text/html": page}, {}


def filter_history(
    results: list[ImageResult], text: str = "", since: str | None = None, until: str | None = None
) -> list[ImageResult]:
    """Newest first; `text` in the prompt (any case); `since`/`until` as ISO dates (inclusive).

    Images of one request that differ only by seed (a `-n 3` cell, a seed sweep) stay together in seed order, the
    group where its newest image falls: they were made at once, so the order they happened to finish in is no
    order at all, and a re-run notebook shows the same history."""
    from datetime import date

    def day(value: str, option: str) -> date:
        try:
            return date.fromisoformat(value)
        except ValueError:
            from doitong_nb._core.errors import InvalidRequestError

            said = _("{option} {value}: write a date as YYYY-MM-DD").format(option=option, value=repr(value))
            raise InvalidRequestError(said, field=option) from None

    low, high = (day(since, "--since") if since else None), (day(until, "--until") if until else None)
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    kept = []
    for r in results:
        if text and text.lower() not in r.request.prompt.lower():
            continue
        created = parse_time(r.created_at)
        if (low or high) and created is None:
            continue
        if created is not None and ((low and created.date() < low) or (high and created.date() > high)):
            continue
        kept.append(r)
    newest = sorted(kept, key=lambda r: parse_time(r.created_at) or epoch, reverse=True)
    place: dict[str, int] = {}
    for r in newest:
        place.setdefault(r.request.with_seed(None).key(), len(place))
    return sorted(newest, key=lambda r: (place[r.request.with_seed(None).key()], r.seed is None, r.seed or 0))
