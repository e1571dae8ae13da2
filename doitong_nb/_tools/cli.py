"""`doitong-nb`: the command line (`doitong-nb doctor`, `verify`, `export`, `quote`, `prices`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from doitong_nb import _contract as contract
from doitong_nb._core import i18n
from doitong_nb._core.env import ENV_BASE_URL, ENV_OUTPUT_DIR
from doitong_nb._core.i18n import _


def main(argv: list[str] | None = None) -> int:
    """The language is chosen first (DOITONG_LANG, else the locale), so the help is in it too."""
    from doitong_nb._core.errors import InvalidRequestError
    from doitong_nb._runtime.settings import value_of

    try:
        i18n.use(value_of("language"))
    except InvalidRequestError as exc:
        print(_("FAIL {error}").format(error=exc))
        return 2
    parser = argparse.ArgumentParser(prog="doitong-nb", description=_("doitong-nb tools"))
    sub = parser.add_subparsers(dest="command", required=True)
    doc = sub.add_parser(
        "doctor", help=_("check the configured service against the contract, one line per assumption; spends no credit")
    )
    doc.add_argument("--base-url", help=_("default: {variable}, else the production API").format(variable=ENV_BASE_URL))
    doc.add_argument("--transport", choices=contract.TRANSPORTS)
    doc.add_argument("--output-dir", help=_("where the client keeps its journal and what it discovered"))
    doc.add_argument("--status-query", help=_("the status query you named, e.g. getJob(jobId)"))
    doc.add_argument("--plan", choices=list(contract.PLANS), help=_("the plan you pay for"))
    ver = sub.add_parser(
        "verify", help=_("every image the notebooks show is in the lock file and the store, with its sha256")
    )
    ver.add_argument("notebooks", nargs="*", help=_("notebooks to check (none: every image the lock records)"))
    ver.add_argument(
        "--output-dir",
        help=_("folder or store URL (default: DOITONG_OUTPUT_DIR, else flux_outputs beside each notebook)"),
    )
    ver.add_argument("--lock", help=_("the lock file (default: beside the output folder)"))
    exp = sub.add_parser("export", help=_("an RO-Crate of a notebook, its images and lock file"))
    exp.add_argument("notebook")
    exp.add_argument("--ro-crate", required=True, metavar="DIR|ZIP", help=_("a folder, or a file ending in .zip"))
    exp.add_argument("--output-dir", help=_("folder or store URL (default as for verify)"))
    exp.add_argument("--lock", help=_("the lock file (default: beside the output folder)"))
    quo = sub.add_parser(
        "quote",
        help=_("what Run All of a notebook would cost now, from its %%%%flux and %%flux cells; nothing is sent"),
    )
    quo.add_argument("notebook")
    quo.add_argument(
        "--output-dir",
        help=_("folder or store URL (default: DOITONG_OUTPUT_DIR, else flux_outputs beside the notebook)"),
    )
    sub.add_parser("prices", help=_("the price table: credits an image of each size costs"))
    args = parser.parse_args(argv)
    if args.command == "verify":
        return _verify(args)
    if args.command == "export":
        return _export(args)
    if args.command == "quote":
        return _quote(args)
    if args.command == "prices":
        from doitong_nb._tools.quote import price_table

        print(price_table())
        return 0
    from doitong_nb._core.errors import DoitongError
    from doitong_nb._runtime.client import Flux
    from doitong_nb._tools.doctor import run

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
        print(_("FAIL {error}").format(error=exc))
        return 2
    print(text)
    return 1 if failed else 0


def _verify(args: argparse.Namespace) -> int:
    from doitong_nb._core.errors import DoitongError
    from doitong_nb._tools.verify import verify

    try:
        checks = verify(args.output_dir, notebooks=args.notebooks or (), lock=args.lock)
    except DoitongError as exc:
        print(_("FAIL {error}").format(error=exc))
        return 2
    print(checks)
    return 0 if checks.ok else 1


def _quote(args: argparse.Namespace) -> int:
    """The notebook's kernel works in the notebook's folder: a relative output folder is found from there."""
    from doitong_nb._core.errors import DoitongError
    from doitong_nb._notebook.magics import notebook_quote
    from doitong_nb._runtime.client import Flux
    from doitong_nb._store.remote import is_url

    out = args.output_dir or os.environ.get(ENV_OUTPUT_DIR) or "flux_outputs"
    if not is_url(out):
        out = os.fspath(Path(args.notebook).parent / out)
    try:
        with Flux(output_dir=out) as client:
            quote = notebook_quote(client, args.notebook, None, client.settings.size)
    except DoitongError as exc:
        print(_("FAIL {error}").format(error=exc))
        return 2
    print(quote)
    return 0


def _export(args: argparse.Namespace) -> int:
    from doitong_nb._core.errors import DoitongError
    from doitong_nb._tools.export import export_ro_crate

    try:
        where, count = export_ro_crate(args.notebook, args.ro_crate, output_dir=args.output_dir, lock=args.lock)
    except DoitongError as exc:
        print(_("FAIL {error}").format(error=exc))
        return 2
    print(
        _("wrote an RO-Crate of {notebook} with {count} image(s) to {where}").format(
            notebook=args.notebook, count=count, where=where
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
