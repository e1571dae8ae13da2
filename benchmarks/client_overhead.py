"""What doitong_nb costs per job on top of the bare HTTP calls, and how many status reads it makes.

1. Overhead: N jobs (512x512, distinct seeds) against a sandbox with `--speed inf` (no generation
   time, no rate window), and again with `--speed 1000000` (all but the same), through
   `Flux.generate` in a loop (output_dir a temp dir) and through a minimal raw-httpx loop (GraphQL
   `generate`, `job` until completed, download the url to a file), in alternating rounds against
   the same server, best round of each. Both include the sandbox rendering each image (begun at
   submission; with no generation time the download waits for it). Printed as time per job and
   the ratio (target <= 1.2x).
2. Status reads: a few jobs at a realistic speed (20x), through `Flux.generate` and through the
   doc's fixed loop (a read every 2 s, i.e. every 2/20 s here); status reads per job for each.

The sandbox runs in its own process (the `python -m doitong_sandbox` CLI), so the server never
competes with the client for the GIL. Run: `python benchmarks/client_overhead.py`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from doitong_nb import _contract as contract
from doitong_nb._core.request import GenerationRequest
from doitong_nb._runtime.client import Flux
from doitong_nb._wire.graphql import JOB_QUERY, GraphQLTransport

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sandbox_proc import CliSandbox

N = 40
REPEATS = 3
SIZE = "512x512"
PROMPT = "a lighthouse on a cliff at dusk, study {i}"
REALISTIC_SPEED = 20.0
HUGE_SPEED = "1000000"
REALISTIC_N = 8
DOC_POLL_SECONDS = 2.0

WIRE = GraphQLTransport()  # the doc's `generate` mutation body; the loops around it stay raw httpx


def _doitong(box: CliSandbox, seeds: range, out: str) -> None:
    with Flux(api_key=box.api_key, base_url=box.base_url, output_dir=out) as flux:
        for i in seeds:
            flux.generate(PROMPT.format(i=i), size=SIZE, seed=i)


def _raw(box: CliSandbox, seeds: range, out: str, poll_every: float = 0.0) -> None:
    """The minimal loop: submit, read the job until completed (every `poll_every` s), download."""
    with httpx.Client(base_url=box.base_url, headers={"Authorization": f"Bearer {box.api_key}"}, timeout=60) as api:
        with httpx.Client(timeout=60) as cdn:
            for i in seeds:
                request = GenerationRequest.build(PROMPT.format(i=i), size=SIZE, seed=i)
                response = api.post(contract.GRAPHQL_PATH, json=WIRE.submit(request).json)
                job = response.raise_for_status().json()["data"]["generate"]
                while job["status"] != contract.STATUS_COMPLETED:
                    if job["status"] == contract.STATUS_FAILED:
                        raise RuntimeError(job)
                    if poll_every:
                        time.sleep(poll_every)
                    body = {"query": JOB_QUERY, "variables": {"id": job["id"]}}
                    job = api.post(contract.GRAPHQL_PATH, json=body).raise_for_status().json()["data"]["job"]
                with cdn.stream("GET", job["url"]) as download, open(Path(out) / f"{job['id']}.jpg", "wb") as handle:
                    download.raise_for_status()
                    for chunk in download.iter_raw(1 << 16):
                        handle.write(chunk)


def _timed(fn: Callable[[CliSandbox, range, str], None], box: CliSandbox, seeds: range) -> tuple[float, dict]:
    """Seconds for `fn` over `seeds` (after one untimed warm-up job), and the sandbox's counters for it."""
    with tempfile.TemporaryDirectory() as out:
        fn(box, range(10_000 + seeds.start, 10_001 + seeds.start), out)  # warm-up: connections, imports
        before = box.stats()["total"]
        started = time.perf_counter()
        fn(box, seeds, out)
        elapsed = time.perf_counter() - started
        after = box.stats()["total"]
        return elapsed, {k: after[k] - before[k] for k in before}


def main() -> None:
    # speed inf (what the brief asks) and a finite but huge speed (the rate window is 60 s / 1e6): the
    # two differ only if the client mishandles the sandbox's "X-RateLimit-Window: 0" at infinite speed
    for speed in ("inf", HUGE_SPEED):
        print(f"1. overhead: {N} jobs of {SIZE}, sandbox --speed {speed} (best of {REPEATS}, alternating)")
        ours, raw = [], []
        with CliSandbox(plan="pro", credits=1_000_000, speed=speed) as box:  # one server: the same conditions
            for attempt in range(REPEATS):
                ours.append(_timed(_doitong, box, range(2 * attempt * N, (2 * attempt + 1) * N))[0])
                raw.append(_timed(_raw, box, range((2 * attempt + 1) * N, (2 * attempt + 2) * N))[0])
        o, r = min(ours) / N, min(raw) / N
        print(f"  {'doitong_nb Flux.generate':<28}{o * 1000:8.1f} ms/job")
        print(f"  {'raw httpx loop (baseline)':<28}{r * 1000:8.1f} ms/job")
        print(f"  ratio {o / r:.2f}x  (target <= 1.2x)\n")

    speed = REALISTIC_SPEED
    seeds = range(REALISTIC_N)
    print(f"2. status reads: {REALISTIC_N} jobs of {SIZE} one after another, sandbox speed {speed:g}x")
    with CliSandbox(plan="pro", credits=1_000_000, speed=speed) as box:
        t_ours, s_ours = _timed(_doitong, box, seeds)
        doc_seeds = range(seeds.stop, seeds.stop + REALISTIC_N)
        t_doc, s_doc = _timed(lambda b, s, out: _raw(b, s, out, DOC_POLL_SECONDS / speed), box, doc_seeds)
    for name, elapsed, stats in (
        ("doitong_nb Flux.generate", t_ours, s_ours),
        (f"doc's loop (every {DOC_POLL_SECONDS:g} s)", t_doc, s_doc),
    ):
        print(
            f"  {name:<28}{stats['status_requests'] / REALISTIC_N:6.2f} status reads/job"
            f"{stats['api_requests'] / REALISTIC_N:7.2f} requests/job"
            f"{elapsed * speed / REALISTIC_N:7.2f} sandbox s/job"
        )
    ratio = s_doc["status_requests"] / max(1, s_ours["status_requests"])
    print(f"  the doc's loop reads the status {ratio:.1f}x as often")


if __name__ == "__main__":
    main()
