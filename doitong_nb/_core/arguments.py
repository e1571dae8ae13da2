"""argparse in the user's language: its own words ("usage:", "options", "show this help message and exit", "the
following arguments are required") as well as ours.

Why this way: argparse translates its words with `gettext.gettext` of the process's default domain, bound at its
import as `argparse._` (and `argparse.ngettext`), which reads the locale variables and knows nothing of the
`language` setting. Copying argparse's methods to change their strings would break with every Python release, and
binding a default domain would change every other argparse user of the process. So our catalog holds argparse's
msgids (listed below, as Python 3.10 to 3.13 write them), and `ArgumentParser` routes argparse's `_` through our
domain only while one of its own methods runs: building a parser (its headings and `-h`), formatting its help, and
parsing (its errors). Any other parser in the process keeps argparse's own words (but one parsing in another
thread at that very moment: argparse has one `_` for the process).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any, NoReturn

from doitong_nb._core import i18n
from doitong_nb._core.i18n import N_

# argparse's msgids that a user of our commands can meet (a wrong call of ours would meet the others, in English)
ARGPARSE_MESSAGES = (
    N_("usage: "),
    N_("positional arguments"),
    N_("options"),
    N_("optional arguments"),  # Python 3.10's heading for options
    N_("show this help message and exit"),
    N_("%(prog)s: error: %(message)s\n"),
    N_("argument %(argument_name)s: %(message)s"),
    N_("the following arguments are required: %s"),
    N_("invalid choice: %(value)r (choose from %(choices)s)"),
    N_("unrecognized arguments: %s"),
    N_("expected one argument"),
    N_("expected at most one argument"),
    N_("expected at least one argument"),
    N_("invalid %(type)s value: %(value)r"),
    N_("ambiguous option: %(option)s could match %(matches)s"),
    N_("ignored explicit argument %r"),
    N_("not allowed with argument %s"),
    N_("one of the arguments %s is required"),
    N_("unknown parser %(parser_name)r (choices: %(choices)s)"),
    N_("can't open '%(filename)s': %(error)s"),
)


def _argument_error_text(error: argparse.ArgumentError) -> str:
    """An ArgumentError's text with its "argument X:" from our catalog, as Python 3.11 on writes it (3.10 leaves
    that prefix untranslated)."""
    if error.argument_name is None:
        return error.message
    said = i18n._("argument %(argument_name)s: %(message)s")
    return said % {"argument_name": error.argument_name, "message": error.message}


@contextlib.contextmanager
def argparse_in_language() -> Iterator[None]:
    """argparse's words from our catalog, in the current language, for the duration of the block."""
    saved = argparse._, argparse.ngettext, argparse.ArgumentError.__str__  # type: ignore[attr-defined]
    argparse._, argparse.ngettext = i18n._, i18n.ngettext  # type: ignore[attr-defined]
    argparse.ArgumentError.__str__ = _argument_error_text  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse._, argparse.ngettext, argparse.ArgumentError.__str__ = saved  # type: ignore[attr-defined]


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose own words follow the `language` setting (its subcommands' parsers are of this class
    too: argparse makes them with the class of their parent)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with argparse_in_language():
            super().__init__(*args, **kwargs)

    def format_usage(self) -> str:
        with argparse_in_language():
            return super().format_usage()

    def format_help(self) -> str:
        with argparse_in_language():
            return super().format_help()

    def parse_args(self, *args: Any, **kwargs: Any) -> Any:  # its "unrecognized arguments" is its own
        with argparse_in_language():
            return super().parse_args(*args, **kwargs)

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        with argparse_in_language():
            return super().parse_known_args(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        with argparse_in_language():
            super().error(message)
