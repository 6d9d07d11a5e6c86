"""``settings`` (the database settings) and the logs: ``audit``, ``events``, ``mail``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from billing_core.domain.events import EVENT_KINDS
from billing_core.errors import UserError
from billingctl import context
from billingctl.output import print_rows
from billingctl.parsing import add_command, add_format, add_group, positive, since


def cmd_settings_show(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import show_settings

    for name, value in show_settings(
        context.engine(args), {"max_call_length": "(config file)"}
    ).items():
        print(f"{name} = {value}")
    return 0


def cmd_settings_set(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import update_setting

    if args.name != "max_call_length":
        raise UserError(f"unknown setting {args.name!r} (known: max_call_length)")
    value = args.value.strip()
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"max_call_length: must be a whole number >= 1, got {args.value!r}")
    update_setting(context.engine(args), "max_call_length", str(int(value)), context.audit(args))
    print(f"max_call_length = {int(value)}")
    return 0


AUDIT_COLUMNS = ("id", "at", "actor", "command", "entity", "name", "client", "changes")


def cmd_audit_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.audit import list_audit

    rows = list_audit(
        context.engine(args), client=args.client, entity_type=args.entity, limit=args.limit
    )
    if args.format == "csv":
        rows = [
            {
                **row,
                "before": json.dumps(row["before"], sort_keys=True),
                "after": json.dumps(row["after"], sort_keys=True),
            }
            for row in rows
        ]
        print_rows(rows, "csv", (*AUDIT_COLUMNS, "before", "after"))
        return 0
    print_rows(rows, args.format, AUDIT_COLUMNS)
    return 0


EVENT_COLUMNS = ("id", "at", "kind", "client", "nas", "detail")


def cmd_events_list(args: argparse.Namespace) -> int:
    from billing_core.adapters.sql.notify import list_events

    rows = list_events(
        context.engine(args), client=args.client, kind=args.kind, since=args.since, limit=args.limit
    )
    if args.format != "json":
        rows = [{**row, "detail": json.dumps(row["detail"], sort_keys=True)} for row in rows]
    print_rows(rows, args.format, EVENT_COLUMNS)
    return 0


MAIL_COLUMNS = ("id", "created_at", "client", "to", "status", "attempts", "sent_at", "subject")


def cmd_mail_list(args: argparse.Namespace) -> int:
    from billing_core.adapters.sql.notify import list_mail

    rows = list_mail(context.engine(args), client=args.client, status=args.status, limit=args.limit)
    columns = (*MAIL_COLUMNS, "last_error") if args.format == "csv" else MAIL_COLUMNS
    print_rows(rows, args.format, columns)
    return 0


def register(groups: Any) -> None:
    st_sub = add_group(groups, "settings", "database settings")
    add_command(st_sub, "show", "print one `name = value` line each", cmd_settings_show)
    st_set = add_command(st_sub, "set", "set a setting", cmd_settings_set)
    st_set.add_argument("name", choices=("max_call_length",))
    st_set.add_argument("value", metavar="SECONDS")

    au_sub = add_group(groups, "audit", "the audit log")
    au_list = add_command(au_sub, "list", "changes made with billingctl and load", cmd_audit_list)
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
        "--limit", type=positive, default=100, help="the latest N entries (0: all; default 100)"
    )
    add_format(au_list, ("table", "json", "csv"))

    ev_sub = add_group(groups, "events", "the events log (README: events)")
    ev_list = add_command(ev_sub, "list", "events, the latest first", cmd_events_list)
    ev_list.add_argument("--client", metavar="NAME", help="one client's events")
    ev_list.add_argument("--kind", choices=EVENT_KINDS, help="one kind of event")
    ev_list.add_argument("--since", type=since, metavar="DATE", help="from this day or time (UTC)")
    ev_list.add_argument(
        "--limit", type=positive, default=1000, help="the latest N events (0: all; default 1000)"
    )
    add_format(ev_list, ("table", "json", "csv"))

    m_sub = add_group(groups, "mail", "the mail queue (low-balance e-mail)")
    m_list = add_command(m_sub, "list", "messages, the latest first", cmd_mail_list)
    m_list.add_argument("--client", metavar="NAME", help="one client's messages")
    m_list.add_argument("--status", choices=("queued", "sent", "failed"))
    m_list.add_argument(
        "--limit", type=positive, default=1000, help="the latest N messages (0: all)"
    )
    add_format(m_list, ("table", "json", "csv"))
