"""`Flux.grid`: a sweep of options as axes, quoted and admitted before anything is sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from doitong_nb._core.errors import InvalidRequestError
from doitong_nb._core.grid import AXES, GridView, cells, options_for


def cost_line(axes: Sequence[tuple[str, Sequence[Any]]], charges: Sequence[int]) -> str:
    """What the sweep will cost, told before anything is sent."""
    from doitong_nb._core.i18n import _
    from doitong_nb._core.result import credits_text

    shape = " × ".join(f"{len(values)} {name}" for name, values in axes)
    free = sum(1 for c in charges if c == 0)
    stored = _(" ({n} already stored or paid: 0 credits)").format(n=free) if free else ""
    return _("grid {shape} = {n} images, {credits}{stored}").format(
        shape=shape, n=len(charges), credits=credits_text(sum(charges)), stored=stored
    )


def sweep(client: Any, prompt: str, *, refresh: bool = False, quiet: bool = False, **options: Any) -> GridView:
    """`Flux.grid`: options given as lists or tuples are the axes (rows, then columns), the rest apply to every
    cell; the cost is printed before anything is sent, and the budget is checked for the whole sweep."""
    from doitong_nb._core.request import GenerationRequest

    axes = [(name, list(values)) for name, values in options.items() if isinstance(values, (list, tuple))]
    for name, _ in axes:
        if name not in AXES:
            raise InvalidRequestError(f"{name}: a grid axis is one of {', '.join(sorted(AXES))}", field=name)
    base = {AXES.get(k, k): v for k, v in options.items() if not isinstance(v, (list, tuple))}
    requests = [GenerationRequest.build(prompt, **options_for(cell, base)) for cell in cells(axes)]
    quote = client.quote(requests, refresh=refresh)
    if not quiet:
        print(cost_line(axes, quote.costs))
    client.admit(quote)
    outcomes = client.generate_many(requests, refresh=refresh, progress=False)
    return GridView(axes, list(outcomes))
