"""The pieces every command group builds its parser from: the parser class (usage, then
one line), subcommand helpers, and the argument types whose messages are part of the
contract (``argparse.ArgumentTypeError`` text is what a usage error prints)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, NoReturn

from billing_core.domain.money import parse_amount

Command = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_command(sub: Any, name: str, text: str, fn: Command) -> Any:
    parser = sub.add_parser(name, help=text, description=text)
    parser.set_defaults(func=fn)
    return parser


def add_group(groups: Any, name: str, text: str) -> Any:
    parser = groups.add_parser(name, help=text, description=text)
    return parser.add_subparsers(dest="action", required=True, parser_class=Parser)


def add_format(parser: Any, choices: Sequence[str]) -> None:
    parser.add_argument("--format", choices=choices, default="table", help="output format")


# --- argument types --------------------------------------------------------------------------
def since(text: str) -> datetime:
    """A day (UTC midnight) or an ISO date-time (UTC when it names no zone)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date like 2026-01-31 or 2026-01-31T10:00:00Z: {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def amount(text: str) -> Decimal:
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date like 2026-01-31: {text!r}") from None


def yes_no(text: str) -> bool:
    words = {"yes": True, "true": True, "no": False, "false": False}
    try:
        return words[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}") from None


def positive(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)
