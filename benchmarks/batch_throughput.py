"""Batch throughput at the plan's ceiling: doitong_nb (polling, webhooks) against a naive client and the bound.

One sandbox per case, each in its own process (the `python -m doitong_sandbox` CLI, so that its
image rendering never competes with the client for the GIL; counters from /_sandbox/stats),
speed-scaled (the speed divides job durations and the rate-limit window alike, so every ratio below
is the one the real service would show). For the free plan (20 jobs) and the
pro plan (100 jobs) it prints the makespan, the API requests and the 429s of:

  (a) doitong_nb polling    Flux.batch (or AsyncFlux.batch with --driver async)
  (b) doitong_nb webhooks   the same, with webhook_url=True
  (c) naive                 the doc's advice: as many workers as concurrent jobs, poll every 2 s,
                            retry 429/5xx with exponential backoff (its refused requests count
                            toward the plan's minute too: the contract counts every request)
  (d) bound                 the fastest schedule the plan's limits allow: a greedy schedule that knows
                            every job's duration, with no network latency and no downloads

Makespans are printed in sandbox seconds (wall x speed), i.e. what the real service would take.
Each case runs on a quiet machine and on a busy one (`--load`): busy means another process burns one
core for the whole case, as a test run or a build beside the notebook would.
Run: `python benchmarks/batch_throughput.py` (about 4 minutes on a 2-core machine; `--load quiet` halves it).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from doitong_nb import _contract as contract
from doitong_nb._core.request import GenerationRequest
from doitong_nb._runtime.client import AsyncFlux, Flux
from doitong_nb._wire.graphql import JOB_QUERY, GraphQLTransport
from doitong_sandbox.engine import generation_seconds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sandbox_proc import CliSandbox

# every size up to 1 MP takes the same time; the smallest keeps the sandbox's rendering (which the
# speed does not scale, and which is paid on each download) cheap
SIZE = 256
CASES = (("free", 20, 24.0), ("pro", 100, 16.0))  # plan, jobs, speed

WIRE = GraphQLTransport()  # the doc's `generate` mutation body; the loops around it stay raw httpx


@dataclass
class Run:
    makespan: float
    requests: int
    rate_limited: int
    status_reads: int


def _requests(n: int) -> list[GenerationRequest]:
    return [
        GenerationRequest.build(f"a lighthouse on a cliff, study {i}", size=f"{SIZE}x{SIZE}", seed=i) for i in range(n)
    ]


def _measure(box: CliSandbox, started: float) -> Run:
    elapsed = time.monotonic() - started
    total = box.stats()["total"]
    return Run(elapsed, total["api_requests"], total["rate_limited"], total["status_requests"])


def run_doitong(plan: str, n: int, speed: float, webhooks: bool, driver: str) -> Run:
    with CliSandbox(plan=plan, credits=100_000, speed=speed) as box, tempfile.TemporaryDirectory() as out:
        options = dict(progress=False, webhook_url=webhooks or None, webhook_secret=box.webhook_secret)
        started = time.monotonic()
        if driver == "sync":
            with Flux(api_key=box.api_key, base_url=box.base_url, output_dir=out) as flux:
                results = flux.batch(_requests(n), **options)
        else:

            async def main() -> list:
                async with AsyncFlux(api_key=box.api_key, base_url=box.base_url, output_dir=out) as flux:
                    return await flux.batch(_requests(n), **options)

            results = asyncio.run(main())
        run = _measure(box, started)
        assert len(results.images) == n, results.errors
        return run


def run_naive(plan: str, n: int, speed: float) -> Run:
    """The doc's loop: submit, poll every 2 s, back off exponentially on 429 and 5xx; one worker per job slot."""
    with CliSandbox(plan=plan, credits=100_000, speed=speed) as box:
        queue = deque(_requests(n))
        headers = {"Authorization": f"Bearer {box.api_key}"}

        def call(client: httpx.Client, body: dict) -> dict:
            delay = 1.0
            while True:
                response = client.post(contract.GRAPHQL_PATH, json=body)
                if response.status_code != 429 and response.status_code < 500:
                    reply = response.json()
                    codes = {(e.get("extensions") or {}).get("code") for e in reply.get("errors") or ()}
                    if not codes & {contract.RATE_LIMITED, contract.CONCURRENCY_LIMITED, contract.INTERNAL}:
                        return reply["data"]
                time.sleep(delay / speed)
                delay = min(delay * 2, 60.0)

        def worker() -> None:
            with httpx.Client(base_url=box.base_url, headers=headers, timeout=30) as client:
                while queue:
                    request = queue.popleft()
                    job = call(client, WIRE.submit(request).json)["generate"]
                    while job["status"] not in contract.FINAL_STATUSES:
                        time.sleep(2.0 / speed)
                        job = call(client, {"query": JOB_QUERY, "variables": {"id": job["id"]}})["job"]
                    client.get(job["url"]).raise_for_status()

        started = time.monotonic()
        threads = [threading.Thread(target=worker) for _ in range(contract.PLANS[plan].concurrent_jobs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return _measure(box, started)


def bound(plan: str, n: int, speed: float, webhooks: bool) -> float:
    """Makespan of a greedy schedule that knows each job's duration: submit when a job slot frees,
    read the status once, exactly when the job is done (no read with webhooks), requests paced by
    the sliding window."""
    limits = contract.PLANS[plan]
    window = contract.RATE_WINDOW_SECONDS / speed
    durations = [generation_seconds(SIZE, SIZE, i) / speed for i in range(n)]
    sends: list[float] = []

    def send(at: float) -> float:
        at = max(at, sends[-1] if sends else at)
        if len(sends) >= limits.requests_per_minute:
            at = max(at, sends[-limits.requests_per_minute] + window)
        sends.append(at)
        return at

    scheduled = min(n, limits.concurrent_jobs)
    wanted = [(0.0, 0, "submit") for _ in range(scheduled)]
    started, order, finish = 0, 0, 0.0
    while wanted:
        at, _, kind = heapq.heappop(wanted)
        if kind == "read":
            finish = max(finish, send(at))
            continue
        done = send(at) + durations[started]
        started, order, finish = started + 1, order + 1, max(finish, done)
        if not webhooks:
            heapq.heappush(wanted, (done, order + n, "read"))
        if scheduled < n:  # the job's slot frees when it is done
            scheduled += 1
            heapq.heappush(wanted, (done, order, "submit"))
    return finish


@contextmanager
def _load(busy: bool) -> Iterator[None]:
    """With `busy`, another process keeps one core at 100% until the block ends."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        yield
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--driver", choices=("sync", "async"), default="sync", help="Flux.batch or AsyncFlux.batch")
    parser.add_argument("--load", choices=("quiet", "busy", "both"), default="both", help="one core burned, or not")
    parser.add_argument("--plan", choices=[c[0] for c in CASES], action="append", help="only this plan (repeatable)")
    args = parser.parse_args()
    loads = {"quiet": (False,), "busy": (True,), "both": (False, True)}[args.load]
    summary = []
    for busy in loads:
        with _load(busy):
            rows = _table([c for c in CASES if args.plan is None or c[0] in args.plan], args.driver, busy)
        summary.append((busy, rows))
    print("\nratios (targets: zero 429s; <= 1.15x bound; polling >= 2.5x naive; webhooks >= 6x naive on pro)")
    for busy, rows in summary:
        for plan, _, _, polling, webhooks, naive, poll_bound, hook_bound in rows:
            print(
                f"  {'busy' if busy else 'quiet':<6}{plan:<5} polling {polling.makespan / poll_bound:.2f}x bound, "
                f"{naive.makespan / polling.makespan:.2f}x faster than naive; "
                f"webhooks {webhooks.makespan / hook_bound:.2f}x bound, "
                f"{naive.makespan / webhooks.makespan:.2f}x faster than naive; "
                f"429s {polling.rate_limited}/{webhooks.rate_limited}/{naive.rate_limited}"
            )


def _table(cases: list[tuple[str, int, float]], driver: str, busy: bool) -> list[tuple]:
    """Run each case's three clients and print its table; the rows for the summary."""
    rows = []
    machine = "busy machine (one core burned)" if busy else "quiet machine"
    for plan, n, speed in cases:
        polling = run_doitong(plan, n, speed, False, driver)
        webhooks = run_doitong(plan, n, speed, True, driver)
        naive = run_naive(plan, n, speed)
        poll_bound, hook_bound = bound(plan, n, speed, False), bound(plan, n, speed, True)
        rows.append((plan, n, speed, polling, webhooks, naive, poll_bound, hook_bound))
        print(
            f"\n{machine}: {plan} plan, {n} jobs of {SIZE}x{SIZE}, sandbox speed {speed:g}x "
            "(makespans in sandbox seconds = wall x speed)"
        )
        print(
            f"  {'client':<22}{'makespan':>10}{'requests':>10}{'/job':>7}{'status':>8}{'429s':>6}"
            f"{'vs bound':>10}{'vs naive':>10}"
        )
        for name, run, ref in (
            ("(a) doitong polling", polling, poll_bound),
            ("(b) doitong webhooks", webhooks, hook_bound),
            ("(c) naive", naive, poll_bound),
        ):
            print(
                f"  {name:<22}{run.makespan * speed:>9.1f}s{run.requests:>10}{run.requests / n:>7.2f}"
                f"{run.status_reads:>8}{run.rate_limited:>6}{run.makespan / ref:>9.2f}x"
                f"{run.makespan / naive.makespan:>9.2f}x"
            )
        for name, ref, requests in (("(d) bound, polling", poll_bound, 2 * n), ("(d) bound, webhooks", hook_bound, n)):
            print(
                f"  {name:<22}{ref * speed:>9.1f}s{requests:>10}{requests / n:>7.2f}{'':>8}{'':>6}{1.0:>9.2f}x"
                f"{ref / naive.makespan:>9.2f}x"
            )
    return rows


if __name__ == "__main__":
    main()
