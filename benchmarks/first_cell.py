"""How long a kernel's first `%%flux --background` cell takes to return, against a later one in the same kernel.

Each round starts a fresh IPython kernel (against an in-process sandbox), runs `%load_ext doitong_nb` (timed: the
extension must not get slower), then the first background cell and a second one (the baseline: everything is
imported and built by then), each timed from execute to the kernel's idle. Two ways a notebook reaches its first
cell: after a pause (a user reading, then running the next cell: `THINK` seconds) and at once (Run All). Prints the
median of each over the rounds and the ratio first/later (target: the first <= 0.5 s).
Run: `python benchmarks/first_cell.py`.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jupyter_client.manager import start_new_kernel

from doitong_sandbox import Sandbox

ROUNDS = 5
THINK = 1.0  # seconds between `%load_ext` and the first cell when a person runs them one by one
CELL = "%%flux --background --size 512x512 --seed {seed} -o img{seed}\na lighthouse on a cliff at dusk"


def _timed(kc: Any, code: str) -> float:
    """Seconds from sending `code` to the kernel's idle after it; an error in the cell stops the benchmark."""
    started = time.perf_counter()
    msg_id = kc.execute(code)
    while True:
        msg = kc.get_iopub_msg(timeout=120)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            raise SystemExit(f"{code!r} failed: {msg['content']['ename']}: {msg['content']['evalue']}")
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return time.perf_counter() - started


def _round(box: Sandbox, folder: Path, think: float) -> tuple[float, float, float]:
    env = {**os.environ, "DOITONG_API_KEY": box.api_key, "DOITONG_BASE_URL": box.base_url}
    env["DOITONG_OUTPUT_DIR"] = str(folder / "out")
    folder.mkdir()
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(folder), env=env)
    try:
        _timed(kc, "pass")  # the kernel's own first-cell costs, which are not ours
        load = _timed(kc, "%load_ext doitong_nb")
        time.sleep(think)
        return load, _timed(kc, CELL.format(seed=1)), _timed(kc, CELL.format(seed=2))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main() -> None:
    with Sandbox(speed=1000, credits=100_000) as box, tempfile.TemporaryDirectory() as tmp:
        for label, think in (("after a pause", THINK), ("Run All", 0.0)):
            rounds = [_round(box, Path(tmp) / f"{label[0]}{i}", think) for i in range(ROUNDS)]
            load, first, later = (statistics.median(column) for column in zip(*rounds, strict=True))
            print(f"{label} ({ROUNDS} fresh kernels, medians):")
            print(f"  %load_ext doitong_nb            {load:6.3f} s")
            print(f"  first background cell           {first:6.3f} s (target <= 0.5 s)")
            print(f"  later background cell (baseline){later:6.3f} s")
            print(f"  ratio first / later             {first / later:6.1f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
