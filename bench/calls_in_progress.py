"""`python -m bench.calls_in_progress [--redis-url URL]`: Redis CPU per authorization against
the calls a client has in progress.

A carrier's client may have thousands of calls up at once, thousands of calls authorized in
the last minutes and not started yet, and, when its switch accounts only answered calls
(Kamailio's acc), thousands of holds that lapsed without a Start, which the live state
keeps a day so that a late Start still finds its authorization. One client is loaded into
an emptied Redis database with N active calls, N holds not lapsed, or N lapsed holds; then
it is authorized again and again (ten calls in turn, so that the state stays as it is), and
Redis's own account of the script's CPU (``INFO commandstats``, ``usec_per_call`` of
EVALSHA) is read. The baseline is the same client with none, in the same run: the cost of
its calls in progress is the ratio to it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import redis

from billing_core.adapters.redis_live import RedisLiveState
from billing_core.domain.calls import CallState
from billing_core.domain.model import Client
from billing_core.domain.policy import GrantTerms
from billing_core.domain.rating import Rate
from billing_core.ports import ClientTruth, HoldRequest, LiveCall

SIZES = (0, 100, 1_000, 5_000)
PROBES = 400
CLIENT = Client(
    id=1,
    name="wholesale",
    status="active",
    currency="USD",
    locale=None,
    postpaid=False,
    credit=Decimal(0),
    rate_table_id=1,
    capacity=None,
    low_balance_threshold=None,
    low_balance_capacity=None,
    bill_events_by="disconnect",
)
RATE = Rate(
    code="44",
    name="",
    rate=Decimal("0.02"),
    setup_fee=Decimal(0),
    min_volume=1,
    interval=1,
    grace_volume=0,
    effective_date=datetime(2020, 1, 1, tzinfo=UTC),
)


@dataclass(frozen=True)
class Row:
    kind: str  # "active calls" or "lapsed holds"
    size: int
    usec: float  # Redis CPU per authorization script


def _active(n: int, now: datetime) -> list[LiveCall]:
    return [
        LiveCall(
            f"db{i}",
            "gw",
            (f"in-{i}",),
            CallState.ACTIVE.value,
            Decimal("0.50"),
            None,
            1,
            "4420",
            now,
            1800,
        )
        for i in range(n)
    ]


def _request(ident: str, now: datetime) -> HoldRequest:
    return HoldRequest(
        terms=GrantTerms(CLIENT, RATE, 3600),
        nas_key="gw",
        account_id=1,
        called="4420",
        identifiers=(ident,),
        acct_session_id=ident,
        now=now,
        hold_seconds=180,
        uid=ident,
    )


def measure(url: str, kind: str, size: int) -> Row:
    r = redis.Redis.from_url(url)
    r.flushdb()
    now = datetime.now(UTC)
    calls = _active(size, now) if kind == "active calls" else []
    live = RedisLiveState(r, lambda _cid: ClientTruth(1, Decimal("1000000"), calls))
    live.load_client(CLIENT.id, replace=True)
    if kind == "lapsed holds":  # authorized an hour ago, never accounted
        for i in range(size):
            live.authorize(_request(f"gone-{i}", now - timedelta(hours=1)))
    if kind == "holds not lapsed":  # authorized a minute ago, their calls not started yet
        for i in range(size):
            live.authorize(_request(f"ringing-{i}", now - timedelta(minutes=1)))
    r.config_resetstat()
    for i in range(PROBES):
        live.authorize(_request(f"probe-{i % 10}", now))
    stats = r.info("commandstats").get("cmdstat_evalsha", {})
    r.flushdb()
    return Row(kind, size, float(stats.get("usec_per_call", 0.0)))


def table(rows: list[Row]) -> str:
    """The rows as a markdown table, each with its ratio to the same kind's first row."""
    lines = [
        "| client's state | size | Redis µs per authorization | ÷ none |",
        "|---|---|---|---|",
    ]
    base: dict[str, float] = {}
    for row in rows:
        first = base.setdefault(row.kind, row.usec)
        ratio = f"{row.usec / first:.2f} ×" if first else "–"
        lines.append(f"| {row.kind} | {row.size:,} | {row.usec:.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.calls_in_progress", description=__doc__)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="emptied")
    args = p.parse_args(argv)
    rows = [
        measure(args.redis_url, kind, size)
        for kind in ("active calls", "lapsed holds", "holds not lapsed")
        for size in SIZES
    ]
    sys.stdout.write(table(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
