"""``rates``: rate tables, a rates CSV imported, the rate that applies to a number."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from billingctl import context
from billingctl.output import print_one, print_rows
from billingctl.parsing import add_command, add_format, add_group
from billingctl.provisioning import RATE_COLUMNS


def cmd_rates_import(args: argparse.Namespace) -> int:
    from billingctl.progress import count_lines, for_terminal
    from billingctl.services.rates import import_rates, write_index_snapshots

    progress = for_terminal(f"rates import {Path(args.file).name}")
    if progress.enabled and Path(args.file).is_file():
        progress.total = max(0, count_lines(args.file) - 1)  # the header
    with progress:
        result = import_rates(
            context.engine(args),
            args.table,
            Path(args.file),
            mode=args.mode,
            currency=args.currency,
            audit=context.audit(args),
            progress=progress,
        )
        progress.stage("writing the rate index snapshot")
        write_index_snapshots(context.engine(args))
    print(
        f"{result['table']}: {result['rows']} rates from {result['file']} ({result['mode']}):"
        f" {result['added']} added, {result['updated']} updated, {result['removed']} removed;"
        f" {result['after']} rates now"
    )
    return 0


def cmd_rates_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.rates_import import list_rates

    print_rows(list_rates(context.engine(args), args.table, args.code), args.format, RATE_COLUMNS)
    return 0


def cmd_rates_show(args: argparse.Namespace) -> int:
    from billingctl.adapters.rates_import import show_rate

    print_one(show_rate(context.engine(args), args.table, args.number), args.format)
    return 0


def cmd_rates_tables(args: argparse.Namespace) -> int:
    from billingctl.adapters.rates_import import list_rate_tables

    columns = ("id", "name", "currency", "rates", "clients")
    print_rows(list_rate_tables(context.engine(args)), args.format, columns)
    return 0


def register(groups: Any) -> None:
    r_sub = add_group(groups, "rates", "rate tables and rates")
    imp = add_command(
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
    lst = add_command(r_sub, "list", "the rates of a table", cmd_rates_list)
    lst.add_argument("table", metavar="TABLE")
    lst.add_argument("--code", metavar="PREFIX", help="codes starting with PREFIX")
    add_format(lst, ("table", "json", "csv"))
    show = add_command(r_sub, "show", "the rate that applies now (longest prefix)", cmd_rates_show)
    show.add_argument("table", metavar="TABLE")
    show.add_argument("number", metavar="CODE")
    add_format(show, ("table", "json"))
    tables = add_command(r_sub, "tables", "rate tables", cmd_rates_tables)
    add_format(tables, ("table", "json", "csv"))
