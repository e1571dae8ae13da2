"""What images will cost, in words: a cell's `--dry-run`, a whole notebook (`%flux_quote`, `doitong-nb quote`)
and the README's price table. The prices themselves are the engine's quote (`Flux.quote`) and the contract's
table; this module only reads notebooks and counts.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doitong_nb import _contract as contract
from doitong_nb._core.errors import InvalidRequestError
from doitong_nb._core.i18n import _, ngettext
from doitong_nb._core.result import credits_text

_CELL_MAGIC = re.compile(r"%%flux(?=\s|$)")
_LINE_MAGIC = re.compile(r"^\s*%flux(?=\s|$)(.*)$")
_LEADING_BLANKS = re.compile(r"\A(?:[ \t]*\n)+")
_CONFIG_SIZE = re.compile(r"^\s*%config\s+Flux\.size\s*=\s*(.+?)\s*$")


def _images(n: int) -> str:
    return ngettext("{n} new image", "{n} new images", n).format(n=n)


@dataclass
class Tally:
    """The images of one or more quotes: new ones (charged), replayed ones (stored, or made by an earlier cell)
    and paid ones (a journaled job, picked up at no new cost)."""

    credits: int = 0
    new: int = 0
    replayed: int = 0
    paid: int = 0

    def add(self, quote: Any) -> Tally:
        """Count an engine `Quote`'s items into this tally."""
        for item in quote.items:
            self.credits += item.cost
            if item.cost:
                self.new += 1
            elif item.replay:
                self.replayed += 1
            else:
                self.paid += 1
            self.replayed += len(item.copies)
        return self

    def dry_run(self) -> str:
        """The summary line of a cell's `--dry-run`."""
        parts = [f"{_images(self.new)}, {credits_text(self.credits)}"] if self.new or not self.replayed else []
        if self.replayed:
            parts.append(_("{n} stored, replayed at 0 credits").format(n=self.replayed))
        if self.paid:
            parts.append(_("{n} already paid, picked up at 0 credits").format(n=self.paid))
        return _("dry run: {parts}; nothing was sent").format(parts="; ".join(parts))


@dataclass
class NotebookQuote:
    """What Run All of a notebook would spend, from its %%flux and %flux cells (nothing sent)."""

    tally: Tally = field(default_factory=Tally)
    unpriced: list[int] = field(default_factory=list)  # cell numbers that need the kernel's variables
    stops_at: tuple[int, str] | None = None  # (cell number, why): Run All stops at that cell, nothing after counts

    def __str__(self) -> str:
        t = self.tally
        text = _("Run All would cost {credits}: {images}, {replayed} replayed").format(
            credits=credits_text(t.credits), images=_images(t.new), replayed=t.replayed
        )
        if t.paid:
            text += _(", {n} already paid (picked up from the journal)").format(n=t.paid)
        if self.unpriced:
            cells = ", ".join(str(n) for n in self.unpriced)
            text += _(
                "; not priced: cell(s) {cells}, whose prompt or --each needs the kernel's variables "
                "(run %flux_quote in the notebook)"
            ).format(cells=cells)
        if self.stops_at is not None:
            number, why = self.stops_at
            text += _("; Run All stops at cell {number}: {why}").format(number=number, why=why)
        return text


@dataclass(frozen=True)
class MagicCell:
    """One %%flux cell (`body` is its prompt) or %flux line (`body` None), or a `%config Flux.size` (`size`)."""

    number: int  # 1-based position among the notebook's cells
    line: str = ""
    body: str | None = None
    size: str | None = None


def magic_cells(notebook: str | Path) -> list[MagicCell]:
    """The notebook's %%flux cells, %flux lines and `%config Flux.size` lines, in order; its code is not run."""
    path = Path(notebook)
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        said = _("{path}: not a readable notebook ({error})").format(path=path, error=f"{type(exc).__name__}: {exc}")
        raise InvalidRequestError(said) from None
    found: list[MagicCell] = []
    for number, cell in enumerate(cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        source = _LEADING_BLANKS.sub("", source)  # as IPython drops them before it looks for a cell magic
        if _CELL_MAGIC.match(source):
            first, _newline, body = source.partition("\n")
            found.append(MagicCell(number, first[len("%%flux") :].strip(), body))
            continue
        for text in source.splitlines():
            if config := _CONFIG_SIZE.match(text):
                try:
                    found.append(MagicCell(number, size=str(ast.literal_eval(config.group(1)))))
                except (ValueError, SyntaxError):
                    continue  # not a literal: the kernel's value, which the quote cannot know
            elif line := _LINE_MAGIC.match(text):
                found.append(MagicCell(number, line.group(1).strip()))
    return found


def price(client: Any, cells: Iterable[tuple[Sequence[tuple[Any, int]], bool]]) -> Tally:
    """The engine's quote for cells run in order: each cell's (request, variant) pairs and its `--refresh`.

    An image an earlier cell makes is replayed by a later cell that asks for it again (unless `--refresh`), as
    Run All replays it from the store; the rest is priced once by `client.quote`, with what is stored or paid.
    """
    seen: set[str] = set()
    tally, asked = Tally(), {False: [], True: []}
    for pairs, refresh in cells:
        for request, variant in pairs:
            key = request.key(variant)
            if key in seen and not refresh:
                tally.replayed += 1
                continue
            seen.add(key)
            asked[refresh].append((request, variant))
    for refresh, pairs in asked.items():
        if pairs:
            tally.add(client.quote(pairs, refresh=refresh))
    return tally


def price_table() -> str:
    """The README's price table, from the contract's prices (a test checks the README shows this table)."""
    rows = ["| image | pixels | credits |", "|---|---|---|"]
    for side in (256, 512, 768, 1024, 1536, 2048, 3072, 4096):
        rows.append(f"| {side}x{side} | {side * side / 1e6:.2f} MP | {contract.credit_cost(side, side)} |")
    width, height = contract.size_for_aspect_ratio("16:9")
    rows.append(
        f"| `--aspect 16:9` ({width}x{height}) | {width * height / 1e6:.2f} MP | "
        f"{contract.credit_cost(width, height)} |"
    )
    return "\n".join(rows)
