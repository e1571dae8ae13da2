"""`doitong-sandbox`: run the sandbox until SIGINT/SIGTERM, printing where it listens and its credentials.

A start-up failure (a busy port, a bad value) ends the program with one line that says what to change.
`--state DIR` keeps the sandbox's jobs and balances in DIR across runs; `--reset` removes the state of the bundled
sandbox that doitong_nb starts (or of `--state DIR`), so the next one starts afresh.
"""

from __future__ import annotations

import argparse
import errno
import math
import signal
import threading

from doitong_nb import _contract as c
from doitong_sandbox.dialects import DIALECTS
from doitong_sandbox.faults import KINDS, Faults
from doitong_sandbox.server import Sandbox
from doitong_sandbox.state import StateInUse, reset, user_state_dir

_PORTS = range(65536)


def _fault_value(text: str) -> float | int:
    """'3' is a count (the next 3 occurrences), '0.1' a probability."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doitong-sandbox", description="A local Doitong Flux Ultra API on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787, help="API port (0: any free port)")
    parser.add_argument("--cdn-port", type=int, default=0, help="CDN port (0: any free port)")
    parser.add_argument("--plan", default="pro", choices=list(c.PLANS))
    parser.add_argument("--credits", type=int, default=1000)
    parser.add_argument("--speed", type=float, default=1.0, help="divides every duration; 'inf' for no waiting")
    parser.add_argument("--api-key", help="the key to accept (default: a random sbx_ key)")
    parser.add_argument("--fault-rate", type=_fault_value, help="shorthand for --error-5xx")
    for kind in KINDS:
        flag = "--" + kind.replace("_", "-")
        parser.add_argument(flag, type=_fault_value, default=0, help=f"{kind} fault: probability in [0,1) or a count")
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    parser.add_argument("--rate-limit-seconds", type=float, default=1.0, help="Retry-After of an injected 429")
    parser.add_argument("--queue-seconds", type=float, default=3.0, help="how long a queue-job fault keeps it queued")
    parser.add_argument("--fault-seed", type=int, default=0)
    parser.add_argument(
        "--dialect",
        default="default",
        choices=list(DIALECTS),
        help="speak a service that differs from CONTRACT.md in one area: "
        + "; ".join(f"{d.name}: {d.summary}" for d in DIALECTS.values()),
    )
    parser.add_argument("--state", metavar="DIR", help="keep jobs, keys and balances in DIR across runs")
    parser.add_argument(
        "--reset",
        action="store_true",
        help=f"remove the state of --state DIR (default: the bundled sandbox's, {user_state_dir()}) and exit",
    )
    return parser


def _reset(folder: str) -> str:
    try:
        removed = reset(folder)
    except StateInUse as exc:
        raise SystemExit(f"doitong-sandbox: {exc}") from None
    what = "removed" if removed else "had no state to remove"
    return f"doitong-sandbox: {folder} {what}; the next sandbox on it starts afresh"


def _checked(args: argparse.Namespace) -> None:
    """Refuse values the sandbox would fail on later, with the option's name."""
    for flag, port in (("--port", args.port), ("--cdn-port", args.cdn_port)):
        if port not in _PORTS:
            raise SystemExit(f"doitong-sandbox: {flag} {port} is not a port; use 1 to 65535, or 0 for any free port")
    if args.credits < 0:
        raise SystemExit(f"doitong-sandbox: --credits {args.credits} must be 0 or more")
    if math.isnan(args.speed) or args.speed <= 0:
        raise SystemExit(f"doitong-sandbox: --speed {args.speed:g} must be above 0 ('inf' for no waiting)")


def _bind_failure(exc: OSError, args: argparse.Namespace) -> str:
    """One line for a port that cannot be listened on: busy, or not ours to take."""
    ports = [f"--port {args.port}", *([f"--cdn-port {args.cdn_port}"] if args.cdn_port else [])]
    if exc.errno == errno.EADDRINUSE:
        busy = " or ".join(str(p) for p in (args.port, args.cdn_port) if p)
        fix = "use --port 0" if not args.cdn_port else "use --port 0 --cdn-port 0"
        return f"doitong-sandbox: port {busy} on {args.host} is busy; {fix} (any free port) or another port"
    return f"doitong-sandbox: cannot listen on {args.host} with {' and '.join(ports)}: {exc.strerror or exc}"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = _parser().parse_args(argv)
    if args.reset:
        print(_reset(args.state or str(user_state_dir())))
        return
    _checked(args)
    rates = {kind: getattr(args, kind) for kind in KINDS}
    if args.fault_rate is not None:
        rates["error_5xx"] = args.fault_rate
    try:
        faults = Faults(
            **rates,
            slow_seconds=args.slow_seconds,
            queue_seconds=args.queue_seconds,
            rate_limit_seconds=args.rate_limit_seconds,
            seed=args.fault_seed,
        )
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"doitong-sandbox: {exc}") from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sandbox = Sandbox(
        plan=args.plan,
        credits=args.credits,
        speed=args.speed,
        faults=faults,
        host=args.host,
        port=args.port,
        cdn_port=args.cdn_port,
        api_key=args.api_key,
        dialect=args.dialect,
        state_dir=args.state,
    )
    try:
        sandbox.start()
    except (StateInUse, ValueError) as exc:
        raise SystemExit(f"doitong-sandbox: {exc}") from None
    except OSError as exc:
        raise SystemExit(_bind_failure(exc, args)) from None
    except RuntimeError as exc:  # a server that bound its port but did not come up
        raise SystemExit(f"doitong-sandbox: {exc}") from None
    try:
        for name, value in (
            ("base_url", sandbox.base_url),
            ("cdn_url", sandbox.cdn_url),
            ("api_key", sandbox.api_key),
            ("webhook_secret", sandbox.webhook_secret),
        ):
            print(f"{name}={value}", flush=True)
        stop.wait()
    finally:
        sandbox.stop()


if __name__ == "__main__":
    main()
