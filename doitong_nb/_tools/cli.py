"""`doitong-nb`: the command line (`doitong-nb doctor`, `verify`, `export`, `quote`, `prices`, `config`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from doitong_nb import _contract as contract
from doitong_nb._core import i18n
from doitong_nb._core.arguments import ArgumentParser
from doitong_nb._core.env import ENV_BASE_URL, ENV_OUTPUT_DIR
from doitong_nb._core.errors import DoitongError, InvalidRequestError
from doitong_nb._core.i18n import _
from doitong_nb._core.settings import help_for
from doitong_nb._runtime import config_file
from doitong_nb._runtime.settings import value_of

NOTEBOOK, LOCK_FILE = "NOTEBOOK.ipynb", "LOCK_FILE"  # placeholders in usage lines (identifiers in any language)


def parser() -> ArgumentParser:
    """The command line, in the language chosen (its help, and argparse's own words: _core/arguments.py)."""
    parser = ArgumentParser(prog="doitong-nb", description=_("doitong-nb tools"))
    sub = parser.add_subparsers(required=True)  # no dest: a missing command is named by its choices
    doc = sub.add_parser(
        "doctor", help=_("check the configured service against the contract, one line per assumption; spends no credit")
    )
    doc.set_defaults(run=_doctor)
    doc.add_argument("--base-url", help=_("default: {variable}, else the production API").format(variable=ENV_BASE_URL))
    doc.add_argument("--transport", choices=contract.TRANSPORTS)
    doc.add_argument("--output-dir", help=_("where the client keeps its journal and what it discovered"))
    doc.add_argument("--status-query", help=_("the status query you named, e.g. getJob(jobId)"))
    doc.add_argument("--plan", choices=list(contract.PLANS), help=_("the plan you pay for"))
    ver = sub.add_parser(
        "verify", help=_("every image the notebooks show is in the lock file and the store, with its sha256")
    )
    ver.set_defaults(run=_verify)
    ver.add_argument(
        "notebooks", nargs="*", metavar=NOTEBOOK, help=_("notebooks to check (none: every image the lock records)")
    )
    ver.add_argument(
        "--output-dir",
        help=_("folder or store URL (default: DOITONG_OUTPUT_DIR, else flux_outputs beside each notebook)"),
    )
    ver.add_argument("--lock", metavar=LOCK_FILE, help=_("the lock file (default: beside the output folder)"))
    exp = sub.add_parser("export", help=_("an RO-Crate of a notebook, its images and lock file"))
    exp.set_defaults(run=_export)
    exp.add_argument("notebook", metavar=NOTEBOOK, help=_("the notebook to export"))
    exp.add_argument("--ro-crate", required=True, metavar="DIR|ZIP", help=_("a folder, or a file ending in .zip"))
    exp.add_argument("--output-dir", help=_("folder or store URL (default as for verify)"))
    exp.add_argument("--lock", metavar=LOCK_FILE, help=_("the lock file (default: beside the output folder)"))
    quo = sub.add_parser(
        "quote",
        help=_("what Run All of a notebook would cost now, from its %%%%flux and %%flux cells; nothing is sent"),
    )
    quo.set_defaults(run=_quote)
    quo.add_argument("notebook", metavar=NOTEBOOK)
    quo.add_argument(
        "--output-dir",
        help=_("folder or store URL (default: DOITONG_OUTPUT_DIR, else flux_outputs beside the notebook)"),
    )
    sub.add_parser("prices", help=_("the price table: credits an image of each size costs")).set_defaults(run=_prices)
    con = sub.add_parser(
        "config",
        help=_("show the settings file, or set one of its settings (language, output_dir, timeout...)"),
    )
    con.set_defaults(run=_config)
    con.add_argument("name", nargs="?", metavar="NAME", help=_("a setting; none: list them all"))
    con.add_argument("value", nargs="?", metavar="VALUE", help=_("its new value; none: show it"))
    con.add_argument("--unset", action="store_true", help=_("remove the setting from the file"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """The language is chosen first (the settings file, DOITONG_LANG, else the locale), so the help is in it too.
    A settings file the language cannot be read from fails every command but `config`, which can set it right."""
    try:
        i18n.use(value_of("language"))
        unreadable = None
    except InvalidRequestError as exc:
        i18n.use(i18n.ENGLISH)
        unreadable = exc
    args = parser().parse_args(argv)
    if unreadable is not None and args.run is not _config:
        print(_("FAIL {error}").format(error=unreadable))
        return 2
    try:
        return args.run(args)
    except DoitongError as exc:
        print(_("FAIL {error}").format(error=exc))
        return 2


def _doctor(args: argparse.Namespace) -> int:
    from doitong_nb._runtime.client import Flux
    from doitong_nb._tools.doctor import run

    with Flux(
        base_url=args.base_url,
        transport=args.transport,
        output_dir=args.output_dir,
        status_query=args.status_query,
        plan=args.plan,
    ) as client:
        text, failed = run(client)
    print(text)
    return 1 if failed else 0


def _prices(args: argparse.Namespace) -> int:
    from doitong_nb._tools.quote import price_table

    print(price_table())
    return 0


def _verify(args: argparse.Namespace) -> int:
    from doitong_nb._tools.verify import verify

    checks = verify(args.output_dir, notebooks=args.notebooks or (), lock=args.lock)
    print(checks)
    return 0 if checks.ok else 1


def _quote(args: argparse.Namespace) -> int:
    """The notebook's kernel works in the notebook's folder: a relative output folder is found from there."""
    from doitong_nb._notebook.magics import notebook_quote
    from doitong_nb._runtime.client import Flux
    from doitong_nb._store.remote import is_url

    out = args.output_dir or os.environ.get(ENV_OUTPUT_DIR) or "flux_outputs"
    if not is_url(out):
        out = os.fspath(Path(args.notebook).parent / out)
    with Flux(output_dir=out) as client:
        quote = notebook_quote(client, args.notebook, None, client.settings.size)
    print(quote)
    return 0


def _export(args: argparse.Namespace) -> int:
    from doitong_nb._tools.export import export_ro_crate

    where, count = export_ro_crate(args.notebook, args.ro_crate, output_dir=args.output_dir, lock=args.lock)
    print(
        _("wrote an RO-Crate of {notebook} with {count} image(s) to {where}").format(
            notebook=args.notebook, count=count, where=where
        )
    )
    return 0


def _config(args: argparse.Namespace) -> int:
    """`doitong-nb config`: the file's settings, each with its help; `config NAME` one value; `config NAME VALUE`
    (or `--unset`) writes it. The file's own problems are said by reading it (config_file.py)."""
    if args.name is None:
        values = config_file.read()
        lines = [_("settings file: {path}").format(path=config_file.settings_file())]
        for name in config_file.FILE_SETTINGS:
            lines.append(f"{name} = {values[name]}" if name in values else _("{name} (unset)").format(name=name))
            lines.append("    " + help_for(name))
        print("\n".join(lines))
        return 0
    if args.unset or args.value is not None:
        path = config_file.write(args.name, None if args.unset else args.value)
        said = _("removed {name} from {path}") if args.unset else _("set {name} = {value} in {path}")
        print(said.format(name=args.name, value=args.value, path=path))
        return 0
    config_file.settable(args.name)
    value = config_file.read().get(args.name)
    print(value if value is not None else _("{name} (unset)").format(name=args.name))
    return 0 if value is not None else 1


if __name__ == "__main__":
    sys.exit(main())
