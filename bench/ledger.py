"""After a run: was every call charged as the generator's record says, and exactly once?

The load generator records the outcome of every request it sent (``LoadSpec.record``): the
job (call) and step, and the reply code or a timeout. From that and the database the run
wrote, each call of the pool is judged:

- a Stop answered (by any node): the call has exactly one CDR and, if it cost anything,
  exactly one charge in the ledger, equal to the CDR's cost (else: *lost* or *charged
  twice*);
- a Stop sent but never answered (timed out): at most one CDR and one charge;
- no Stop sent (the run ended first): no CDR at all.

CDRs or call charges the pool did not cause are counted too, and every client's live
balance is compared with its ledger through ``billingctl live verify`` (the command an
operator runs), retried for a few seconds: a node applies a batch's live effects just after
it answers.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.loadgen import TIMED_OUT, Answer
from billing_core.domain.money import display, from_micros

ACCOUNTING_RESPONSE = 5
VERIFY_SECONDS = 10.0


@dataclass
class LedgerCheck:
    calls: int = 0  # jobs the generator started
    stops_answered: int = 0  # calls with a Stop answered
    stops_unanswered: int = 0  # calls whose Stops were sent and all timed out
    stops_not_sent: int = 0  # calls the run ended before their Stop
    resent_answered: int = 0  # calls whose Stop was answered twice (sent again, elsewhere)
    charged: int = 0  # calls with one CDR (among those answered)
    lost: int = 0  # answered Stop, no CDR
    twice: int = 0  # more than one CDR, or more than one charge, for one call
    wrong_amount: int = 0  # a CDR whose charges do not add up to its cost
    unexpected: int = 0  # CDRs of calls whose Stop was never sent, or not of this pool
    stray_charges: int = 0  # call charges with no CDR of this run
    cdrs: int = 0
    charged_total: Decimal = Decimal(0)
    clients_verified: int = 0
    drifts: int | None = None  # clients whose live balance differs from the ledger
    drift_total: Decimal = Decimal(0)
    verify_seconds: float = 0.0
    verify_error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.twice == 0
            and self.wrong_amount == 0
            and self.unexpected == 0
            and self.stray_charges == 0
            and self.drifts == 0
            and not self.verify_error
        )

    def summary(self) -> str:
        verify = (
            f"live verify: {self.verify_error}"
            if self.verify_error
            else f"live verify: {self.drifts} of {self.clients_verified} clients drift"
            + (f" (in all {display(self.drift_total)})" if self.drifts else "")
        )
        return (
            f"{self.stops_answered:,} calls' Stops answered ({self.resent_answered:,} of them "
            f"answered twice: sent again), {self.charged:,} charged once, {self.lost} lost, "
            f"{self.twice} charged twice, {self.wrong_amount} wrong amounts, "
            f"{self.unexpected} unexpected CDRs, {self.stray_charges} stray charges; {verify}"
        )


def judge(
    answers: Sequence[Answer],
    is_stop: Callable[[int], bool],
    session_id: Callable[[int], str],
    cdrs: dict[str, list[tuple[Decimal, list[Decimal]]]],
    stray_charges: int,
) -> LedgerCheck:
    """``cdrs``: per Acct-Session-Id, each CDR's cost and the amounts of its call charges."""
    check = LedgerCheck(stray_charges=stray_charges)
    stops: dict[int, list[int]] = defaultdict(list)
    calls: set[int] = set()
    for job, step, code in answers:
        calls.add(job)
        if is_stop(step):
            stops[job].append(code)
    check.calls = len(calls)
    seen: set[str] = set()
    for job in sorted(calls):
        sid = session_id(job)
        seen.add(sid)
        legs = cdrs.get(sid, [])
        codes = stops.get(job, [])
        answered = sum(1 for c in codes if c == ACCOUNTING_RESPONSE)
        if answered > 1:
            check.resent_answered += 1
        charges = [amount for _cost, amounts in legs for amount in amounts]
        if len(legs) > 1 or len(charges) > 1:
            check.twice += 1
        for cost, amounts in legs:
            if sum(amounts, Decimal(0)) != -cost:
                check.wrong_amount += 1
        if answered:
            check.stops_answered += 1
            if not legs:
                check.lost += 1
            elif len(legs) == 1:
                check.charged += 1
        elif codes and all(c == TIMED_OUT for c in codes):
            check.stops_unanswered += 1
        else:
            check.stops_not_sent += 1
            check.unexpected += len(legs)
    for sid, legs in cdrs.items():
        check.cdrs += len(legs)
        check.charged_total -= sum((a for _c, amounts in legs for a in amounts), Decimal(0))
        if sid not in seen:
            check.unexpected += len(legs)
    return check


def read_cdrs(url: str) -> tuple[dict[str, list[tuple[Decimal, list[Decimal]]]], int]:
    """Per Acct-Session-Id, its CDRs' costs and their call charges; and the number of call
    charges that belong to no CDR."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT c.id, c.acct_session_id, c.cost, t.amount FROM cdrs c "
                    "LEFT JOIN transactions t ON t.cdr_id = c.id AND t.kind = 'call' "
                    "ORDER BY c.id"
                )
            ).all()
            stray = conn.execute(
                text(
                    "SELECT count(*) FROM transactions t WHERE t.kind = 'call' AND NOT EXISTS "
                    "(SELECT 1 FROM cdrs c WHERE c.id = t.cdr_id)"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    by_id: dict[int, tuple[str, Decimal, list[Decimal]]] = {}
    for cdr_id, sid, cost, amount in rows:
        # money columns hold integer micro-units (billing_core.adapters.sql.models.MoneyType)
        entry = by_id.setdefault(cdr_id, (sid, from_micros(int(cost)), []))
        if amount is not None:
            entry[2].append(from_micros(int(amount)))
    out: dict[str, list[tuple[Decimal, list[Decimal]]]] = defaultdict(list)
    for sid, cost, amounts in by_id.values():
        out[sid].append((cost, amounts))
    return dict(out), int(stray)


def live_verify(billingctl: Path, config: Path, check: LedgerCheck, cwd: Path) -> None:
    """``billingctl live verify --format json`` until no client drifts (at most
    ``VERIFY_SECONDS``): the last answer goes into ``check``."""
    started = time.monotonic()
    while True:
        result = subprocess.run(
            [str(billingctl), "--config", str(config), "live", "verify", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=cwd,
        )
        check.verify_seconds = time.monotonic() - started
        try:
            report = json.loads(result.stdout)
        except ValueError:
            check.verify_error = (result.stderr.strip() or result.stdout.strip())[-300:]
            return
        check.verify_error = ""
        check.clients_verified = int(report["checked"])
        drifts = report["drifts"]
        check.drifts = len(drifts)
        check.drift_total = sum((Decimal(d["difference"]) for d in drifts), Decimal(0))
        if not drifts or check.verify_seconds >= VERIFY_SECONDS:
            return
        time.sleep(0.5)
