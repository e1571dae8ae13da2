"""How long the sandbox takes to paint an image, as a ratio to Pillow merely encoding one.

The baseline is measured in the same run, on the same machine: `Image.new(...).save(JPEG)` of a
solid image of the same size. No assertions: this prints figures for a human to compare.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

from PIL import Image

from doitong_sandbox.render import JPEG_QUALITY, render

PROMPT = "neon city skyline over the sea at night with flying cars"
SIDES = (1024, 2048, 4096)
REPEATS = 3


def _best(fn: Callable[[], object]) -> float:
    """Best of a few runs: the least disturbed by whatever else the machine is doing."""
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _baseline(side: int) -> None:
    Image.new("RGB", (side, side), (40, 80, 120)).save(io.BytesIO(), "JPEG", quality=JPEG_QUALITY)


def main() -> None:
    render(PROMPT, 256, 256, 0)  # warm up imports and the font
    print(f"{'size':>11}  {'render s':>9}  {'baseline s':>10}  {'ratio':>6}")
    for side in SIDES:
        ours = _best(lambda side=side: render(PROMPT, side, side, 1))
        base = _best(lambda side=side: _baseline(side))
        print(f"{side:>5}x{side:<5}  {ours:9.3f}  {base:10.4f}  {ours / base:6.1f}")


if __name__ == "__main__":
    main()
