"""billingctl: the operator's command line over the same database the daemon uses.

Every list prints a table by default and ``--format json`` (one JSON document) or ``csv``
on request. Every change is validated with ``load``'s rules and refused with one line
naming the field (``billingctl: credit: must have at most 9 digits before the point``),
and recorded in the audit log with the OS user who made it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from billing_core.domain.money import parse_amount
from billing_core.errors import ConfigFileError, UserError
from billing_core.pipes import quiet_broken_pipe
from billing_core.version import package_version
from billingctl.provisioning import RATE_COLUMNS

if TYPE_CHECKING:
    from billing_core.config import Config
    from billing_core.ports import LiveState
    from billingctl.adapters.admin_clients import TagChange
    from billingctl.adapters.audit import AuditContext

CONFIG_HELP = "config file (default: $RADIUSD_CONFIG, else config/radiusd.toml)"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _config(config_arg: str | None) -> Config:
    """The config file (CONTRACT §1: --config, $RADIUSD_CONFIG, default), read and validated
    by the daemon's own loader and rules (billing_core.config); NAS secrets are not read."""
    from billing_core.config import ConfigError, load_config, resolve_config_path

    try:
        return load_config(resolve_config_path(config_arg, os.environ), resolve_secrets=False)
    except ConfigError as exc:
        raise ConfigFileError(str(exc)) from None


def _database_url(config_arg: str | None) -> str:
    """The database URL: $RADIUSD_DATABASE_URL, else [database] url, else the embedded default."""
    return _config(config_arg).database.url.reveal()


def _redis_url(config_arg: str | None) -> str:
    """The Redis URL of the live state: $RADIUSD_REDIS_URL, else [redis] url; empty: none."""
    return _config(config_arg).redis.url.reveal()


def _redis_cluster(config_arg: str | None) -> bool:
    """Whether the Redis URL names a node of a Redis Cluster ([redis] cluster)."""
    return _config(config_arg).redis.cluster


def _cipher(args: argparse.Namespace) -> Any:
    """The server key's cipher for account secrets (a keyless one when none is set), from
    the config's [security] section as the daemon reads it."""
    from billing_core.adapters.secretbox import cipher_for

    key = _config(args.config).security.secrets_key
    return cipher_for(key.reveal() if key is not None else None)


def _mail_enabled(config_arg: str | None) -> bool:
    """Whether low-balance e-mail is on: [smtp] host (or $RADIUSD_SMTP_HOST) not empty."""
    return bool(_config(config_arg).smtp.host.strip())


def _check_notifications(args: argparse.Namespace, client_ids: Sequence[int]) -> None:
    """After money moved: fire or re-arm the clients' low-balance notifications (decided in
    the database, so the daemon doing the same at the same time changes nothing)."""
    if not client_ids:
        return
    from billing_core.adapters.sql_notify import check_notifications
    from billing_core.adapters.sql_store import SqlStore, utcnow

    live: LiveState = _live(args) or SqlStore(_engine(args))
    views = live.view(list(dict.fromkeys(client_ids)), utcnow())
    check_notifications(_engine(args), views, mail_enabled=_mail_enabled(args.config))


def _engine(args: argparse.Namespace) -> Any:
    """The command's engine (one per run; ``main`` disposes it)."""
    engine = getattr(args, "_engine", None)
    if engine is None:
        from billing_core.adapters.db import make_engine

        engine = make_engine(_database_url(args.config))
        args._engine = engine
    return engine


def _live(args: argparse.Namespace) -> LiveState | None:
    """The daemon's live state when it is kept in Redis (None: the database is the live
    state, which every command already reads and writes)."""
    url = _redis_url(args.config)
    if not url:
        return None
    from billingctl.adapters.live_admin import open_live

    return open_live(_engine(args), url, cluster=_redis_cluster(args.config))


def _payments_made(live: LiveState | None, moved: Sequence[tuple[int, Decimal, int]]) -> None:
    """After the ledger committed: move the live balances in Redis too (CONTRACT §2)."""
    if live is None or not moved:
        return
    from billingctl.adapters.live_admin import payment_made

    for client_id, amount, seq in moved:
        payment_made(live, client_id, amount, seq)
    if getattr(live, "missed", False):
        print(
            "billingctl: warning: redis: the live state missed this change (unreachable);"
            " it is in the database, and a running daemon brings it to Redis when Redis"
            " answers again",
            file=sys.stderr,
        )


def _audit(args: argparse.Namespace) -> AuditContext:
    """Who runs which command, for the audit log."""
    from billingctl.adapters.audit import AuditContext

    action = getattr(args, "action", None)
    return AuditContext(f"{args.group} {action}" if action else str(args.group))


def _csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def _print(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str]) -> None:
    if fmt == "json":
        print(json.dumps(list(rows), indent=2, default=str))
        return
    if fmt == "csv":
        print(_csv_text(rows, columns), end="")
        return
    table = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _write_csv(path: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    try:
        Path(path).write_text(_csv_text(rows, columns), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror or exc}") from None


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
        shown = _cell(value)
        if isinstance(value, dict):
            shown = ", ".join(
                f"{k}=({' '.join(f'{a}={_cell(b)}' for a, b in v.items())})"
                if isinstance(v, dict)
                else f"{k}={v}"
                for k, v in value.items()
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
    from billingctl.progress import for_terminal
    from billingctl.provisioning import ProvisioningError
    from billingctl.provisioning_file import load_provisioning_file

    progress = for_terminal(f"load {Path(args.file).name}", unit="rates and clients")
    with progress:
        progress.stage("reading and validating the file")
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
    from billingctl.adapters.admin import LiveMove, apply_provisioning

    moved: list[LiveMove] = []
    progress.total = sum(len(t.rates) for t in spec.rate_tables) + len(spec.clients)
    progress.stage("")
    with progress:
        counts = apply_provisioning(
            _engine(args),
            spec,
            _audit(args),
            payments_applied=moved,
            cipher=_cipher(args),
            progress=progress,
        )
    _payments_made(_live(args), moved)
    _check_notifications(args, [client_id for client_id, _amount, _seq in moved])
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
#: Printed too by ``list --format csv`` (the table and ``export`` keep their columns).
NOTIFY_COLUMNS = ("notify_client_below", "notify_admin_below")


def cmd_clients_show(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import client_summary

    _print_one(client_summary(_engine(args), args.client, live=_live(args)), args.format)
    return 0


def _client_filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": args.name,
        "email": args.email,
        "status": args.status,
        "tag": args.tag,
        "reseller": args.reseller,
    }


def cmd_clients_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import list_clients

    rows = list_clients(_engine(args), **_client_filters(args), live=_live(args))
    _print(
        rows,
        args.format,
        (*CLIENT_COLUMNS, *NOTIFY_COLUMNS) if args.format == "csv" else CLIENT_COLUMNS,
    )
    return 0


def cmd_clients_export(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import list_clients

    rows = list_clients(_engine(args), **_client_filters(args), live=_live(args))
    _write_csv(args.file, rows, CLIENT_COLUMNS)
    print(f"exported {len(rows)} clients to {args.file}")
    return 0


# Client fields as options: (field, metavar, help). Values are checked by
# billingctl.provisioning.validate_client_fields; an empty value clears an optional field.
CLIENT_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("status", "STATUS", "active, stop or deleted"),
    ("currency", "CODE", "3-letter currency code (default USD)"),
    ("timezone", "ZONE", "IANA time zone (default UTC)"),
    ("locale", "TAG", 'language tag sent as h323-preferred-lang, e.g. "es"'),
    ("bill_events_by", "EVENT", "setup, connect or disconnect (default)"),
    ("postpaid", "yes|no", "postpaid: granted max_call_length, no funds checked"),
    ("credit", "AMOUNT", "allowed credit, may be negative, at most 9 digits before the point"),
    ("rate_table", "TABLE", "origination rate table (must exist)"),
    ("capacity", "N", "concurrent calls (empty: unlimited)"),
    ("low_balance_threshold", "AMOUNT", "below this available balance ..."),
    ("low_balance_capacity", "N", "... this capacity applies"),
    ("notify_client_below", "AMOUNT", "e-mail the billing address below this available balance"),
    ("notify_admin_below", "AMOUNT", "a low_balance event below this available balance"),
    ("reseller", "NAME", "reseller"),
    ("tax_profile", "NAME", "tax profile name"),
    ("payment_terms", "TEXT", "payment terms"),
    ("hidden_numbers", "yes|no", "hide numbers in the client's CDRs"),
    ("autoinvoicing", "yes|no", "invoice automatically"),
    ("last_invoiced", "DATE", "last day invoiced (YYYY-MM-DD)"),
    ("company_name", "TEXT", "company name"),
    ("main_email", "EMAIL", "main e-mail (Latin characters only)"),
    ("billing_email", "EMAIL", "billing e-mail (Latin characters only)"),
    ("rates_email", "EMAIL", "rates e-mail (Latin characters only)"),
    ("address", "TEXT", "address"),
    ("zip_code", "TEXT", "zip code"),
    ("tax_id", "TEXT", "tax ID"),
    ("registration_id", "TEXT", "registration ID"),
    ("account_details", "TEXT", "bank account details"),
)


def _add_client_options(parser: Any, *, template: bool = False) -> None:
    group = parser.add_argument_group(
        "client fields" if not template else "template fields",
        "an empty value (--capacity '') clears an optional field"
        if not template
        else "an empty value makes a field not set by the template",
    )
    for name, metavar, text in CLIENT_OPTIONS:
        if template and name == "last_invoiced":
            continue
        group.add_argument(
            "--" + name.replace("_", "-"), dest=name, metavar=metavar, help=text, default=None
        )


def _add_tag_options(parser: Any, *, edit: bool) -> None:
    if not edit:
        parser.add_argument("--tag", action="append", metavar="TAG", help="a tag (repeat for more)")
        return
    parser.add_argument(
        "--tag", action="append", metavar="TAG", help="the tags become exactly these (repeat)"
    )
    parser.add_argument("--add-tag", action="append", metavar="TAG", help="add a tag (repeat)")
    parser.add_argument(
        "--remove-tag", action="append", metavar="TAG", help="remove a tag (repeat)"
    )
    parser.add_argument("--no-tags", action="store_true", help="remove every tag")


def _client_fields(args: argparse.Namespace, *, template: bool = False) -> dict[str, object]:
    from billingctl.provisioning import validate_client_fields

    given = {
        name: getattr(args, name)
        for name, _metavar, _text in CLIENT_OPTIONS
        if getattr(args, name, None) is not None
    }
    return validate_client_fields(given, clear_any=template)


def _tags(values: Sequence[str] | None) -> tuple[str, ...] | None:
    from billingctl.provisioning import check_tags

    return None if values is None else check_tags(values)


def _tag_change(args: argparse.Namespace) -> TagChange:
    from billingctl.adapters.admin_clients import TagChange

    replace = _tags(args.tag)
    if args.no_tags:
        if replace:
            raise UserError("--no-tags: not together with --tag")
        replace = ()
    return TagChange(
        replace=replace, add=_tags(args.add_tag) or (), remove=_tags(args.remove_tag) or ()
    )


def _client_name(value: str) -> str:
    from billingctl.provisioning import check_text

    return check_text(value, "name")


def cmd_clients_add(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import add_client

    client = add_client(
        _engine(args),
        _client_name(args.client),
        _client_fields(args),
        tags=_tags(args.tag),
        template=args.template,
        audit=_audit(args),
    )
    print(f"client {client['name']} added (id {client['id']})")
    return 0


def _nothing_given(fields: dict[str, object], tags: TagChange, *extra: object) -> bool:
    return not fields and not tags and all(e is None for e in extra)


def cmd_clients_edit(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import edit_client

    return _edit(args, "client", args.client, edit_client, template=False)


def cmd_clients_mass_edit(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import mass_edit_clients

    fields, tags = _client_fields(args), _tag_change(args)
    if _nothing_given(fields, tags):
        raise UserError("nothing to change: give a field option (see --help)")
    results = mass_edit_clients(_engine(args), args.ids, fields, tags=tags, audit=_audit(args))
    changed = [name for name, fields_changed in results if fields_changed]
    print(
        f"{len(changed)} of {len(results)} clients updated"
        + (f": {', '.join(changed)}" if changed else "")
    )
    return 0


def cmd_clients_delete(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import delete_client

    name, stopped = delete_client(_engine(args), args.client, audit=_audit(args))
    if stopped == 0:
        print(f"client {name} is deleted; authorization rejects its calls")
    else:
        print(
            f"client {name} deleted: its {stopped} account(s) stay but no longer originate"
            " or terminate; authorization rejects its calls"
        )
    return 0


def cmd_clients_full_delete(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import full_delete_client

    if not args.yes:
        raise UserError(
            f"--yes: required to remove client {args.client!r} and everything it owns"
            " (accounts, transactions, invoices, CDRs) for good"
        )
    removed = full_delete_client(_engine(args), args.client, audit=_audit(args), live=_live(args))
    name = removed.pop("name")
    print(
        f"client {name} removed for good with "
        + ", ".join(f"{count} {what}" for what, count in removed.items())
    )
    return 0


# --- templates ----------------------------------------------------------------------------
TEMPLATE_COLUMNS = (
    "id",
    "name",
    "status",
    "currency",
    "rate_table",
    "credit",
    "capacity",
    "postpaid",
    "payment_terms",
    "reseller",
    "tags",
)


def cmd_templates_add(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import add_template

    shown = add_template(
        _engine(args),
        _client_name(args.template),
        _client_fields(args, template=True),
        tags=_tags(args.tag),
        audit=_audit(args),
    )
    print(f"template {shown['name']} added (id {shown['id']})")
    return 0


def cmd_templates_edit(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import edit_template

    return _edit(args, "template", args.template, edit_template, template=True)


def _edit(
    args: argparse.Namespace, kind: str, target: str, edit: Callable[..., Any], *, template: bool
) -> int:
    """`clients edit` and `templates edit`: the same options, the same answer."""
    fields, tags = _client_fields(args, template=template), _tag_change(args)
    new_name = None if args.name is None else _client_name(args.name)
    if _nothing_given(fields, tags, new_name):
        raise UserError("nothing to change: give a field option (see --help)")
    shown, changed = edit(
        _engine(args), target, fields, new_name=new_name, tags=tags, audit=_audit(args)
    )
    what = f"updated: {', '.join(changed)}" if changed else "unchanged"
    print(f"{kind} {shown['name']} {what}")
    return 0


def cmd_templates_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import list_templates

    columns = (*TEMPLATE_COLUMNS, *NOTIFY_COLUMNS) if args.format == "csv" else TEMPLATE_COLUMNS
    _print(list_templates(_engine(args)), args.format, columns)
    return 0


def cmd_templates_show(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import show_template

    _print_one(show_template(_engine(args), args.template), args.format)
    return 0


def cmd_templates_delete(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import delete_template

    delete_template(_engine(args), args.template, audit=_audit(args))
    print(f"template {args.template} deleted (clients made from it keep their values)")
    return 0


# --- accounts -----------------------------------------------------------------------------
ACCOUNT_COLUMNS = (
    "id",
    "name",
    "client",
    "ident",
    "value",
    "tech_prefix",
    "password",
    "auth_methods",
    "enabled",
    "originate",
    "terminate",
)


def _password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    value: str | None = args.password
    return value


def cmd_accounts_add(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_accounts import add_account

    account = add_account(
        _engine(args),
        args.client,
        args.account,
        ident=args.ident,
        value=args.value,
        tech_prefix=args.tech_prefix,
        password=_password(args),
        auth_methods=args.auth_methods,
        enabled=not args.disabled,
        audit=_audit(args),
        cipher=_cipher(args),
    )
    print(f"account {account['name']} added to {account['client']}")
    return 0


def cmd_accounts_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_accounts import list_accounts

    _print(list_accounts(_engine(args), args.client), args.format, ACCOUNT_COLUMNS)
    return 0


def _set_enabled(args: argparse.Namespace, enabled: bool) -> int:
    from billingctl.adapters.admin_accounts import AccountChange, edit_account

    account, changed = edit_account(
        _engine(args), args.account, AccountChange(enabled=enabled), audit=_audit(args)
    )
    state = "enabled" if enabled else "disabled"
    print(f"account {account['name']} {state}" + ("" if changed else " already"))
    return 0


def cmd_accounts_edit(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_accounts import AccountChange, edit_account

    change = AccountChange(
        ident=args.ident,
        value=args.value,
        tech_prefix=args.tech_prefix,
        password=_password(args),
        clear_password=args.no_password,
        auth_methods=args.auth_methods,
        enabled=args.enabled,
        originate=args.originate,
        terminate=args.terminate,
        new_name=args.name,
    )
    if change == AccountChange():
        raise UserError("nothing to change: give an option (see --help)")
    account, changed = edit_account(
        _engine(args), args.account, change, audit=_audit(args), cipher=_cipher(args)
    )
    what = f"updated: {', '.join(changed)}" if changed else "unchanged"
    print(f"account {account['name']} {what}")
    return 0


def cmd_accounts_show(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_accounts import show_account

    _print_one(show_account(_engine(args), args.account), args.format)
    return 0


def cmd_security_rotate_key(args: argparse.Namespace) -> int:
    from billing_core.adapters.secretbox import KeySettingError, cipher_for, read_key_file
    from billingctl.adapters.account_secrets import rotate_key

    try:
        new_key = read_key_file(args.new_key_file, "--new-key-file")
    except KeySettingError as exc:
        raise UserError(str(exc)) from None
    count = rotate_key(_engine(args), _cipher(args), cipher_for(new_key))
    print(
        f"{count} account secrets re-encrypted under the new key; now point"
        " [security] secrets_key_file (or secrets_key_env) at it and send SIGHUP to radiusd"
    )
    return 0


def cmd_accounts_disable(args: argparse.Namespace) -> int:
    return _set_enabled(args, enabled=False)


def cmd_accounts_enable(args: argparse.Namespace) -> int:
    return _set_enabled(args, enabled=True)


def cmd_accounts_delete(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_accounts import delete_account

    client = delete_account(_engine(args), args.account, audit=_audit(args))
    print(f"account {args.account} of {client} deleted")
    return 0


# --- rates ----------------------------------------------------------------------------------


def cmd_rates_import(args: argparse.Namespace) -> int:
    from billingctl.adapters.rates_import import import_rates
    from billingctl.progress import count_lines, for_terminal

    progress = for_terminal(f"rates import {Path(args.file).name}")
    if progress.enabled and Path(args.file).is_file():
        progress.total = max(0, count_lines(args.file) - 1)  # the header
    with progress:
        result = import_rates(
            _engine(args),
            args.table,
            Path(args.file),
            mode=args.mode,
            currency=args.currency,
            audit=_audit(args),
            progress=progress,
        )
    print(
        f"{result['table']}: {result['rows']} rates from {result['file']} ({result['mode']}):"
        f" {result['added']} added, {result['updated']} updated, {result['removed']} removed;"
        f" {result['after']} rates now"
    )
    return 0


def cmd_rates_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.rates_import import list_rates

    _print(list_rates(_engine(args), args.table, args.code), args.format, RATE_COLUMNS)
    return 0


def cmd_rates_show(args: argparse.Namespace) -> int:
    from billingctl.adapters.rates_import import show_rate

    _print_one(show_rate(_engine(args), args.table, args.number), args.format)
    return 0


def cmd_rates_tables(args: argparse.Namespace) -> int:
    from billingctl.adapters.rates_import import list_rate_tables

    columns = ("id", "name", "currency", "rates", "clients")
    _print(list_rate_tables(_engine(args)), args.format, columns)
    return 0


# --- money ----------------------------------------------------------------------------------
def cmd_payments_add(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import LiveMove, add_payment

    live = _live(args)
    moved: list[LiveMove] = []
    summary = add_payment(
        _engine(args), args.client, args.amount, args.note or "", _audit(args), applied=moved
    )
    _payments_made(live, moved)
    _check_notifications(args, [summary["id"]])
    if live is not None:
        from billingctl.adapters.client_queries import client_summary

        summary = client_summary(_engine(args), str(summary["id"]), live=live)
    kind = "payment" if args.amount >= 0 else "charge"
    print(
        f"{kind} of {args.amount} recorded for {summary['name']}; "
        f"live balance {summary['live_balance']}"
    )
    return 0


TRANSACTION_COLUMNS = (
    "id",
    "created_at",
    "client",
    "kind",
    "amount",
    "note",
    "external_id",
    "cdr_id",
    "invoice_id",
)


def cmd_payments_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_money import list_transactions

    rows = list_transactions(_engine(args), client=args.client, kinds=("payment", "charge"))
    _print(rows, args.format, TRANSACTION_COLUMNS)
    return 0


def _transactions(args: argparse.Namespace) -> list[dict[str, Any]]:
    from billingctl.adapters.admin_money import KINDS, list_transactions

    return list_transactions(
        _engine(args),
        client=args.client,
        kinds=tuple(args.kind) if args.kind else KINDS,
        since=args.since,
        until=args.until,
    )


def cmd_transactions_list(args: argparse.Namespace) -> int:
    _print(_transactions(args), args.format, TRANSACTION_COLUMNS)
    return 0


def cmd_transactions_export(args: argparse.Namespace) -> int:
    rows = _transactions(args)
    _write_csv(args.file, rows, TRANSACTION_COLUMNS)
    print(f"exported {len(rows)} transactions to {args.file}")
    return 0


INVOICE_COLUMNS = (
    "id",
    "client",
    "period_start",
    "period_end",
    "charges",
    "total",
    "currency",
    "created_at",
)


def cmd_invoices_generate(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_money import generate_invoice

    invoice = generate_invoice(_engine(args), args.client, args.until, audit=_audit(args))
    period = f"{invoice['period_start'] or 'start'}..{invoice['period_end']}"
    print(
        f"invoice {invoice['id']} for {invoice['client']} ({period}): {invoice['charges']} call"
        f" charges, total {invoice['total']} {invoice['currency']}; last invoiced"
        f" {invoice['period_end']}; fixed balance {invoice['fixed_balance']}"
    )
    return 0


def cmd_invoices_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_money import list_invoices

    _print(list_invoices(_engine(args), args.client), args.format, INVOICE_COLUMNS)
    return 0


# --- calls, settings, audit -----------------------------------------------------------------
def cmd_sessions_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import list_sessions

    columns = ("acct_session_id", "client", "nas", "called", "state", "granted_seconds", "held")
    _print(list_sessions(_engine(args), args.client, live=_live(args)), args.format, columns)
    return 0


def cmd_cdrs_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import list_cdrs

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


def cmd_live_rebuild(args: argparse.Namespace) -> int:
    from billingctl.adapters.live_admin import rebuild
    from billingctl.progress import for_terminal

    url = _redis_url(args.config)
    with for_terminal("live rebuild", unit="clients") as progress:
        count = rebuild(_engine(args), url, cluster=_redis_cluster(args.config), progress=progress)
    if url:
        from billing_core.adapters.sql_notify import record_event

        record_event(_engine(args), "live_rebuilt", detail={"clients": count, "by": "billingctl"})
        print(f"live state rebuilt from the database: {count} clients")
    else:
        print("the live state is the database itself (no redis.url): nothing to rebuild")
    return 0


def cmd_live_verify(args: argparse.Namespace) -> int:
    from billing_core.domain.money import display
    from billingctl.adapters.live_admin import verify

    checked, drifts = verify(
        _engine(args), _redis_url(args.config), cluster=_redis_cluster(args.config)
    )
    rows = [
        {
            "client_id": d.client_id,
            "live_balance": display(d.live),
            "ledger_balance": display(d.ledger),
            "difference": display(d.difference),
        }
        for d in drifts
    ]
    if args.format == "json":
        print(json.dumps({"checked": checked, "drifts": rows}, indent=2))
    elif rows:
        _print(rows, "table", ("client_id", "live_balance", "ledger_balance", "difference"))
    else:
        print(f"{checked} clients checked: every live balance equals its ledger")
    return 1 if drifts else 0


def cmd_settings_show(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import show_settings

    for name, value in show_settings(_engine(args), {"max_call_length": "(config file)"}).items():
        print(f"{name} = {value}")
    return 0


def cmd_settings_set(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import update_setting

    if args.name != "max_call_length":
        raise UserError(f"unknown setting {args.name!r} (known: max_call_length)")
    value = args.value.strip()
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"max_call_length: must be a whole number >= 1, got {args.value!r}")
    update_setting(_engine(args), "max_call_length", str(int(value)), _audit(args))
    print(f"max_call_length = {int(value)}")
    return 0


AUDIT_COLUMNS = ("id", "at", "actor", "command", "entity", "name", "client", "changes")


def cmd_audit_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.audit import list_audit

    rows = list_audit(_engine(args), client=args.client, entity_type=args.entity, limit=args.limit)
    if args.format == "csv":
        rows = [
            {
                **row,
                "before": json.dumps(row["before"], sort_keys=True),
                "after": json.dumps(row["after"], sort_keys=True),
            }
            for row in rows
        ]
        _print(rows, "csv", (*AUDIT_COLUMNS, "before", "after"))
        return 0
    _print(rows, args.format, AUDIT_COLUMNS)
    return 0


EVENT_COLUMNS = ("id", "at", "kind", "client", "nas", "detail")


def cmd_events_list(args: argparse.Namespace) -> int:
    from billing_core.adapters.sql_notify import list_events

    rows = list_events(
        _engine(args), client=args.client, kind=args.kind, since=args.since, limit=args.limit
    )
    if args.format != "json":
        rows = [{**row, "detail": json.dumps(row["detail"], sort_keys=True)} for row in rows]
    _print(rows, args.format, EVENT_COLUMNS)
    return 0


MAIL_COLUMNS = ("id", "created_at", "client", "to", "status", "attempts", "sent_at", "subject")


def cmd_mail_list(args: argparse.Namespace) -> int:
    from billing_core.adapters.sql_notify import list_mail

    rows = list_mail(_engine(args), client=args.client, status=args.status, limit=args.limit)
    columns = (*MAIL_COLUMNS, "last_error") if args.format == "csv" else MAIL_COLUMNS
    _print(rows, args.format, columns)
    return 0


# --- parser ------------------------------------------------------------------------------
def _since(text: str) -> datetime:
    """A day (UTC midnight) or an ISO date-time (UTC when it names no zone)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date like 2026-01-31 or 2026-01-31T10:00:00Z: {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _amount(text: str) -> Decimal:
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date like 2026-01-31: {text!r}") from None


def _yes_no(text: str) -> bool:
    words = {"yes": True, "true": True, "no": False, "false": False}
    try:
        return words[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}") from None


def _positive(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def _add(sub: Any, name: str, text: str, fn: Callable[[argparse.Namespace], int]) -> Any:
    parser = sub.add_parser(name, help=text, description=text)
    parser.set_defaults(func=fn)
    return parser


def _format(parser: Any, choices: Sequence[str]) -> None:
    parser.add_argument("--format", choices=choices, default="table", help="output format")


def _group(groups: Any, name: str, text: str) -> Any:
    parser = groups.add_parser(name, help=text, description=text)
    return parser.add_subparsers(dest="action", required=True, parser_class=_Parser)


def _client_filter_options(parser: Any) -> None:
    parser.add_argument("--name", help="name by first letters")
    parser.add_argument("--email", help="main e-mail, * as wildcard")
    parser.add_argument("--status", choices=("active", "stop", "deleted", "all"), default="active")
    parser.add_argument("--tag")
    parser.add_argument("--reseller")


def _clients_parser(groups: Any) -> None:
    c_sub = _group(groups, "clients", "clients")
    show = _add(c_sub, "show", "one client with its balances", cmd_clients_show)
    show.add_argument("client", metavar="NAME_OR_ID")
    _format(show, ("table", "json"))
    lst = _add(c_sub, "list", "search clients", cmd_clients_list)
    _client_filter_options(lst)
    _format(lst, ("table", "json", "csv"))
    export = _add(
        c_sub, "export", "write the clients list, as filtered, to a CSV file", cmd_clients_export
    )
    export.add_argument("file", metavar="FILE.csv")
    _client_filter_options(export)

    add = _add(c_sub, "add", "a new client (from a template, if given)", cmd_clients_add)
    add.add_argument("client", metavar="NAME")
    add.add_argument("--template", metavar="T", help="take T's values for fields not given")
    _add_tag_options(add, edit=False)
    _add_client_options(add)

    edit = _add(c_sub, "edit", "change a client's fields", cmd_clients_edit)
    edit.add_argument("client", metavar="NAME_OR_ID")
    edit.add_argument("--name", metavar="NEW_NAME", help="rename the client")
    _add_tag_options(edit, edit=True)
    _add_client_options(edit)

    mass = _add(
        c_sub,
        "mass-edit",
        "the same change to many clients, in one transaction (all or none)",
        cmd_clients_mass_edit,
    )
    mass.add_argument("ids", metavar="ID", nargs="+", help="client ids (or names)")
    _add_tag_options(mass, edit=True)
    _add_client_options(mass)

    delete = _add(
        c_sub,
        "delete",
        "status deleted: calls rejected, accounts stop originating and terminating",
        cmd_clients_delete,
    )
    delete.add_argument("client", metavar="NAME_OR_ID")
    full = _add(
        c_sub,
        "full-delete",
        "remove the client and everything it owns, for good (needs --yes)",
        cmd_clients_full_delete,
    )
    full.add_argument("client", metavar="NAME_OR_ID")
    full.add_argument("--yes", action="store_true", help="yes, remove it for good")


def _templates_parser(groups: Any) -> None:
    t_sub = _group(groups, "templates", "client templates")
    add = _add(t_sub, "add", "a new client template", cmd_templates_add)
    add.add_argument("template", metavar="NAME")
    _add_tag_options(add, edit=False)
    _add_client_options(add, template=True)
    lst = _add(t_sub, "list", "client templates", cmd_templates_list)
    _format(lst, ("table", "json", "csv"))
    show = _add(t_sub, "show", "one client template", cmd_templates_show)
    show.add_argument("template", metavar="NAME")
    _format(show, ("table", "json"))
    edit = _add(t_sub, "edit", "change a template's fields", cmd_templates_edit)
    edit.add_argument("template", metavar="NAME")
    edit.add_argument("--name", metavar="NEW_NAME", help="rename the template")
    _add_tag_options(edit, edit=True)
    _add_client_options(edit, template=True)
    delete = _add(t_sub, "delete", "remove a template", cmd_templates_delete)
    delete.add_argument("template", metavar="NAME")


def _password_options(parser: Any, *, edit: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--password", help="login accounts only; hashed (pap) or encrypted (chap, digest)"
    )
    group.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (one line)"
    )
    if edit:
        group.add_argument("--no-password", action="store_true", help="remove the password")


def _methods_option(parser: Any) -> None:
    parser.add_argument(
        "--auth-methods",
        metavar="pap,chap,digest",
        help="how a login account's password may be proven (default pap); chap and digest"
        " keep it encrypted under [security] secrets_key_file",
    )


def _security_parser(groups: Any) -> None:
    s_sub = _group(groups, "security", "the server key of account secrets")
    rotate = _add(
        s_sub,
        "rotate-key",
        "re-encrypt every account secret under a new key, in one transaction",
        cmd_security_rotate_key,
    )
    rotate.add_argument(
        "--new-key-file", required=True, metavar="FILE", help="mode 0600, 64 hex digits"
    )


def _accounts_parser(groups: Any) -> None:
    a_sub = _group(groups, "accounts", "accounts: how a client's calls are recognized")
    add = _add(a_sub, "add", "a new account of a client", cmd_accounts_add)
    add.add_argument("client", metavar="CLIENT")
    add.add_argument("account", metavar="NAME")
    add.add_argument("--ident", required=True, choices=("login", "ip", "ani"))
    add.add_argument("--value", required=True, help="the login, IP address or number")
    add.add_argument("--tech-prefix", metavar="PREFIX")
    _password_options(add, edit=False)
    _methods_option(add)
    add.add_argument("--disabled", action="store_true", help="add it disabled")
    show = _add(a_sub, "show", "one account (never its password)", cmd_accounts_show)
    show.add_argument("account", metavar="NAME")
    _format(show, ("table", "json"))
    lst = _add(a_sub, "list", "accounts", cmd_accounts_list)
    lst.add_argument("--client")
    _format(lst, ("table", "json", "csv"))
    edit = _add(a_sub, "edit", "change an account", cmd_accounts_edit)
    edit.add_argument("account", metavar="NAME")
    edit.add_argument("--name", metavar="NEW_NAME", help="rename the account")
    edit.add_argument("--ident", choices=("login", "ip", "ani"))
    edit.add_argument("--value")
    edit.add_argument("--tech-prefix", metavar="PREFIX", help="'' removes it")
    _password_options(edit, edit=True)
    _methods_option(edit)
    for flag in ("enabled", "originate", "terminate"):
        edit.add_argument(f"--{flag}", type=_yes_no, metavar="yes|no")
    for name, text, fn in (
        ("disable", "stop recognizing the account (it stays)", cmd_accounts_disable),
        ("enable", "recognize the account again", cmd_accounts_enable),
        ("delete", "remove the account (its CDRs stay)", cmd_accounts_delete),
    ):
        parser = _add(a_sub, name, text, fn)
        parser.add_argument("account", metavar="NAME")


def _rates_parser(groups: Any) -> None:
    r_sub = _group(groups, "rates", "rate tables and rates")
    imp = _add(
        r_sub, "import", "load a rates CSV (CONTRACT §4 columns) into a table", cmd_rates_import
    )
    imp.add_argument("table", metavar="TABLE")
    imp.add_argument("file", metavar="FILE.csv")
    imp.add_argument(
        "--mode",
        choices=("replace", "merge"),
        default="merge",
        help="replace: the table's rates become the file's; merge (default): upsert by"
        " code and effective date",
    )
    imp.add_argument("--currency", metavar="CODE", help="create TABLE in CODE if it is new")
    lst = _add(r_sub, "list", "the rates of a table", cmd_rates_list)
    lst.add_argument("table", metavar="TABLE")
    lst.add_argument("--code", metavar="PREFIX", help="codes starting with PREFIX")
    _format(lst, ("table", "json", "csv"))
    show = _add(r_sub, "show", "the rate that applies now (longest prefix)", cmd_rates_show)
    show.add_argument("table", metavar="TABLE")
    show.add_argument("number", metavar="CODE")
    _format(show, ("table", "json"))
    tables = _add(r_sub, "tables", "rate tables", cmd_rates_tables)
    _format(tables, ("table", "json", "csv"))


def _transaction_filters(parser: Any) -> None:
    parser.add_argument("--client")
    parser.add_argument(
        "--kind", action="append", choices=("payment", "charge", "call"), help="repeat for more"
    )
    parser.add_argument("--since", type=_day, metavar="DATE", help="from this UTC day")
    parser.add_argument("--until", type=_day, metavar="DATE", help="through this UTC day")


def _money_parsers(groups: Any) -> None:
    p_sub = _group(groups, "payments", "payments")
    add = _add(p_sub, "add", "a payment (positive) or charge (negative)", cmd_payments_add)
    add.add_argument("client", metavar="CLIENT")
    add.add_argument("amount", metavar="AMOUNT", type=_amount)
    add.add_argument("--note")
    p_list = _add(p_sub, "list", "payments and manual charges", cmd_payments_list)
    p_list.add_argument("--client")
    _format(p_list, ("table", "json", "csv"))

    t_sub = _group(groups, "transactions", "the ledger")
    t_list = _add(t_sub, "list", "ledger rows", cmd_transactions_list)
    _transaction_filters(t_list)
    _format(t_list, ("table", "json", "csv"))
    t_export = _add(t_sub, "export", "write ledger rows to a CSV file", cmd_transactions_export)
    t_export.add_argument("file", metavar="FILE.csv")
    _transaction_filters(t_export)

    i_sub = _group(groups, "invoices", "invoices")
    gen = _add(
        i_sub,
        "generate",
        "invoice the call charges since the last-invoiced date through DATE",
        cmd_invoices_generate,
    )
    gen.add_argument("--client", required=True, metavar="NAME")
    gen.add_argument("--until", required=True, type=_day, metavar="DATE", help="last day invoiced")
    i_list = _add(i_sub, "list", "invoices", cmd_invoices_list)
    i_list.add_argument("--client")
    _format(i_list, ("table", "json", "csv"))


def _event_kinds() -> tuple[str, ...]:
    from billing_core.adapters.sql_notify import EVENT_KINDS

    return EVENT_KINDS


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="billingctl", description="Operate the VoIP billing database")
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--version", action="version", version=f"billingctl {package_version()}")
    groups = parser.add_subparsers(dest="group", required=True, parser_class=_Parser)

    db_sub = _group(groups, "db", "database schema")
    _add(db_sub, "upgrade", "apply schema migrations (idempotent)", cmd_db_upgrade)

    load = _add(groups, "load", "apply a provisioning file (YAML or JSON)", cmd_load)
    load.add_argument("file")
    load.add_argument("--dry-run", action="store_true", help="validate only")

    _clients_parser(groups)
    _templates_parser(groups)
    _accounts_parser(groups)
    _security_parser(groups)
    _rates_parser(groups)
    _money_parsers(groups)
    from billingctl.commands.explain import add_explain_parser

    add_explain_parser(groups)

    s_sub = _group(groups, "sessions", "calls in progress")
    s_list = _add(s_sub, "list", "calls in progress", cmd_sessions_list)
    s_list.add_argument("--client")
    _format(s_list, ("table", "json"))

    d_sub = _group(groups, "cdrs", "rated calls")
    d_list = _add(d_sub, "list", "rated calls", cmd_cdrs_list)
    d_list.add_argument("--client")
    _format(d_list, ("table", "json", "csv"))

    st_sub = _group(groups, "settings", "database settings")
    _add(st_sub, "show", "print one `name = value` line each", cmd_settings_show)
    st_set = _add(st_sub, "set", "set a setting", cmd_settings_set)
    st_set.add_argument("name", choices=("max_call_length",))
    st_set.add_argument("value", metavar="SECONDS")

    au_sub = _group(groups, "audit", "the audit log")
    au_list = _add(au_sub, "list", "changes made with billingctl and load", cmd_audit_list)
    au_list.add_argument("--client", metavar="NAME", help="one client's entries")
    au_list.add_argument(
        "--entity",
        choices=(
            "client",
            "account",
            "template",
            "rate_table",
            "transaction",
            "invoice",
            "setting",
        ),
    )
    au_list.add_argument(
        "--limit", type=_positive, default=100, help="the latest N entries (0: all; default 100)"
    )
    _format(au_list, ("table", "json", "csv"))

    ev_sub = _group(groups, "events", "the events log (README: events)")
    ev_list = _add(ev_sub, "list", "events, the latest first", cmd_events_list)
    ev_list.add_argument("--client", metavar="NAME", help="one client's events")
    ev_list.add_argument("--kind", choices=_event_kinds(), help="one kind of event")
    ev_list.add_argument("--since", type=_since, metavar="DATE", help="from this day or time (UTC)")
    ev_list.add_argument(
        "--limit", type=_positive, default=1000, help="the latest N events (0: all; default 1000)"
    )
    _format(ev_list, ("table", "json", "csv"))

    m_sub = _group(groups, "mail", "the mail queue (low-balance e-mail)")
    m_list = _add(m_sub, "list", "messages, the latest first", cmd_mail_list)
    m_list.add_argument("--client", metavar="NAME", help="one client's messages")
    m_list.add_argument("--status", choices=("queued", "sent", "failed"))
    m_list.add_argument(
        "--limit", type=_positive, default=1000, help="the latest N messages (0: all)"
    )
    _format(m_list, ("table", "json", "csv"))

    lv_sub = _group(groups, "live", "the live state (balances, holds, calls)")
    _add(lv_sub, "rebuild", "reload the live state in Redis from the database", cmd_live_rebuild)
    lv_verify = _add(
        lv_sub,
        "verify",
        "compare each client's live balance with its ledger; exit 1 on any drift",
        cmd_live_verify,
    )
    _format(lv_verify, ("table", "json"))
    return parser


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from billingctl.provisioning import ProvisioningError

    try:
        _config(args.config)  # every command checks the whole file first, as radiusd does
        return int(args.func(args))
    except (UserError, ProvisioningError) as exc:
        print(f"billingctl: {exc}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, UserError) else 1
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
        from billing_core.adapters.errors import unavailable

        if unavailable(exc) == "redis":
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
            print(f"billingctl: redis unreachable: {first}", file=sys.stderr)
            return 1
        raise
    finally:
        engine = getattr(args, "_engine", None)
        if engine is not None:
            engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
