"""%%flux, %flux, %flux_account, %flux_history: the notebook face of the engine.

Options are parsed by IPython's magic_arguments (so `%%flux?` shows them); each setting comes from the cell's
option > `%config Flux.*` (traitlets, unset by default) > the login > the settings file > the environment > the
default, resolved by _runtime/settings.py. Errors print one line that says what to change; a traceback is for
bugs, not for a wrong option.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, needs_local_scope
from IPython.core.magic_arguments import MagicHelpFormatter, argument, magic_arguments, parse_argstring
from traitlets import Bool, Enum, Float, Int, TraitError, Unicode, validate

from doitong_nb import _contract as contract
from doitong_nb._core import i18n
from doitong_nb._core.arguments import argparse_in_language
from doitong_nb._core.env import ENV_API_KEY
from doitong_nb._core.errors import BudgetExceededError, DoitongError, InvalidRequestError
from doitong_nb._core.i18n import N_, _
from doitong_nb._core.settings import CONFIGURABLE, Settings, checked, help_for
from doitong_nb._notebook import session as _session
from doitong_nb._runtime.settings import fingerprint, resolve, value_of


def _options(usage_name: str) -> Callable[[Any], Any]:
    """The options shared by %%flux and %flux (one list, so the two never drift apart).

    `usage_name` heads the usage line after its "%": "%flux" for the cell magic, "flux PROMPT" for the line
    magic, whose prompt comes before the options and is split off before they are parsed.
    """
    return lambda func: _with_options(func, usage_name)


def _with_options(func: Any, usage_name: str) -> Any:
    decorators = [
        argument("--size", help=N_("WIDTHxHEIGHT, each 256..4096 and a multiple of 16 (default: Flux.size)")),
        argument("--aspect", help=N_("aspect ratio such as 16:9, instead of --size (about one megapixel)")),
        argument("--seed", type=int, help=N_("seed for a reproducible image; with -n, seeds N, N+1, ...")),
        argument("--raw", action="store_true", help=N_("the natural, less processed RAW look")),
        argument("--version", choices=contract.VERSIONS, help=N_("model version")),
        argument("--quality", choices=contract.QUALITIES, help=N_("quality setting")),
        argument("--format", dest="output_format", choices=contract.OUTPUT_FORMATS, help=N_("output file format")),
        argument("-n", "--count", type=int, default=1, help=N_("number of images (shown as a grid)")),
        argument("--transport", choices=contract.TRANSPORTS, help=N_("wire protocol (default: Flux.transport)")),
        argument("--webhook", help=N_("URL the service notifies on completion")),
        argument("--refresh", action="store_true", help=N_("generate anew instead of replaying a stored result")),
        argument("--dry-run", action="store_true", help=N_("show the exact request and its cost; send nothing")),
        argument("-o", "--out", help=N_("bind the result (a list with -n or --each) to this variable")),
        argument("--each", metavar="NAME", help=N_("one image per item of the list NAME; write {item} in the prompt")),
        argument("--timeout", type=float, help=N_("seconds to wait before handing back the job id")),
        argument(
            "--preview",
            type=_preview_px,
            metavar="PX",
            help=N_(
                "long side of this cell's inline previews; none (or 0): a link-only card (default: Flux.preview_px)"
            ),
        ),
        argument(
            "--grid",
            action="append",
            metavar="NAME=V1,V2",
            help=N_('a sweep axis, e.g. --grid "seed=1,2,3" --grid "aspect=1:1,16:9" (rows, then columns)'),
        ),
        argument(
            "--background",
            action="store_true",
            help=N_("return at once with a live card that becomes the result; -o binds a handle (Flux.background)"),
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return magic_arguments(usage_name)(func)


# argparse's own headings, shown in the user's language with the options under them
_HEADINGS = {"options": N_("options"), "positional arguments": N_("positional arguments")}


class _HelpFormatter(MagicHelpFormatter):
    """A magic's help in the language of the moment it is shown: each option's help is marked with N_() where it
    is declared and translated here, with argparse's headings."""

    def _get_help_string(self, action: Any) -> str | None:
        return _(action.help) if action.help else action.help

    def start_section(self, heading: str | None) -> None:
        super().start_section(_(_HEADINGS[heading]) if heading in _HEADINGS else heading)


def _help_in_language() -> None:
    """`%%flux?` shows a magic's docstring, which magic_arguments made its help once, in English: made again in
    the language now chosen."""
    from doitong_nb._notebook import login

    for magic in (Flux.flux, Flux.flux_line, Flux.flux_history):
        magic.parser.formatter_class = _HelpFormatter
        magic.__doc__ = magic.parser.format_help()
    login.help_in_language()


def _preview_px(text: str) -> int:
    """`--preview 256` or `--preview none` (0): checked by the settings table, so the words are the same."""
    import argparse

    try:
        return checked("preview_px", "0" if text.strip().lower() == "none" else text)
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _split_line(line: str) -> tuple[str, str]:
    """'%flux A cat's nap --seed 3' -> ('A cat's nap', '--seed 3'): the prompt may hold any quote."""
    words = line.split(" ")
    for i, word in enumerate(words):
        if word.startswith("--") or word in ("-n", "-o") or (word.startswith("-n") and word[2:].isdigit()):
            return " ".join(words[:i]).strip(), " ".join(words[i:])
    return line.strip(), ""


@magics_class
class Flux(Magics):
    """Named Flux so that `%config Flux.size = "2048x2048"` reads as the user thinks of it. Every trait is unset
    (None) until set, so that the environment and the defaults (_core/settings.py) show through."""

    size = Unicode(None, allow_none=True, help=help_for("size")).tag(config=True)
    output_dir = Unicode(None, allow_none=True, help=help_for("output_dir")).tag(config=True)
    on_missing = Enum(["error", "regenerate"], None, allow_none=True, help=help_for("on_missing")).tag(config=True)
    preview_px = Int(None, allow_none=True, help=help_for("preview_px")).tag(config=True)
    transport = Enum(list(contract.TRANSPORTS), None, allow_none=True, help=help_for("transport")).tag(config=True)
    replay = Bool(None, allow_none=True, help=help_for("replay")).tag(config=True)
    max_credits = Int(None, allow_none=True, help=help_for("max_credits")).tag(config=True)
    timeout = Float(None, allow_none=True, help=help_for("timeout")).tag(config=True)
    status_query = Unicode(None, allow_none=True, help=help_for("status_query")).tag(config=True)
    statuses = Unicode(None, allow_none=True, help=help_for("statuses")).tag(config=True)
    plan = Unicode(None, allow_none=True, help=help_for("plan")).tag(config=True)
    background = Bool(None, allow_none=True, help=help_for("background")).tag(config=True)
    language = Unicode(None, allow_none=True, help=help_for("language")).tag(config=True)

    @classmethod
    def class_get_trait_help(cls, trait: Any, inst: Any = None, helptext: str | None = None) -> str:
        """`%config Flux` shows each option's help in the language of that moment (a trait keeps the English one)."""
        return super().class_get_trait_help(trait, inst, help_for(trait.name) if helptext is None else helptext)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._client: Any = None
        self._built: Settings | None = None  # the settings the client was built for
        self._settings: Settings | None = None
        self._sources: tuple[Any, ...] | None = None
        self._spent_before: dict[str, int] = {}  # where -> credits this kernel's earlier clients spent there
        self._language_sources: tuple[Any, ...] | None = None

    @validate(*CONFIGURABLE)
    def _check(self, proposal: Any) -> Any:
        """`%config Flux.x = value` is checked as it is set, in the same words as anywhere (_core/settings).

        IPython's %config only logs a refused value ("ERROR:root:") and goes on with the old one, so Run All would
        quietly use the default: in a shell a bad value is kept instead, said at once, and every magic fails on it.
        """
        name = proposal["trait"].name
        try:
            return checked(name, proposal["value"])
        except InvalidRequestError as exc:
            if self.shell is None:  # no notebook to fail later: refused at once
                raise TraitError(f"%config Flux.{name}: {exc}") from None
            said = _("%config Flux.{name}: {error}; every %flux cell fails until it is set right")
            print(said.format(name=name, error=exc), file=sys.stderr)
            return proposal["value"]

    # --- the shared client --------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """This kernel's settings now: `%config Flux.*` > login > environment > default, resolved again when one of
        them changed (a key or base URL set with `%env` while the kernel runs is seen at the next cell)."""
        configured = {name: getattr(self, name) for name in CONFIGURABLE}
        sources = (configured, fingerprint())
        if self._settings is None or sources != self._sources:
            try:
                self._settings, self._sources = resolve(configured), sources
            except InvalidRequestError as exc:  # a bad environment value: one line in every magic, no traceback
                raise UsageError(str(exc)) from None
            i18n.use(self._settings.language)
            _help_in_language()
        return self._settings

    def follow_language(self) -> None:
        """Before each cell: the language as `%config Flux.language` > `DOITONG_LANG` > the locale now say, when
        one of them changed since the last cell (so `Flux(language=...)` in Python holds until then). A bad value
        is left to the next magic to say."""
        sources = (self.language, fingerprint())
        if sources != self._language_sources:
            self._language_sources = sources
            with contextlib.suppress(InvalidRequestError):
                i18n.use(value_of("language", configured=self.language))
                _help_in_language()

    @property
    def client(self) -> Any:
        """One client per service: a change of key, address, wire format, folder or plan gives a new client at the
        next cell (said once, in one line); other settings (replay, budget, timeout...) reach the running one."""
        from doitong_nb._runtime.client import Flux as FluxClient

        settings = self.settings
        if self._client is None or self._built is None or settings.service() != self._built.service():
            previous = self._client
            self._client = FluxClient._of(settings)
            if previous is not None:
                if previous.settings.origin == self._client.settings.origin:  # the same account: keep its tally
                    self._client.carry_tally(previous)
                else:  # the kernel's spend goes on: what the previous service was paid is kept by its name
                    where = _where(previous.settings)
                    self._spent_before[where] = self._spent_before.get(where, 0) + previous.session_credits
                    said = _("doitong_nb: the service changed; images now come from {where}.")
                    print(said.format(where=_where(self._client.settings)))
                previous.close()
        elif settings is not self._built:
            self._client._adopt(settings)
        self._built = settings
        return self._client

    def spent(self) -> dict[str, int]:
        """What this kernel spent, by service (one entry unless `%flux_login`/`%flux_logout` changed it)."""
        client = self.client
        spent = dict(self._spent_before)
        where = _where(client.settings)
        spent[where] = spent.get(where, 0) + client.session_credits
        return spent

    def _quote(self, pairs: list[tuple[Any, int]], refresh: bool) -> Any:
        """The engine's quote for a cell, its budget weighed against what the whole kernel spent."""
        return self.client.quote(pairs, refresh=refresh, spent=sum(self.spent().values()))

    # --- magics ---------------------------------------------------------------------------------
    @_options("%flux")
    @needs_local_scope
    @cell_magic
    def flux(self, line: str, cell: str, local_ns: Any = None) -> None:
        """Generate images from the cell's text: `%%flux --size 2048x2048 --seed 7` then the prompt.

        The prompt expands `{expr}` and `$name` from the notebook (`$$` and `{{ }}` for literals).
        """
        args = _parse(self.flux, line)
        try:
            keep_item = {"item": "{item}"} if args.each else {}  # filled per item by _run
            prompt = _expand(cell, {**self.shell.user_ns, **(local_ns or {}), **keep_item})
        except DoitongError as exc:
            self._fail(exc)
        self._run(prompt, args, local_ns)

    @_options("flux PROMPT")
    @needs_local_scope
    @line_magic("flux")
    def flux_line(self, line: str, local_ns: Any = None) -> None:
        """Generate on one line: `%flux A lighthouse at dawn --seed 3`."""
        prompt, rest = _split_line(line)
        args = _parse(self.flux_line, rest)
        self._run(prompt, args, local_ns)

    @line_magic
    def flux_account(self, line: str = "") -> Any:
        """Plan, credit balance, the plan's limits and this session's spend."""
        from doitong_nb._notebook.display import AccountView

        try:
            account = self.client.account()
        except DoitongError as exc:
            self._fail(exc)
        settings, spent = self.client.settings, self.spent()
        plan = contract.PLANS.get(account.plan)
        return AccountView(account, plan, sum(spent.values()), settings.base_url, settings.sandbox, by_service=spent)

    @line_magic
    def flux_quote(self, line: str = "") -> None:
        """`%flux_quote [NOTEBOOK.ipynb]`: what Run All of this notebook (as last saved) or the one named would cost
        now, its %%flux and %flux cells priced by the engine with this kernel's variables; nothing is sent."""
        try:
            notebook = line.strip() or _this_notebook(self.shell.user_ns)
            print(notebook_quote(self.client, notebook, self.shell.user_ns, self.settings.size))
        except DoitongError as exc:
            raise UsageError(f"%flux_quote: {exc}") from None

    @line_magic
    def flux_panel(self, line: str = "") -> Any:
        """The ipywidgets panel, on the same engine (store, replay, journal, limits) as these magics."""
        from doitong_nb._notebook.panel import panel

        return panel(client=lambda: self.client)

    @magic_arguments("%flux_history")
    @argument("text", nargs="*", help=N_("show only results whose prompt contains this text"))
    @argument("--since", help=N_("created on or after this date, YYYY-MM-DD"))
    @argument("--until", help=N_("created on or before this date, YYYY-MM-DD"))
    @argument("--limit", type=int, default=24, help=N_("show at most this many, newest first (default 24)"))
    @argument("--df", action="store_true", help=N_("a table (a pandas DataFrame when pandas is installed)"))
    @argument("--rerun", metavar="ID", help=N_("make the stored request of job ID again: a replay at 0 credits"))
    @argument("--refresh", action="store_true", help=N_("with --rerun: generate anew (charged) instead of replaying"))
    @line_magic
    def flux_history(self, line: str = "") -> Any:
        """The stored results as a thumbnail gallery, newest first, each with its metadata and cost.

        `%flux_history fox --since 2026-11-01 --limit 8` filters; `--df` gives the table; `--rerun ID` re-runs
        a stored request (replayed at 0 credits unless `--refresh`).
        """
        from doitong_nb._notebook.display import HistoryGallery, filter_history, history_table

        args = _parse(self.flux_history, line)
        if args.rerun:
            return self._rerun(args.rerun, args.refresh)
        if args.limit < 1:
            raise UsageError(_("%flux_history: --limit must be 1 or more"))
        text = " ".join(args.text)
        try:
            results = filter_history(self.client.store.history(), text, args.since, args.until)
        except DoitongError as exc:
            raise UsageError(f"%flux_history: {exc}") from None
        if args.df:
            return history_table(results[: args.limit])
        where = " ".join(
            p
            for p in (
                repr(text) if text else "",
                _("since {date}").format(date=args.since) if args.since else "",
                _("until {date}").format(date=args.until) if args.until else "",
            )
            if p
        )
        return HistoryGallery(results[: args.limit], len(results), where)

    def _rerun(self, job_id: str, refresh: bool) -> None:
        """`%flux_history --rerun ID`: the stored request (and variant) of job ID, through the usual cell path."""
        from types import SimpleNamespace

        client = self.client
        stored = next((r for r in client.store.history() if r.job_id == job_id), None)
        if stored is None:
            said = _("%flux_history --rerun: no stored result {job_id!r}; `%flux_history` shows the ids")
            raise UsageError(said.format(job_id=job_id))
        request, origin = stored.request, client.settings.origin
        variant = next(
            (v for v in range(64) if (f := client.store.find(request.key(v), origin)) and f.job_id == job_id), 0
        )
        args = SimpleNamespace(refresh=refresh, timeout=None, transport=None, preview=None)
        try:
            client.admit(self._quote([(request, variant)], refresh))
            self._generate([(request, variant)], args, None)
        except DoitongError as exc:
            self._fail(exc)

    # --- the work -------------------------------------------------------------------------------
    def _run(self, prompt: str, args: Any, local_ns: Any) -> None:
        """One cell's images. A failure raises, so Run All, papermill and nbval stop at this cell; `-o NAME` is
        bound first (a list keeps each failure in its place), never silently left unset."""
        if args.grid:
            self._grid(prompt, args)
            return
        try:
            pairs = cell_pairs(prompt, args, {**self.shell.user_ns, **(local_ns or {})}, self.settings.size)
            timeout = checked("timeout", args.timeout)
            quote = self._quote(pairs, args.refresh)  # one verdict on the budget for the whole cell
            if args.dry_run:
                self._show_dry_run(pairs, quote, args.transport)
                return
            self.client.admit(quote)
            if args.background or self.settings.background:
                job = self._background(pairs, args)
                if args.out:  # bound at once: `.result()` waits, the repr shows the state
                    self.shell.user_ns[args.out] = job
                return
            many = bool(args.each) or len(pairs) > 1
            outcomes = self._batch(pairs, args, timeout) if many else self._generate(pairs, args, timeout)
        except DoitongError as exc:
            self._fail(exc)
        if args.out:
            self.shell.user_ns[args.out] = outcomes if many else outcomes[0]
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            said = _("{failed} of {total} images failed (each said above, in its place)")
            raise CellError(said.format(failed=len(failures), total=len(outcomes)))

    def _batch(self, pairs: list[tuple[Any, int]], args: Any, timeout: float | None) -> list[Any]:
        """`-n` and `--each`: the batch scheduler paces the items at the plan's limits (its job slots, its
        requests a minute); one progress line updates in place; failures print in place. An unseeded `-n`
        repeats one request: the batch makes its copies variants 0, 1, ..., the replay keys a cell would use."""
        from doitong_nb._notebook.display import ProgressLine, error_text

        label = f"--each {args.each}" if args.each else pairs[0][0].size
        line = ProgressLine(f"{label} × {len(pairs)}")
        line.update("starting")  # painted from the cell's thread: the line belongs to this cell

        def report(stats: Any) -> None:  # one line updated in place, not a bar an item
            failed = _(", {n} failed").format(n=stats.failed) if stats.failed else ""
            done = _("{done}/{total} done{failed}").format(done=stats.done, total=stats.total, failed=failed)
            line.update(done, _("{n} credits").format(n=stats.credits))

        outcomes = self._many(pairs, args, timeout, line, progress=report)
        for index, error in outcomes.errors.items():
            print(_("item {index}: {error}").format(index=index, error=error_text(error)), file=sys.stderr)
        if outcomes.images:
            line.replace_with(_Bundle(self._bundle(outcomes.images, args.preview)))  # the line becomes the grid
        else:
            line.clear()  # the errors above stand alone
        return list(outcomes)

    def _many(self, pairs: list[tuple[Any, int]], args: Any, timeout: float | None, line: Any, **hooks: Any) -> Any:
        """The cell's images through the batch scheduler, paced at the plan's job slots and requests a minute; an
        unseeded repeat becomes the next variant, as the cell quoted it. Ctrl-C says what goes on being paid."""
        try:
            return self.client.generate_many(
                [r for r, _ in pairs], refresh=args.refresh, transport=args.transport, timeout=timeout, **hooks
            )
        except KeyboardInterrupt:
            line.clear()
            raise Interrupted(self._interrupted(pairs)) from None
        except BaseException:
            line.clear()
            raise

    def _grid(self, prompt: str, args: Any) -> None:
        """`--grid`: one request per combination of the axes, cost told first, shown as a labelled matrix."""
        from doitong_nb._core import grid
        from doitong_nb._notebook.display import ProgressLine, error_text, status_text
        from doitong_nb._runtime.grid import cost_line

        try:
            if self.settings.background:
                raise InvalidRequestError(_(_GRID_ALONE), field="grid")
            axes, pairs = grid_pairs(prompt, args, self.settings.size)
            client = self.client
            quote = self._quote(pairs, args.refresh)
            if args.dry_run:
                print(cost_line(axes, quote.costs) + _("; --dry-run: nothing was sent"))
                return
            client.admit(quote)
            print(cost_line(axes, quote.costs))
        except DoitongError as exc:
            self._fail(exc)
            return
        timeout = checked("timeout", args.timeout)
        line = ProgressLine(_("grid × {n}").format(n=len(pairs)))
        line.update("starting")
        done: set[int] = set()

        def progress_for(index: int) -> Any:
            def report(status: str, elapsed: float, detail: str) -> None:
                if status in ("downloading", "completed"):
                    done.add(index)
                said = _("{done}/{total} done, {status}")
                line.update(said.format(done=len(done), total=len(pairs), status=status_text(status)), detail)

            return report

        outcomes = list(self._many(pairs, args, timeout, line, progress=False, item_progress=progress_for))
        view = grid.GridView(axes, outcomes, self.settings.preview_px if args.preview is None else args.preview)
        line.replace_with(view)
        failures = [o for o in outcomes if isinstance(o, DoitongError)]
        for failure in failures:
            print(error_text(failure), file=sys.stderr)
        if args.out:
            self.shell.user_ns[args.out] = view
        if failures:
            said = _("{failed} of {total} images failed (each said above)")
            raise CellError(said.format(failed=len(failures), total=len(outcomes)))

    def _background(self, pairs: list[tuple[Any, int]], args: Any) -> Any:
        """`--background`: start the flows on the client's loop thread and return a live card's handle at once."""
        from doitong_nb._notebook.background import BackgroundJob

        client = self.client
        timeout = checked("timeout", args.timeout)

        def start(index: int, progress: Any) -> Any:
            request, variant = pairs[index]
            flow = client.generation(
                request,
                variant=variant,
                refresh=args.refresh,
                progress=progress,
                transport=args.transport,
                timeout=timeout,
            )
            return client.start(flow)

        def unfinished() -> list[str]:
            return [job_id for r, v in pairs if (job_id := client.unfinished_job(r, v))]

        job = BackgroundJob(
            pairs,
            start,
            lambda results: _Bundle(self._bundle(results, args.preview)),
            predicted=client.predicted_seconds,
            unfinished=unfinished,
        )
        job.bound_as = args.out
        job.show()
        return job

    def _generate(self, pairs: list[tuple[Any, int]], args: Any, timeout: float | None) -> list[Any]:
        """One image, with a live progress line that becomes its card."""
        from doitong_nb._notebook.display import ProgressLine

        client = self.client
        ((request, variant),) = pairs
        line = ProgressLine(request.size)
        line.update("starting")  # painted from the cell's thread: the line belongs to this cell
        flow = client.generation(
            request,
            variant=variant,
            refresh=args.refresh,
            progress=lambda status, elapsed, detail: line.update(status, detail),
            transport=args.transport,
            timeout=timeout,
        )
        try:
            result = client.run(flow)
        except KeyboardInterrupt:
            line.clear()
            raise Interrupted(self._interrupted(pairs)) from None
        except BaseException:
            line.clear()  # the error stands alone, not under the last status
            raise
        line.replace_with(_Bundle(self._bundle([result], args.preview)))
        return [result]

    def _bundle(self, results: list[Any], preview: int | None = None) -> tuple[dict[str, str], dict[str, Any]]:
        """The cards of a cell, with the session total and balance as they are now; previews at the cell's
        `--preview` when given."""
        from doitong_nb._notebook.display import result_display

        client, spent = self.client, sum(self.spent().values())  # the kernel's, whichever services it used
        for result in results:  # a lone card shows them; a grid shows them once, below it
            result.session_credits, result.balance = spent, client.balance
        preview_px = self.settings.preview_px if preview is None else preview
        return result_display(results, preview_px, session_credits=spent, balance=client.balance)

    def _interrupted(self, pairs: list[tuple[Any, int]]) -> str:
        """What Ctrl-C left going on, in the one line the interrupted cell shows."""
        ids = [job_id for r, v in pairs if (job_id := self.client.unfinished_job(r, v))]
        service = _("the sandbox") if self.client.settings.sandbox else "Doitong"
        if len(ids) > 1:
            told = _(
                "Stopped waiting; jobs {ids} go on at {service} and are paid for. Re-run this cell to pick them up: "
                "they will not be charged again."
            )
            return told.format(ids=", ".join(ids), service=service)
        which = _("job {job_id}").format(job_id=ids[0]) if ids else _("any submitted job")
        told = _(
            "Stopped waiting; {which} goes on at {service} and is paid for. Re-run this cell to pick it up: "
            "it will not be charged again."
        )
        return told.format(which=which, service=service)

    def _show_dry_run(self, pairs: list[tuple[Any, int]], quote: Any, transport: str | None) -> None:
        """`--dry-run`: the engine's quote (new images and stored ones), and each distinct request that a new image
        would send, once (`-n 3` sends one body three times)."""
        from IPython.display import display

        from doitong_nb._notebook.display import dry_run_bundle
        from doitong_nb._tools.quote import Tally

        sent = [item.request for item in quote.items if item.cost]
        calls = []
        for call in self.client.submissions(sent, transport):
            if call not in calls:
                calls.append(call)
        auth = {name: f"<{ENV_API_KEY}>" for name in self.client.auth_header_names(transport)}
        summary = Tally().add(quote).dry_run()
        if len(calls) < len(sent):
            summary += _(" (the {n} requests are alike: shown once)").format(n=len(sent))
        display(_Bundle(dry_run_bundle(self.client.settings.base_url, calls, auth, summary)))

    def _fail(self, exc: DoitongError) -> NoReturn:
        """Raise the failure as one line: a UsageError when nothing was sent (a value to change), else CellError."""
        from doitong_nb._notebook.display import error_prefix, error_text

        if isinstance(exc, (InvalidRequestError, BudgetExceededError)):
            raise UsageError(error_text(exc).removeprefix(error_prefix())) from None
        raise CellError(error_text(exc)) from None

    # --- first contact: pending jobs, resume, doctor (issue 11) ----------------------------------------
    @line_magic
    def flux_jobs(self, line: str = "") -> Any:
        """Background cells running in this kernel, and paid jobs not delivered yet (kept in the journal):
        `%flux_resume ID` or `%flux_resume --all` fetches those; `%flux_jobs --cancel bgN` stops waiting for a
        background cell (its job stays resumable)."""
        from doitong_nb._notebook import background as background

        words = line.split()
        if len(words) == 2 and words[0] == "--cancel":
            job = background.find(words[1])
            if job is None:
                said = _("no background cell {name!r} in this kernel; `%flux_jobs` lists them")
                raise UsageError(said.format(name=words[1]))
            job.cancel()
            print(job.cancel_text())
        elif words:
            raise UsageError(_("usage: %flux_jobs  or  %flux_jobs --cancel bgN"))
        running = background.running()
        if running:
            said = _("{n} background cell(s) running in this kernel (%flux_jobs --cancel NAME stops waiting):")
            print(said.format(n=len(running)))
            for job in running:
                print(f"  {job.summary()}")
        waited_for = {job_id for job in running for job_id in job.job_ids()}  # running, so not pending
        sending = {self.client.unfinished_submission(r, v) for job in running for r, v in job.requests}  # no id yet
        jobs = [j for j in self.client.jobs() if j.job_id not in waited_for and j.idempotency_key not in sending]
        if not jobs:
            if running:
                print(_("No pending jobs: every paid job has been delivered or is running."))
            else:
                print(_("No pending jobs: every paid job has been delivered."))
            return None
        print(
            _("{n} pending job(s), paid for; %flux_resume ID or %flux_resume --all fetches them:").format(n=len(jobs))
        )
        for job in jobs:
            print(f"  {job}")
        return None

    @line_magic
    def flux_resume(self, line: str = "") -> Any:
        """`%flux_resume JOB_ID` or `%flux_resume --all`: fetch pending jobs at no new cost and show them.
        `%flux_resume KEY --resend` sends a submission whose answer was unclear again (it may charge again)."""
        from IPython.display import display

        from doitong_nb._notebook.display import error_text, result_display

        words = line.split()
        resend = "--resend" in words
        words = [w for w in words if w != "--resend"]
        if words == ["--all"] and not resend:
            outcomes = self.client.resume_all()
        elif len(words) == 1 and not words[0].startswith("-"):
            try:
                outcomes = [self.client.resume(words[0], resend=resend)]
            except DoitongError as exc:
                outcomes = [exc]
        else:
            raise UsageError(
                _(
                    "usage: %flux_resume JOB_ID  or  %flux_resume --all  or  %flux_resume KEY --resend  "
                    "(`%flux_jobs` lists them)"
                )
            )
        results = [o for o in outcomes if not isinstance(o, BaseException)]
        for failure in (o for o in outcomes if isinstance(o, BaseException)):
            if not isinstance(failure, DoitongError):
                raise failure
            print(error_text(failure), file=sys.stderr)
        if results:
            display(_Bundle(result_display(results, self.settings.preview_px)))
        elif not outcomes:
            print(_("No pending jobs to resume."))
        return None

    @line_magic
    def flux_doctor(self, line: str = "") -> Any:
        """Check the configured service against the contract, one line per assumption; spends no credit."""
        from doitong_nb._tools.doctor import run

        text, failed = run(self.client)
        print(text, file=sys.stderr if failed else sys.stdout)
        return None

    @line_magic
    def flux_verify(self, line: str = "") -> None:
        """`%flux_verify [NOTEBOOK.ipynb ...]`: every image the notebooks show (or, with none named, every image
        the lock records) is in the lock file and the store with its sha256; one line each, then a summary."""
        from doitong_nb._tools.verify import verify

        try:
            settings = self.settings
            checks = verify(settings.store or settings.output_dir, notebooks=line.split(), lock=settings.lock_file)
        except (DoitongError, OSError) as exc:
            raise UsageError(f"%flux_verify: {exc}") from None
        print(checks)
        if not checks.ok:
            said = _("%flux_verify: {failed} of {total} images failed")
            raise UsageError(said.format(failed=sum(not c.ok for c in checks), total=len(checks)))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in a %%flux cell: still a KeyboardInterrupt (Run All and papermill stop), shown as its one line
    (what goes on, and how to pick it up) instead of a traceback through the client and concurrent.futures."""

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


class CellError(Exception):
    """A %%flux cell that did not deliver. IPython shows its one line instead of a traceback
    (`_render_traceback_`), and the cell counts as failed, so Run All, papermill and nbval stop there."""

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


class _Bundle:
    """A ready mimebundle, or (data, metadata), shown by IPython's display()."""

    def __init__(self, bundle: dict[str, str] | tuple[dict[str, str], dict[str, Any]]) -> None:
        self.bundle = bundle

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self.bundle


def _where(settings: Any) -> str:
    return _("the bundled offline sandbox") if settings.sandbox else settings.base_url


def _parse(magic: Any, line: str) -> Any:
    """magic_arguments' parsing, its errors in the user's language (argparse's words: _core/arguments.py), with a
    shell-quoting slip reported as a usage line, not a traceback."""
    try:
        with argparse_in_language():
            return parse_argstring(magic, line)
    except ValueError as exc:
        raise UsageError(_("%flux: {error}; check the quotes in the options").format(error=exc)) from None


def requests_for(prompt: str, args: Any, default_size: str) -> list[tuple[Any, int]]:
    """(request, variant) pairs for -n images: seeds N.. when a seed is given, else variants."""
    from doitong_nb._core.request import GenerationRequest, per_image

    if args.count < 1 or args.count > 64:
        said = _("count {count} must be from 1 to 64").format(count=args.count)
        raise InvalidRequestError(said, field="count", value=args.count)
    options: dict[str, Any] = {"raw": args.raw, "webhook_url": args.webhook}
    for name in ("version", "quality", "output_format"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.aspect:
        options["aspect_ratio"] = args.aspect
    if args.size or not args.aspect:  # both given: refused by the request, as in the Python API
        options["size"] = args.size or default_size
    return per_image(GenerationRequest.build(prompt, seed=args.seed, **options), args.count)


def cell_pairs(prompt: str, args: Any, namespace: dict[str, Any], default_size: str) -> list[tuple[Any, int]]:
    """A cell's (request, variant) pairs as it would send them: `--each` over the namespace's list, else -n."""
    if args.each:
        return [requests_for(p, args, default_size)[0] for p in _each_prompts(prompt, args, namespace)]
    return requests_for(prompt, args, default_size)


_GRID_ALONE = N_("--grid cannot be combined with --each, -n or --background (Flux.background)")


def grid_pairs(prompt: str, args: Any, default_size: str) -> tuple[list[Any], list[tuple[Any, int]]]:
    """`--grid`: the axes, and one request per combination of them (rows, then columns)."""
    import copy

    from doitong_nb._core import grid

    if args.each or args.count != 1 or args.background:
        raise InvalidRequestError(_(_GRID_ALONE), field="grid")
    axes = [grid.parse_axis(text) for text in args.grid]
    pairs = []
    for cell in grid.cells(axes):
        cell_args = copy.copy(args)
        for name, value in cell.items():
            attribute = "aspect" if grid.AXES[name] == "aspect_ratio" else grid.AXES[name]
            setattr(cell_args, attribute, value)
            if attribute == "aspect":
                cell_args.size = None
        pairs.append(requests_for(prompt, cell_args, default_size)[0])
    return axes, pairs


class _NeedsKernel(Exception):
    """A cell that cannot be priced without the kernel's variables (its prompt, options or --each use them)."""


def notebook_quote(client: Any, notebook: str | os.PathLike[str], namespace: dict[str, Any] | None, size: str) -> Any:
    """What Run All of `notebook` would cost (a `NotebookQuote`): its cells parsed as these magics parse them,
    priced by the engine's quote. `namespace` (a kernel's variables) fills prompts and --each; with None, cells
    that need it are left unpriced and named. Nothing is sent and no code of the notebook runs."""
    from doitong_nb._tools.quote import NotebookQuote, magic_cells, price

    quote, asked = NotebookQuote(), []
    for cell in magic_cells(notebook):
        if cell.size is not None:  # `%config Flux.size = ...`: the default from there on (checked where it is used)
            size = cell.size
            continue
        try:
            prompt, args = _cell_parts(cell, namespace)
            if args.dry_run:
                continue
            pairs = grid_pairs(prompt, args, size)[1] if args.grid else cell_pairs(prompt, args, namespace or {}, size)
        except _NeedsKernel:
            quote.unpriced.append(cell.number)
            continue
        except (DoitongError, UsageError) as exc:  # Run All fails this cell and stops there
            quote.stops_at = (cell.number, str(exc))
            break
        asked.append((pairs, args.refresh))
    quote.tally = price(client, asked)
    return quote


def _cell_parts(cell: Any, namespace: dict[str, Any] | None) -> tuple[str, Any]:
    """A notebook cell's prompt and parsed options, as IPython and the magics would see them when it runs."""
    line = cell.line
    if namespace is None:
        try:
            line = _expand(line, {})
        except InvalidRequestError:
            raise _NeedsKernel from None
    else:  # IPython expands a magic's line and keeps it as written when that fails
        with contextlib.suppress(InvalidRequestError):
            line = _expand(line, namespace)
    if cell.body is None:
        prompt, rest = _split_line(line)
        args = _parse(Flux.flux_line, rest)
    else:
        args = _parse(Flux.flux, line)
        keep_item = {"item": "{item}"} if args.each else {}
        try:
            prompt = _expand(cell.body, {**(namespace or {}), **keep_item})
        except InvalidRequestError:
            if namespace is None:
                raise _NeedsKernel from None
            raise
    if args.each and namespace is None:
        raise _NeedsKernel
    return prompt, args


def _this_notebook(user_ns: dict[str, Any]) -> str:
    """The running notebook's file, as Jupyter Server (JPY_SESSION_NAME) or VS Code (__vsc_ipynb_file__) tell
    the kernel; the server's name is relative to its root, so the file of that name in the kernel's folder too."""
    named = [name for name in (os.environ.get("JPY_SESSION_NAME"), user_ns.get("__vsc_ipynb_file__")) if name]
    for name in [*named, *(os.path.basename(name) for name in named)]:
        if os.path.isfile(name):
            return name
    raise InvalidRequestError(_("this kernel does not know its notebook's file: name it, %flux_quote NOTEBOOK.ipynb"))


def _each_prompts(template: str, args: Any, namespace: dict[str, Any]) -> list[str]:
    """`--each NAME`: the prompt with `{item}` replaced by each item of the notebook's list NAME."""
    if args.each not in namespace:
        said = _("--each {name}: there is no variable {name!r} in the notebook")
        raise InvalidRequestError(said.format(name=args.each))
    items = namespace[args.each]
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        said = _("--each {name}: expected a list of items, got {type}")
        raise InvalidRequestError(said.format(name=args.each, type=type(items).__name__))
    if "{item}" not in template:
        raise InvalidRequestError(_("with --each, write {item} in the prompt where each item goes"), field="prompt")
    if args.count != 1:
        raise InvalidRequestError(_("-n cannot be combined with --each: one image per item"), field="count")
    return [template.replace("{item}", str(item)) for item in items]


def _expand(cell: str, namespace: dict[str, Any]) -> str:
    """IPython's `{expr}` and `$name` expansion of the cell, with a clear error instead of silence."""
    from IPython.utils.text import DollarFormatter

    try:
        return DollarFormatter().vformat(cell, args=[], kwargs=namespace)
    except Exception as exc:
        said = _(
            "the prompt could not be expanded ({error}); write $$ for a literal $ and {{{{ }}}} for literal braces"
        )
        raise InvalidRequestError(said.format(error=f"{type(exc).__name__}: {exc}"), field="prompt") from None


def _follow_language(*_info: Any) -> None:
    """IPython's pre_run_cell: the loaded magics' language for the cell about to run."""
    if _session.current is not None:
        _session.current.follow_language()


def register(ipython: Any) -> None:
    """Register the magics and make `%config Flux.*` reach them."""
    from doitong_nb._notebook import login

    magics = Flux(shell=ipython)
    ipython.register_magics(magics)
    _session.current = magics
    magics.follow_language()
    if _follow_language not in ipython.events.callbacks["pre_run_cell"]:  # once a shell: the current magics'
        ipython.events.register("pre_run_cell", _follow_language)
    login.register(ipython)  # after the language hook: a cell's key-literal warning speaks the language just set
    if magics not in ipython.configurables:
        ipython.configurables.append(magics)
