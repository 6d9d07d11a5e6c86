"""``sessions`` (calls in progress) and ``cdrs`` (rated calls)."""

from __future__ import annotations

import argparse
from typing import Any

from billingctl import context
from billingctl.output import print_rows
from billingctl.parsing import add_command, add_format, add_group


def cmd_sessions_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import list_sessions

    columns = ("acct_session_id", "client", "nas", "called", "state", "granted_seconds", "held")
    print_rows(
        list_sessions(context.engine(args), args.client, live=context.live(args)),
        args.format,
        columns,
    )
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
    print_rows(list_cdrs(context.engine(args), args.client), args.format, columns)
    return 0


def register(groups: Any) -> None:
    s_sub = add_group(groups, "sessions", "calls in progress")
    s_list = add_command(s_sub, "list", "calls in progress", cmd_sessions_list)
    s_list.add_argument("--client")
    add_format(s_list, ("table", "json"))

    d_sub = add_group(groups, "cdrs", "rated calls")
    d_list = add_command(d_sub, "list", "rated calls", cmd_cdrs_list)
    d_list.add_argument("--client")
    add_format(d_list, ("table", "json", "csv"))
