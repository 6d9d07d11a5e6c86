"""``live``: the live state (balances, holds, calls) rebuilt or checked against the ledger."""

from __future__ import annotations

import argparse
import json
from typing import Any

from billingctl import context
from billingctl.output import print_rows
from billingctl.parsing import add_command, add_format, add_group


def cmd_live_rebuild(args: argparse.Namespace) -> int:
    from billingctl.progress import for_terminal
    from billingctl.services.live import rebuild

    live = context.live(args)
    with for_terminal("live rebuild", unit="clients") as progress:
        count = rebuild(context.engine(args), live, progress)
    if count is None:
        print("the live state is the database itself (no redis.url): nothing to rebuild")
    else:
        print(f"live state rebuilt from the database: {count} clients")
    return 0


def cmd_live_verify(args: argparse.Namespace) -> int:
    from billing_core.domain.money import display
    from billingctl.services.live import verify

    checked, drifts = verify(context.engine(args), context.live_or_database(args))
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
        print_rows(rows, "table", ("client_id", "live_balance", "ledger_balance", "difference"))
    else:
        print(f"{checked} clients checked: every live balance equals its ledger")
    return 1 if drifts else 0


def register(groups: Any) -> None:
    lv_sub = add_group(groups, "live", "the live state (balances, holds, calls)")
    add_command(
        lv_sub, "rebuild", "reload the live state in Redis from the database", cmd_live_rebuild
    )
    lv_verify = add_command(
        lv_sub,
        "verify",
        "compare each client's live balance with its ledger; exit 1 on any drift",
        cmd_live_verify,
    )
    add_format(lv_verify, ("table", "json"))
