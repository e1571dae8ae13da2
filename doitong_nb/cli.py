"""`doitong-nb`: the command line (`doitong-nb doctor`)."""

from __future__ import annotations

import argparse
import sys

from . import contract


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="doitong-nb", description="doitong-nb tools")
    sub = parser.add_subparsers(dest="command", required=True)
    doc = sub.add_parser(
        "doctor", help="check the configured service against the contract, one line per assumption; spends no credit"
    )
    doc.add_argument("--base-url", help=f"default: {contract.ENV_BASE_URL}, else the production API")
    doc.add_argument("--transport", choices=("graphql", "rest"))
    doc.add_argument("--output-dir", help="where the client keeps its journal and what it discovered")
    doc.add_argument("--status-query", help="the status query you named, e.g. getJob(jobId)")
    doc.add_argument("--plan", choices=list(contract.PLANS), help="the plan you pay for")
    args = parser.parse_args(argv)
    from .client import Flux
    from .doctor import run
    from .errors import DoitongError

    try:
        with Flux(
            base_url=args.base_url,
            transport=args.transport,
            output_dir=args.output_dir,
            status_query=args.status_query,
            plan=args.plan,
        ) as client:
            text, failed = run(client)
    except DoitongError as exc:
        print(f"FAIL {exc}")
        return 2
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
