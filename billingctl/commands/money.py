"""``payments``, ``transactions`` and ``invoices``: money seen by the operator."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from billingctl import context
from billingctl.output import print_rows, write_csv
from billingctl.parsing import add_command, add_format, add_group, amount, day

if TYPE_CHECKING:
    from billing_core.ports import LiveState

MISSED_WARNING = (
    "billingctl: warning: redis: the live state missed this change (unreachable);"
    " it is in the database, and a running daemon brings it to Redis when Redis"
    " answers again"
)


def payments_made(
    args: argparse.Namespace, live: LiveState | None, moved: Sequence[tuple[int, Decimal, int]]
) -> None:
    """After the ledger committed payments or charges: the live balances in Redis follow
    (CONTRACT §2), a miss is warned about, and low-balance notifications are checked."""
    from billingctl.services.money import follow_payments

    if follow_payments(live, moved):
        print(MISSED_WARNING, file=sys.stderr)
    _check_notifications(args, [client_id for client_id, _amount, _seq in moved])


def _check_notifications(args: argparse.Namespace, client_ids: Sequence[int]) -> None:
    """After money moved: fire or re-arm the clients' low-balance notifications (decided in
    the database, so the daemon doing the same at the same time changes nothing)."""
    if not client_ids:
        return
    from billing_core.adapters.sql.notify import check_notifications as check
    from billing_core.adapters.sql.tables import utcnow

    views = context.live_or_database(args).view(list(dict.fromkeys(client_ids)), utcnow())
    check(context.engine(args), views, mail_enabled=context.mail_enabled(args.config))


def cmd_payments_add(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import LiveMove, add_payment

    live = context.live(args)
    moved: list[LiveMove] = []
    summary = add_payment(
        context.engine(args),
        args.client,
        args.amount,
        args.note or "",
        context.audit(args),
        applied=moved,
    )
    payments_made(args, live, moved)
    if live is not None:
        from billingctl.adapters.client_queries import client_summary

        summary = client_summary(context.engine(args), str(summary["id"]), live=live)
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

    rows = list_transactions(context.engine(args), client=args.client, kinds=("payment", "charge"))
    print_rows(rows, args.format, TRANSACTION_COLUMNS)
    return 0


def _transactions(args: argparse.Namespace) -> list[dict[str, Any]]:
    from billingctl.adapters.admin_money import KINDS, list_transactions

    return list_transactions(
        context.engine(args),
        client=args.client,
        kinds=tuple(args.kind) if args.kind else KINDS,
        since=args.since,
        until=args.until,
    )


def cmd_transactions_list(args: argparse.Namespace) -> int:
    print_rows(_transactions(args), args.format, TRANSACTION_COLUMNS)
    return 0


def cmd_transactions_export(args: argparse.Namespace) -> int:
    rows = _transactions(args)
    write_csv(args.file, rows, TRANSACTION_COLUMNS)
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
    from billingctl.services.money import generate_invoice

    invoice = generate_invoice(
        context.engine(args), args.client, args.until, audit=context.audit(args)
    )
    period = f"{invoice['period_start'] or 'start'}..{invoice['period_end']}"
    print(
        f"invoice {invoice['id']} for {invoice['client']} ({period}): {invoice['charges']} call"
        f" charges, total {invoice['total']} {invoice['currency']}; last invoiced"
        f" {invoice['period_end']}; fixed balance {invoice['fixed_balance']}"
    )
    return 0


def cmd_invoices_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_money import list_invoices

    print_rows(list_invoices(context.engine(args), args.client), args.format, INVOICE_COLUMNS)
    return 0


def _transaction_filters(parser: Any) -> None:
    parser.add_argument("--client")
    parser.add_argument(
        "--kind", action="append", choices=("payment", "charge", "call"), help="repeat for more"
    )
    parser.add_argument("--since", type=day, metavar="DATE", help="from this UTC day")
    parser.add_argument("--until", type=day, metavar="DATE", help="through this UTC day")


def register(groups: Any) -> None:
    p_sub = add_group(groups, "payments", "payments")
    add = add_command(p_sub, "add", "a payment (positive) or charge (negative)", cmd_payments_add)
    add.add_argument("client", metavar="CLIENT")
    add.add_argument("amount", metavar="AMOUNT", type=amount)
    add.add_argument("--note")
    p_list = add_command(p_sub, "list", "payments and manual charges", cmd_payments_list)
    p_list.add_argument("--client")
    add_format(p_list, ("table", "json", "csv"))

    t_sub = add_group(groups, "transactions", "the ledger")
    t_list = add_command(t_sub, "list", "ledger rows", cmd_transactions_list)
    _transaction_filters(t_list)
    add_format(t_list, ("table", "json", "csv"))
    t_export = add_command(
        t_sub, "export", "write ledger rows to a CSV file", cmd_transactions_export
    )
    t_export.add_argument("file", metavar="FILE.csv")
    _transaction_filters(t_export)

    i_sub = add_group(groups, "invoices", "invoices")
    gen = add_command(
        i_sub,
        "generate",
        "invoice the call charges since the last-invoiced date through DATE",
        cmd_invoices_generate,
    )
    gen.add_argument("--client", required=True, metavar="NAME")
    gen.add_argument("--until", required=True, type=day, metavar="DATE", help="last day invoiced")
    i_list = add_command(i_sub, "list", "invoices", cmd_invoices_list)
    i_list.add_argument("--client")
    add_format(i_list, ("table", "json", "csv"))
