"""billingctl: the operator's command line over the same database the daemon uses.

Every list prints a table by default and ``--format json`` (one JSON document) or ``csv``
on request. Every change is validated with ``load``'s rules and refused with one line
naming the field (``billingctl: credit: must have at most 9 digits before the point``),
and recorded in the audit log with the OS user who made it.

This module is the parser's root and ``main`` (one line on stderr for every error the
operator can act on); each command group lives in ``billingctl.commands``.
"""

from __future__ import annotations

import argparse
import os
import sys

from billing_core.errors import UserError
from billing_core.pipes import quiet_broken_pipe
from billing_core.version import VersionAction
from billingctl import context
from billingctl.commands import accounts, calls, clients, db, explain, live, money, rates, settings
from billingctl.parsing import Parser

CONFIG_HELP = "config file (default: $RADIUSD_CONFIG, else config/radiusd.toml)"

#: The command groups, in the order ``billingctl --help`` lists them.
GROUPS = (db, clients, accounts, rates, money, explain, calls, settings, live)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="billingctl", description="Operate the VoIP billing database")
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--version", action=VersionAction)
    groups = parser.add_subparsers(dest="group", required=True, parser_class=Parser)
    for group in GROUPS:
        group.register(groups)
    return parser


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _complete(parser)
    args = parser.parse_args(argv)
    from billingctl.provisioning import ProvisioningError

    try:
        context.config(args.config)  # every command checks the whole file first, as radiusd does
        return int(args.func(args))
    except (UserError, ProvisioningError) as exc:
        print(f"billingctl: {exc}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, UserError) else 1
    except Exception as exc:
        code = _unreachable(exc)
        if code is None:
            raise
        return code
    finally:
        context.dispose(args)


def _complete(parser: argparse.ArgumentParser) -> None:
    """Answer a shell's completion request (argcomplete sets ``_ARGCOMPLETE``) and exit;
    otherwise return at once, without importing argcomplete."""
    if "_ARGCOMPLETE" in os.environ:
        import argcomplete

        argcomplete.autocomplete(parser)


def _unreachable(exc: Exception) -> int | None:
    """The one line for a database or Redis that failed the command (1), or None: a bug,
    left to raise."""
    from sqlalchemy.exc import OperationalError, SQLAlchemyError

    if isinstance(exc, OperationalError):
        message = str(exc.orig).strip().splitlines()[0] if exc.orig else "unreachable"
        print(f"billingctl: database unreachable: {message}", file=sys.stderr)
        return 1
    if isinstance(exc, SQLAlchemyError):
        print(
            f"billingctl: database error: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            file=sys.stderr,
        )
        return 1
    from billing_core.adapters.errors import unavailable

    if unavailable(exc) == "redis":
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
        print(f"billingctl: redis unreachable: {first}", file=sys.stderr)
        return 1
    return None


if __name__ == "__main__":
    sys.exit(main())
