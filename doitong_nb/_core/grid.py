"""Sweeps as labelled grids: `%%flux --grid "seed=1,2,3" --grid "aspect=1:1,16:9"` and `Flux.grid(...)`.

One axis gives a row; two give a matrix, the first axis down the rows and the second across the columns. Every
cell is an ordinary request (replayed at 0 credits when stored), the cost is told before anything is sent, and
the result renders as a table with row and column labels, each image in it once.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Sequence
from typing import Any

from doitong_nb._core.errors import InvalidRequestError

# Axis names a user writes -> GenerationRequest.build's keyword (values are parsed from text in the magic).
AXES = {
    "seed": "seed",
    "aspect": "aspect_ratio",
    "aspect_ratio": "aspect_ratio",
    "size": "size",
    "quality": "quality",
    "version": "version",
    "raw": "raw",
    "format": "output_format",
}


def parse_axis(text: str) -> tuple[str, list[Any]]:
    """'seed=1,2,3' -> ('seed', [1, 2, 3]); 'raw=true,false' -> ('raw', [True, False])."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":  # magic_arguments keeps the quotes
        text = text[1:-1]
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or name not in AXES:
        raise InvalidRequestError(
            f"--grid {text!r}: write NAME=V1,V2,... with NAME one of {', '.join(sorted(AXES))}", field="grid"
        )
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not items:
        raise InvalidRequestError(f"--grid {text!r}: no values after '='", field="grid")
    if len(set(items)) != len(items):
        raise InvalidRequestError(f"--grid {text!r}: a value is repeated", field="grid")
    return name, [_value(name, v, text) for v in items]


def _value(name: str, value: str, text: str) -> Any:
    if name == "seed":
        try:
            return int(value)
        except ValueError:
            raise InvalidRequestError(f"--grid {text!r}: seed {value!r} is not a whole number", field="seed") from None
    if name == "raw":
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise InvalidRequestError(f"--grid {text!r}: raw takes true or false", field="raw")
        return value.lower() in ("true", "1", "yes")
    return value


def cells(axes: Sequence[tuple[str, Sequence[Any]]]) -> list[dict[str, Any]]:
    """Row-major combinations of the axes' values, as {axis name: value}."""
    if not 1 <= len(axes) <= 2:
        raise InvalidRequestError("give one or two --grid axes (rows, then columns)", field="grid")
    if len(axes) == 2 and axes[0][0] == axes[1][0]:
        raise InvalidRequestError(f"the two --grid axes are both {axes[0][0]!r}", field="grid")
    names = [name for name, _ in axes]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(values for _, values in axes))]


def options_for(cell: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The build options of one cell: the base options with the cell's values; an aspect axis drops the size."""
    options = dict(base)
    for name, value in cell.items():
        key = AXES[name]
        if key == "aspect_ratio":
            options.pop("size", None)
        if key == "size":
            options.pop("aspect_ratio", None)
        options[key] = value
    return options


def _label(name: str, value: Any) -> str:
    return f"{name}={value}"


class GridView:
    """A sweep's outcomes (ImageResult or an error, row-major) with its axes: rich display and `.results`."""

    def __init__(self, axes: Sequence[tuple[str, Sequence[Any]]], outcomes: Sequence[Any], preview_px: int = 384):
        self.axes = [(name, list(values)) for name, values in axes]
        self.outcomes = list(outcomes)
        self.preview_px = preview_px
        self.columns = len(self.axes[1][1]) if len(self.axes) == 2 else len(self.axes[0][1])
        self.rows = len(self.outcomes) // self.columns

    @property
    def results(self) -> list[Any]:
        """The images, row-major (failed cells left out)."""
        from doitong_nb._core.result import ImageResult

        return [o for o in self.outcomes if isinstance(o, ImageResult)]

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        if isinstance(key, tuple):
            row, column = key
            return self.outcomes[row * self.columns + column]
        return self.outcomes[key]

    def __len__(self) -> int:
        return len(self.outcomes)

    def _row_labels(self) -> list[str]:
        if len(self.axes) == 2:
            return [_label(self.axes[0][0], v) for v in self.axes[0][1]]
        return [""]

    def _column_labels(self) -> list[str]:
        name, values = self.axes[-1]
        return [_label(name, v) for v in values]

    def __repr__(self) -> str:
        from doitong_nb._notebook.display import error_text, result_text

        shape = " × ".join(f"{name} ({len(values)})" for name, values in self.axes)
        lines = [f"grid {shape}"]
        rows = self._row_labels()
        for index, outcome in enumerate(self.outcomes):
            row, column = divmod(index, self.columns)
            label = ", ".join(p for p in (rows[row], self._column_labels()[column]) if p)
            text = error_text(outcome) if isinstance(outcome, BaseException) else result_text(outcome, account=False)
            lines.append(f"[{label}] {text}")
        return "\n".join(lines)

    def _cell_html(self, outcome: Any) -> str:
        from doitong_nb._notebook.display import _GRID_PREVIEW_PX, _card, error_text

        if isinstance(outcome, BaseException):
            return f'<div style="padding:12px;opacity:.8;font-size:12px">{html.escape(error_text(outcome))}</div>'
        style = "aspect-ratio:1;object-fit:contain;background:rgba(127,127,127,.1)"
        return _card(outcome, min(self.preview_px, _GRID_PREVIEW_PX), style, 2, False)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict[str, str], dict[str, Any]]:
        """One labelled table with each image once, inline (as a single card is: display.py says why), and the
        text form. Cells and rows carry their own alignment and background: JupyterLab's table style right-aligns
        cells and shades every other row, which suits numbers, not cards."""
        from doitong_nb._notebook.display import _FONT

        th = "padding:4px 8px;font-size:12px;font-weight:600;text-align:center;white-space:nowrap"
        head = "".join(f'<th style="{th}">{html.escape(c)}</th>' for c in self._column_labels())
        corner = '<th style="padding:0"></th>' if len(self.axes) == 2 else ""
        body = []
        td = f"vertical-align:top;text-align:left;padding:4px;width:{100 / self.columns:.2f}%"
        for row, label in enumerate(self._row_labels()):
            cells = "".join(
                f'<td style="{td}">{self._cell_html(self[row, column])}</td>' for column in range(self.columns)
            )
            side = f'<th style="{th};text-align:right">{html.escape(label)}</th>' if len(self.axes) == 2 else ""
            body.append(f'<tr style="background:none">{side}{cells}</tr>')
        page = (
            f'<table style="{_FONT};border-collapse:collapse;table-layout:fixed;max-width:{self.columns * 300}px">'
            f'<tr style="background:none">{corner}{head}</tr>{"".join(body)}</table>'
        )
        return {"text/plain": repr(self), "text/html": page}, {}
