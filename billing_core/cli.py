"""billingctl: the operator's command line over the same database the daemon uses."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

from billing_core.errors import UserError
from billing_core.money import parse_amount

CONFIG_HELP = "config file (default: $RADIUSD_CONFIG, else config/radiusd.toml)"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _database_url(config_arg: str | None) -> str:
    """The database URL from the config file (CONTRACT §1: --config, $RADIUSD_CONFIG, default).

    billingctl reads only [database] url (and RADIUSD_DATABASE_URL); the daemon validates the
    rest. A missing default file means the packaged default (the embedded SQLite database).
    """
    import tomllib

    env_url = os.environ.get("RADIUSD_DATABASE_URL")
    path_text = config_arg or os.environ.get("RADIUSD_CONFIG") or None
    path = Path(path_text) if path_text else Path("config/radiusd.toml")
    document: dict[str, Any] = {}
    if path.exists() or path_text:
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UserError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{path}: invalid TOML: {exc}") from None
    if env_url is not None:
        return env_url
    database = document.get("database", {})
    url = database.get("url", "sqlite:///var/billing.db") if isinstance(database, dict) else None
    if not isinstance(url, str) or not url:
        raise UserError(f"{path}: database.url: expected a database URL")
    return url


def _engine(args: argparse.Namespace) -> Any:
    from billing_core.adapters.db import make_engine

    return make_engine(_database_url(args.config))


def _print(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str]) -> None:
    if fmt == "json":
        print(json.dumps(list(rows), indent=2, default=str))
        return
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
        print(buffer.getvalue(), end="")
        return
    table = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _print_one(row: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(row, indent=2, default=str))
        return
    width = max(len(k) for k in row)
    for key, value in row.items():
        shown = (
            ", ".join(f"{k}={v}" for k, v in value.items())
            if isinstance(value, dict)
            else _cell(value)
        )
        print(f"{key.ljust(width)}  {shown}")


# --- commands ----------------------------------------------------------------------------
def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from billing_core.adapters.db import current_revision, upgrade

    engine = _engine(args)
    upgrade(engine)
    print(f"database at revision {current_revision(engine)}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from billing_core.provisioning import ProvisioningError
    from billing_core.provisioning_file import load_provisioning_file

    try:
        spec = load_provisioning_file(Path(args.file))
    except ProvisioningError as exc:
        raise UserError(str(exc)) from None
    if args.dry_run:
        print(
            f"{args.file}: valid ({len(spec.rate_tables)} rate tables, "
            f"{sum(len(t.rates) for t in spec.rate_tables)} rates, {len(spec.clients)} clients)"
        )
        return 0
    from billing_core.adapters.admin import apply_provisioning

    counts = apply_provisioning(_engine(args), spec)
    print("loaded " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    return 0


CLIENT_COLUMNS = (
    "id",
    "name",
    "status",
    "available_balance",
    "live_balance",
    "fixed_balance",
    "payment_terms",
    "tags",
    "reseller",
)


def cmd_clients_show(args: argparse.Namespace) -> int:
    from billing_core.adapters.admin import client_summary

    _print_one(client_summary(_engine(args), args.client), args.format)
    return 0


def cmd_clients_list(args: argparse.Namespace) -> int:
    from billing_core.adapters.admin import list_clients

    rows = list_clients(
        _engine(args), name=args.name, email=args.email, status=args.status, tag=args.tag
    )
    _print(rows, args.format, CLIENT_COLUMNS)
    return 0


def cmd_payments_add(args: argparse.Namespace) -> int:
    from billing_core.adapters.admin import add_payment

    summary = add_payment(_engine(args), args.client, args.amount, args.note or "")
    kind = "payment" if args.amount >= 0 else "charge"
    print(
        f"{kind} of {args.amount} recorded for {summary['name']}; "
        f"live balance {summary['live_balance']}"
    )
    return 0


def cmd_sessions_list(args: argparse.Namespace) -> int:
    from billing_core.adapters.admin import list_sessions

    columns = ("acct_session_id", "client", "nas", "called", "state", "granted_seconds", "held")
    _print(list_sessions(_engine(args), args.client), args.format, columns)
    return 0


def cmd_cdrs_list(args: argparse.Namespace) -> int:
    from billing_core.adapters.admin import list_cdrs

    columns = (
        "id",
        "acct_session_id",
        "client",
        "called",
        "duration",
        "billed_duration",
        "cost",
        "closed_by",
        "stopped_at",
    )
    _print(list_cdrs(_engine(args), args.client), args.format, columns)
    return 0


def cmd_settings_show(args: argparse.Namespace) -> int:
    from billing_core.adapters.admin import show_settings

    for name, value in show_settings(_engine(args), {"max_call_length": "(config file)"}).items():
        print(f"{name} = {value}")
    return 0


def cmd_settings_set(args: argparse.Namespace) -> int:
    from billing_core.adapters.admin import update_setting

    if args.name != "max_call_length":
        raise UserError(f"unknown setting {args.name!r} (known: max_call_length)")
    value = args.value.strip()
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"max_call_length: must be a whole number >= 1, got {args.value!r}")
    update_setting(_engine(args), "max_call_length", str(int(value)))
    print(f"max_call_length = {int(value)}")
    return 0


# --- parser ------------------------------------------------------------------------------
def _amount(text: str) -> Decimal:
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add(sub: Any, name: str, text: str, fn: Callable[[argparse.Namespace], int]) -> Any:
    parser = sub.add_parser(name, help=text, description=text)
    parser.set_defaults(func=fn)
    return parser


def _format(parser: Any, choices: Sequence[str]) -> None:
    parser.add_argument("--format", choices=choices, default="table", help="output format")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="billingctl", description="Operate the VoIP billing database")
    parser.add_argument("--config", help=CONFIG_HELP)
    groups = parser.add_subparsers(dest="group", required=True, parser_class=_Parser)

    db = groups.add_parser("db", help="schema", description="database schema")
    db_sub = db.add_subparsers(dest="action", required=True, parser_class=_Parser)
    _add(db_sub, "upgrade", "apply schema migrations (idempotent)", cmd_db_upgrade)

    load = _add(groups, "load", "apply a provisioning file (YAML or JSON)", cmd_load)
    load.add_argument("file")
    load.add_argument("--dry-run", action="store_true", help="validate only")

    clients = groups.add_parser("clients", help="clients", description="clients")
    c_sub = clients.add_subparsers(dest="action", required=True, parser_class=_Parser)
    show = _add(c_sub, "show", "one client with its balances", cmd_clients_show)
    show.add_argument("client", metavar="NAME_OR_ID")
    _format(show, ("table", "json"))
    lst = _add(c_sub, "list", "search clients", cmd_clients_list)
    lst.add_argument("--name", help="name by first letters")
    lst.add_argument("--email", help="main e-mail, * as wildcard")
    lst.add_argument("--status", choices=("active", "stop", "deleted", "all"), default="active")
    lst.add_argument("--tag")
    _format(lst, ("table", "json", "csv"))

    payments = groups.add_parser("payments", help="payments", description="payments")
    p_sub = payments.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add = _add(p_sub, "add", "a payment (positive) or charge (negative)", cmd_payments_add)
    add.add_argument("client", metavar="CLIENT")
    add.add_argument("amount", metavar="AMOUNT", type=_amount)
    add.add_argument("--note")

    sessions = groups.add_parser("sessions", help="active calls", description="calls in progress")
    s_sub = sessions.add_subparsers(dest="action", required=True, parser_class=_Parser)
    s_list = _add(s_sub, "list", "calls in progress", cmd_sessions_list)
    s_list.add_argument("--client")
    _format(s_list, ("table", "json"))

    cdrs = groups.add_parser("cdrs", help="rated calls", description="rated calls")
    d_sub = cdrs.add_subparsers(dest="action", required=True, parser_class=_Parser)
    d_list = _add(d_sub, "list", "rated calls", cmd_cdrs_list)
    d_list.add_argument("--client")
    _format(d_list, ("table", "json", "csv"))

    settings = groups.add_parser("settings", help="database settings", description="settings")
    st_sub = settings.add_subparsers(dest="action", required=True, parser_class=_Parser)
    _add(st_sub, "show", "print one `name = value` line each", cmd_settings_show)
    st_set = _add(st_sub, "set", "set a setting", cmd_settings_set)
    st_set.add_argument("name", choices=("max_call_length",))
    st_set.add_argument("value", metavar="SECONDS")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"billingctl: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
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
        raise


if __name__ == "__main__":
    sys.exit(main())
