"""billingctl rates on SQLite and PostgreSQL: import (COPY on PostgreSQL) by replace or merge,
the refusals that write nothing, list, show (the rate now) and tables."""

from __future__ import annotations

import csv
from pathlib import Path

from billing_core.adapters.sql.store import SqlStore

from .billingctl_support import Ctl, csv_rows, ctl, generate_rates, rates_csv

__all__ = ["ctl"]  # the fixture


def _write(tmp_path: Path, name: str, rows: list[tuple[object, ...]]) -> str:
    path = tmp_path / name
    path.write_text(rates_csv(rows), encoding="utf-8")
    return str(path)


def _rates(ctl: Ctl, table: str) -> dict[tuple[str, str], str]:
    return {
        (r["code"], r["effective_date"][:10]): r["rate"] for r in ctl.json("rates", "list", table)
    }


def test_import_merge_then_replace(ctl: Ctl, tmp_path: Path) -> None:
    first = _write(tmp_path, "first.csv", generate_rates(3000))
    out = ctl("rates", "import", "wholesale", first, "--currency", "USD")
    assert out == (
        "wholesale: 3000 rates from first.csv (merge): 3000 added, 0 updated, 0 removed;"
        " 3000 rates now\n"
    )

    # merge: 1000 codes overlap (updated in place), 1000 are new, the rest stay
    second = generate_rates(2000, start=2000, rate="0.0200")
    second.append(("1000000", "Dest 0 (2099)", "0.05", "0", 60, 60, 0, "2099-01-01", ""))
    out = ctl("rates", "import", "wholesale", _write(tmp_path, "second.csv", second))
    assert out == (
        "wholesale: 2001 rates from second.csv (merge): 1001 added, 1000 updated, 0 removed;"
        " 4001 rates now\n"
    )
    rates = _rates(ctl, "wholesale")
    assert len(rates) == 4001
    assert rates[("1000000", "2026-01-01")] == "0.01"  # not in the second file: kept
    assert rates[("1000000", "2099-01-01")] == "0.05"  # another effective date: a new rate
    assert rates[("1002500", "2026-01-01")] == "0.02"  # updated
    assert rates[("1003999", "2026-01-01")] == "0.02"  # added

    # replace: the table's rates become exactly the file's
    third = generate_rates(500, start=100, rate="0.0300")
    third_csv = _write(tmp_path, "third.csv", third)
    out = ctl("rates", "import", "wholesale", third_csv, "--mode", "replace")
    assert out == (
        "wholesale: 500 rates from third.csv (replace): 500 added, 0 updated, 4001 removed;"
        " 500 rates now\n"
    )
    listed = ctl.json("rates", "list", "wholesale")
    assert [(r["code"], r["name"], r["rate"], r["min_volume"], r["interval"]) for r in listed] == [
        (str(code), name, "0.03", 60, 60) for code, name, *_ in third
    ]
    assert listed[0]["effective_date"] == "2026-01-01T00:00:00+00:00"
    assert listed[0]["end_date"] is None

    # the daemon's catalog sees the new rates (the catalog version moved)
    catalog = SqlStore(ctl.engine()).load_catalog()
    (index,) = catalog.rate_tables.values()
    assert index.size == 500

    # one audit entry per import, with the counts before and after
    entries = ctl.json("audit", "list", "--entity", "rate_table")
    assert [e["command"] for e in entries] == ["rates import"] * 3
    assert entries[0]["before"] is None
    assert entries[2]["before"] == {"currency": "USD", "rates": 4001}
    assert entries[2]["after"]["rates"] == 500
    assert entries[2]["after"]["import"]["mode"] == "replace"


def test_import_refusals_write_nothing(ctl: Ctl, tmp_path: Path) -> None:
    good = _write(tmp_path, "good.csv", generate_rates(10))
    assert ctl.fail("rates", "import", "nope", good) == (
        "no rate table named 'nope' (give --currency to create it)"
    )
    ctl("rates", "import", "retail", good, "--currency", "USD")

    bad_late = generate_rates(2600)
    bad_late[2499] = ("1555", "Bad", "0.01", "0", 60, 0, 0, "2026-01-01", "")
    cases: list[tuple[str, list[tuple[object, ...]], str]] = [
        ("late.csv", bad_late, "late.csv line 2501: interval: must be a whole number >= 1"),
        (
            "dup.csv",
            [
                ("1", "A", "0.1", "0", 0, 1, 0, "2026-01-01T00:00:00Z", ""),
                ("2", "B", "0.1", "0", 0, 1, 0, "2026-01-01", ""),
                ("1", "C", "0.2", "0", 0, 1, 0, "2026-01-01", ""),
            ],
            "dup.csv line 4: effective_date: code 1 already has a rate effective"
            " 2026-01-01T00:00:00+00:00 (at line 2)",
        ),
        (
            "money.csv",
            [("1", "A", "0.1234567", "0", 0, 1, 0, "2026-01-01", "")],
            "money.csv line 2: rate: must have at most 6 decimal places",
        ),
        (
            "code.csv",
            [("1-800", "A", "0.1", "0", 0, 1, 0, "2026-01-01", "")],
            "code.csv line 2: code: must contain digits only",
        ),
        (
            "dates.csv",
            [("1", "A", "0.1", "0", 0, 1, 0, "2026-01-01", "2025-01-01")],
            "dates.csv line 2: end_date: must be after effective_date",
        ),
        ("empty.csv", [], "empty.csv: has no rates (a header and no rows)"),
    ]
    for name, rows, message in cases:
        path = _write(tmp_path, name, rows)
        for mode in ("merge", "replace"):
            assert ctl.fail("rates", "import", "retail", path, "--mode", mode) == message
        # a new table is not created either
        assert ctl.fail("rates", "import", "fresh", path, "--currency", "USD") == message

    header = tmp_path / "header.csv"
    header.write_text("code,name,rate,price,effective_date\n1,A,0.1,2,2026-01-01\n")
    assert (
        ctl.fail("rates", "import", "retail", str(header))
        == "header.csv line 1: price: unknown column"
    )
    header.write_text("code,name,effective_date\n1,A,2026-01-01\n")
    assert ctl.fail("rates", "import", "retail", str(header)) == (
        "header.csv line 1: header lacks rate (needs code, rate, effective_date)"
    )
    assert ctl.fail("rates", "import", "retail", str(tmp_path / "missing.csv")) == (
        "missing.csv: cannot read: no such file"
    )
    assert ctl.fail("rates", "import", "retail", good, "--currency", "EUR") == (
        "currency: rate table 'retail' is in USD, not EUR"
    )
    code, _out, err = ctl.run("rates", "import", "retail", good, "--mode", "append")
    assert code == 2
    assert "invalid choice: 'append'" in err

    assert [(t["name"], t["rates"]) for t in ctl.json("rates", "tables")] == [("retail", 10)]
    assert len(ctl.json("audit", "list")) == 1  # only the good import


def test_list_show_and_tables(ctl: Ctl, tmp_path: Path) -> None:
    rows: list[tuple[object, ...]] = [
        ("1", "USA", "0.01", "0", 60, 60, 0, "2020-01-01", ""),
        ("1555", "USA special", "0.02", "0.05", 1, 1, 3, "2020-01-01", ""),
        ("1555", "USA special 2099", "0.09", "0", 1, 1, 0, "2099-01-01", ""),
        ("44", "UK (ended)", "0.03", "0", 60, 60, 0, "2020-01-01", "2021-01-01"),
    ]
    ctl("rates", "import", "retail", _write(tmp_path, "r.csv", rows), "--currency", "USD")
    ctl("clients", "add", "Acme", "--rate-table", "retail")

    shown = ctl.json("rates", "show", "retail", "+1 (555) 123-4567")
    assert (shown["code"], shown["name"], shown["rate"], shown["setup_fee"]) == (
        "1555",
        "USA special",
        "0.02",
        "0.05",
    )
    assert (shown["number"], shown["grace_volume"]) == ("15551234567", 3)
    assert ctl.json("rates", "show", "retail", "12125550000")["code"] == "1"
    assert ctl.fail("rates", "show", "retail", "442071234567") == (
        "no rate in 'retail' applies to 442071234567 now"
    )
    assert ctl.fail("rates", "show", "nope", "1") == "no rate table named 'nope'"
    assert "code            1555" in ctl("rates", "show", "retail", "15551234567")

    listed = ctl.json("rates", "list", "retail", "--code", "15")
    assert [(r["code"], r["effective_date"][:4]) for r in listed] == [
        ("1555", "2020"),
        ("1555", "2099"),
    ]
    assert ctl.fail("rates", "list", "retail", "--code", "1x") == "code: must contain digits only"
    exported = csv_rows(ctl("rates", "list", "retail", "--format", "csv"))
    assert [r["code"] for r in exported] == ["1", "1555", "1555", "44"]
    assert exported[3]["end_date"] == "2021-01-01T00:00:00+00:00"
    assert ctl.json("rates", "tables") == [
        {"id": 1, "name": "retail", "currency": "USD", "rates": 4, "clients": 1}
    ]


def test_names_survive_the_bulk_path(ctl: Ctl, tmp_path: Path) -> None:
    """Tabs, backslashes, quotes, commas, newlines and non-Latin text in a name, through
    COPY (PostgreSQL) or executemany (SQLite), read back unchanged."""
    names = ["back\\slash \\N", "tab\tinside", 'quote " and, comma', "two\nlines", "Côte d'Ivoire"]
    path = tmp_path / "names.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["code", "name", "rate", "effective_date"])
        for n, name in enumerate(names):
            writer.writerow([f"{n + 1}", name, "0.5", "2026-01-01"])
    ctl("rates", "import", "names", str(path), "--currency", "EUR")
    assert [r["name"] for r in ctl.json("rates", "list", "names")] == names
