"""What `%load_ext doitong_nb` adds to IPython's start-up, and which heavy modules it pulls in.

Times `ipython -c "%load_ext doitong_nb"` against a bare `ipython -c "pass"` (each a fresh subprocess
in this venv, best of a few, alternating), prints the added time (target < 0.3 s) and the ratio,
then lists which heavy modules are in sys.modules right after the extension loads (they should load
lazily, on first use). Run: `python benchmarks/import_time.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPEATS = 5
HEAVY = ("httpx", "PIL", "numpy", "starlette", "uvicorn", "graphql")
IPYTHON = str(Path(sys.executable).with_name("ipython"))
BARE = "pass"
LOAD = "%load_ext doitong_nb"
PROBE = f"%load_ext doitong_nb\nimport sys; print('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DOITONG_API_KEY", "DOITONG_BASE_URL"):
        env.pop(name, None)
    return env


def _run(code: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([IPYTHON, "-c", code], capture_output=True, text=True, env=_env(), check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or "Error" in done.stdout + done.stderr:
        raise SystemExit(f"ipython -c {code!r} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout


def main() -> None:
    _run(BARE)  # warm the OS file cache and .pyc files: not timed
    _run(LOAD)
    bare, load = [], []
    for _ in range(REPEATS):
        bare.append(_run(BARE)[0])
        load.append(_run(LOAD)[0])
    b, extension = min(bare), min(load)
    print(f"ipython start-up, best of {REPEATS} (fresh subprocess each)")
    print(f"  {'ipython -c pass (baseline)':<36}{b:7.3f} s")
    print(f"  {'ipython -c %load_ext doitong_nb':<36}{extension:7.3f} s")
    print(f"  added {extension - b:.3f} s (target < 0.3 s); ratio {extension / b:.2f}x")
    stdout = _run(PROBE)[1]
    loaded = next((line[len("LOADED=") :] for line in stdout.splitlines() if line.startswith("LOADED=")), None)
    if loaded is None:
        raise SystemExit(f"the sys.modules probe printed nothing usable:\n{stdout}")
    loaded_set = set(filter(None, loaded.split(",")))
    print("heavy modules in sys.modules after %load_ext doitong_nb (should be none):")
    for name in HEAVY:
        print(f"  {name:<10}{'LOADED' if name in loaded_set else 'not loaded'}")


if __name__ == "__main__":
    main()
