"""The accounting rules of CONTRACT §3 (exactly-once charging, NAS epochs, corrections,
money) driven through ``AccountingService``'s public entry points over in-memory fakes of
its ports (tests/fakes.py). The same rules run against real databases in
tests/integration and tests/e2e; here they run in milliseconds, one rule per row."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_core.domain.accounting_packets import AccountingEvent, AcctStatus
from billing_core.domain.identification import CallerFacts
from billing_core.domain.model import Account, BillEventsBy, Client
from billing_core.domain.policy import Accept
from billing_core.domain.rating import Rate
from billing_core.ports import Catalog, LedgerConflict, NasReleased, Released
from billing_core.services.accounting import AccountingService
from billing_core.services.authorization import AuthorizationService, AuthorizeCall
from tests.authorize import decide
from tests.fakes import FakeEmbeddedLive, FakeLedger, FakeLive, catalog

D = Decimal
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
NAS = "nas|10.0.0.1"
OTHER_NAS = "nas|10.0.0.2"
START, STOP, INTERIM = AcctStatus.START, AcctStatus.STOP, AcctStatus.INTERIM_UPDATE
ON, OFF, FAILED = AcctStatus.ACCOUNTING_ON, AcctStatus.ACCOUNTING_OFF, AcctStatus.FAILED
STALE_GRACE = 300
HOLD_SECONDS = 180

ACME = Client(
    id=1,
    name="Acme",
    status="active",
    currency="USD",
    locale=None,
    postpaid=False,
    credit=D("0"),
    rate_table_id=1,
    capacity=None,
    low_balance_threshold=None,
    low_balance_capacity=None,
    bill_events_by="disconnect",
)
ACME_LOGIN = Account(
    id=10,
    client_id=1,
    name="acme",
    ident="login",
    value="acme",
    tech_prefix=None,
    password_hash=None,
)


def per_second(per_minute: str, *, setup_fee: str = "0") -> Rate:
    """A rate billed by the second from the first second."""
    return Rate("1", "USA", D(per_minute), D(setup_fee), 1, 1, 0, T0 - timedelta(days=60))


CENT_A_SECOND = per_second("0.60")  # cost(d) = d / 100: the arithmetic reads off the duration


@dataclass
class World:
    ledger: FakeLedger
    live: FakeLive | FakeEmbeddedLive
    acct: AccountingService
    authz: AuthorizationService
    opening: Decimal
    catalog: Callable[[], Catalog]

    def results(self, *events: AccountingEvent) -> list[str]:
        """Each event recorded on its own (one group commit each)."""
        return [self.acct.record(event).result for event in events]

    def cdrs(self) -> list[tuple[int, Decimal, str]]:
        return [(c.duration, c.cost, c.leg.closed_by) for c in self.ledger.cdrs()]

    def charged(self) -> Decimal:
        """What the ledger took from the client (positive)."""
        return -self.ledger.balance(ACME.id)

    def live_view(self, at: float = 0) -> tuple[Decimal, Decimal, int]:
        view = self.live.view([ACME.id], T0 + timedelta(seconds=at))[ACME.id]
        return view.balance, view.held, view.active_calls

    def authorize(self, session: str, at: float = 0, nas: str = NAS) -> Accept:
        outcome = decide(
            self.authz,
            AuthorizeCall(
                nas_key=nas,
                caller=CallerFacts(user_name="acme", called="15550001111"),
                password=None,
                chap=None,
                identifiers=(session,),
                arrived=T0 + timedelta(seconds=at),
                acct_session_id=session,
            ),
        )
        assert isinstance(outcome.decision, Accept), outcome
        return outcome.decision

    def assert_books_balance(self) -> None:
        """Exactly once, in money: every CDR's ledger rows sum to its cost (a charge, then
        at most the corrections' differences), nothing is charged without a CDR, and the
        live balance is the opening balance moved by the ledger (Redis rebuilt from it)."""
        by_cdr: dict[int, Decimal] = {}
        for row in self.ledger.state.charges:
            by_cdr[row.cdr_id] = by_cdr.get(row.cdr_id, D(0)) - row.amount
        cdrs = {c.id: c.cost for c in self.ledger.cdrs()}
        assert set(by_cdr) <= set(cdrs)
        assert {i: c for i, c in cdrs.items() if c} == {i: c for i, c in by_cdr.items() if c}
        assert self.live_view()[0] == self.opening - self.charged()
        if isinstance(self.live, FakeLive):
            # each committed write reached the live state in its client's order, none lost
            assert (self.live.gaps, self.live.unsequenced) == ([], [])
            assert self.live.seqs == self.ledger.state.seqs


def world(
    *,
    rate: Rate = CENT_A_SECOND,
    rates: tuple[Rate, ...] = (),
    client: Client = ACME,
    max_call_length: int | None = 3600,
    balance: str = "100.00",
    embedded: bool = False,
) -> World:
    """``embedded``: the live state is the database itself (holds are calls rows), as
    without Redis; else it is kept apart, as in Redis."""
    the_catalog = catalog(
        [client], [ACME_LOGIN], {1: rates or (rate,)}, max_call_length=max_call_length
    )

    def current() -> Catalog:
        return the_catalog

    ledger = FakeLedger()
    opening = {ACME.id: D(balance)}
    live = FakeEmbeddedLive(ledger, opening) if embedded else FakeLive(opening)
    acct = AccountingService(
        current,
        ledger,
        live,
        auth_hold_seconds=HOLD_SECONDS,
        max_acct_delay_seconds=86400,
        stale_grace_seconds=STALE_GRACE,
        sequenced_live=not embedded,
    )
    authz = AuthorizationService(
        current, live, max_call_length=3600, auth_hold_seconds=HOLD_SECONDS
    )
    return World(ledger, live, acct, authz, D(balance), current)


def ev(
    status: int,
    session: str = "s1",
    at: float = 0,
    *,
    seconds: int | None = None,
    delay: int | None = None,
    nas: str = NAS,
    user: str = "acme",
    origin: str | None = None,
    tags: str = "",
    final: bool = True,
) -> AccountingEvent:
    """An Accounting-Request arriving ``at`` seconds after T0 (event time: less ``delay``)."""
    return AccountingEvent(
        nas_key=nas,
        bill_leg="originate",
        status=status,
        acct_session_id=session,
        conf_id=None,
        avpair_call_id=None,
        origin=origin,
        session_time=seconds,
        delay=delay,
        arrived=T0 + timedelta(seconds=at),
        caller=CallerFacts(user_name=user, called="15550001111"),
        tags=tags,
        zero_final=final,
    )


def late(
    status: int, session: str, event_at: float, arrived_at: float, *, seconds: int | None = None
) -> AccountingEvent:
    """A packet whose event time is ``event_at`` but that arrives at ``arrived_at`` (its
    Acct-Delay-Time says so)."""
    return ev(status, session, arrived_at, delay=int(arrived_at - event_at), seconds=seconds)


# where the holds live: in Redis (apart from the ledger) or, without Redis, in the database
MODES = pytest.mark.parametrize("embedded", [False, True], ids=["redis", "embedded"])

# --- exactly once ------------------------------------------------------------------------------

EXACTLY_ONCE = {
    "start and stop": (
        [ev(START), ev(STOP, at=61, seconds=61)],
        ["recorded", "charged"],
        [(61, D("0.61"), "stop")],
    ),
    "a retransmitted Start changes nothing": (
        [ev(START), ev(START, at=1), ev(STOP, at=61, seconds=61)],
        ["recorded", "recorded", "charged"],
        [(61, D("0.61"), "stop")],
    ),
    "a retransmitted Interim changes nothing": (
        [
            ev(START),
            ev(INTERIM, at=30, seconds=30),
            ev(INTERIM, at=31, seconds=30),
            ev(STOP, at=61, seconds=61),
        ],
        ["recorded", "recorded", "recorded", "charged"],
        [(61, D("0.61"), "stop")],
    ),
    "a retransmitted Stop is a duplicate": (
        [ev(START), ev(STOP, at=61, seconds=61), ev(STOP, at=61, seconds=61)],
        ["recorded", "charged", "duplicate"],
        [(61, D("0.61"), "stop")],
    ),
    # another packet (a new RADIUS id: re-sent later, with its Acct-Delay-Time grown)
    "the same Stop in another packet is a duplicate": (
        [ev(START), ev(STOP, at=61, seconds=61), ev(STOP, at=68, seconds=61, delay=7)],
        ["recorded", "charged", "duplicate"],
        [(61, D("0.61"), "stop")],
    ),
    "the same Stop without a Start, twice": (
        [ev(STOP, at=60, seconds=60), ev(STOP, at=69, seconds=60, delay=9)],
        ["charged", "duplicate"],
        [(60, D("0.60"), "stop")],
    ),
    # without Acct-Session-Time a copy arriving later would time a longer call: the leg and
    # its Start say it is the same Stop (test_sip_legs)
    "a timed Stop re-sent later is known by its Start": (
        [ev(START), ev(STOP, at=61), ev(STOP, at=75), ev(STOP, at=200)],
        ["recorded", "charged", "duplicate", "duplicate"],
        [(61, D("0.61"), "stop")],
    ),
    "a Stop before its Start: the late Start opens nothing": (
        [ev(STOP, at=61, seconds=61), late(START, "s1", event_at=0, arrived_at=62)],
        ["charged", "recorded"],
        [(61, D("0.61"), "stop")],
    ),
    "a Stop for a call never started is charged (the account is known)": (
        [ev(STOP, "never", at=30, seconds=30)],
        ["charged"],
        [(30, D("0.30"), "stop")],
    ),
    "a Stop of an unknown account is recorded, never charged": (
        [ev(STOP, "x", at=60, seconds=60, user="stranger")] * 2,
        ["unknown_account", "unknown_account"],
        [],
    ),
    # the same identity with another duration is another leg (a Call-ID collision)
    "a Stop of another duration is another leg, charged": (
        [ev(STOP, "dup", at=60, seconds=60), ev(STOP, "dup", at=70, seconds=10)],
        ["charged", "charged"],
        [(60, D("0.60"), "stop"), (10, D("0.10"), "stop")],
    ),
    "the answer leg of a call billed on its originate leg is not billable": (
        [ev(STOP, "h", at=100, seconds=100, origin=o) for o in ("answer", "originate")],
        ["not_billable", "charged"],
        [(100, D("1.00"), "stop")],
    ),
    # the same Call-ID and tags later: a new call (its Start after the last Stop)
    "a reused Call-ID later is a new call, charged again": (
        [ev(START), ev(STOP, at=61), ev(START, at=100), ev(STOP, at=161)],
        ["recorded", "charged", "recorded", "charged"],
        [(61, D("0.61"), "stop"), (61, D("0.61"), "stop")],
    ),
    "a retransmitted Start after its Stop does not reopen the call": (
        [ev(START), ev(STOP, at=61), ev(START, at=30)],
        ["recorded", "charged", "recorded"],
        [(61, D("0.61"), "stop")],
    ),
    "other dialog tags on the same Call-ID are another leg": (
        [
            ev(START, tags="a;b"),
            ev(STOP, at=61, tags="a;b"),
            ev(START, at=10, tags="c;d"),
            ev(STOP, at=70, tags="c;d"),
        ],
        ["recorded", "charged", "recorded", "charged"],
        [(61, D("0.61"), "stop"), (60, D("0.60"), "stop")],
    ),
}


@pytest.mark.parametrize(
    ("events", "expected", "cdrs"), list(EXACTLY_ONCE.values()), ids=list(EXACTLY_ONCE)
)
def test_each_leg_is_charged_once(
    events: list[AccountingEvent], expected: list[str], cdrs: list[tuple[int, Decimal, str]]
) -> None:
    w = world()
    assert w.results(*events) == expected
    assert w.cdrs() == cdrs
    assert w.charged() == sum((cost for _d, cost, _by in cdrs), D(0))
    assert len(w.ledger.state.charges) == len(cdrs)
    assert w.ledger.calls() == []  # every call ended
    assert w.live_view() == (w.opening - w.charged(), D(0), 0)
    w.assert_books_balance()


@pytest.mark.parametrize("batched", [False, True], ids=["one by one", "one group commit"])
def test_the_same_rules_hold_inside_one_group_commit(batched: bool) -> None:
    """A call started and stopped in one batch, its Stop twice (test_sql_store)."""
    w = world()
    batch = [
        ev(START, "a"),
        ev(START, "b"),
        ev(INTERIM, "a", 30, seconds=30),
        ev(STOP, "a", 61, seconds=61),
        ev(STOP, "a", 61, seconds=61),
    ]
    results = [o.result for o in w.acct.record_many(batch)] if batched else w.results(*batch)
    assert results == ["recorded", "recorded", "recorded", "charged", "duplicate"]
    assert [c.acct_session_id for c in w.ledger.calls()] == ["b"]  # still up
    assert w.live_view()[2] == 1
    assert w.results(ev(STOP, "b", 60, seconds=60)) == ["charged"]
    assert sorted(w.cdrs()) == [(60, D("0.60"), "stop"), (61, D("0.61"), "stop")]
    assert w.live_view() == (D("98.79"), D(0), 0)
    w.assert_books_balance()


def test_an_unknown_account_is_logged_once_per_leg() -> None:
    w = world()
    stranger = [ev(STOP, "x", at=60 + i, seconds=60, user="stranger") for i in range(3)]
    assert w.results(*stranger) == ["unknown_account"] * 3
    assert w.ledger.event_kinds() == ["unknown_account"]
    assert w.ledger.cdrs() == []
    assert len(w.ledger.state.packets) == 3  # every packet is stored as received


@MODES
def test_an_authorized_call_releases_its_hold_once(embedded: bool) -> None:
    w = world(embedded=embedded)
    grant = w.authorize("s1")
    assert grant.grant_seconds == 3600
    assert grant.hold == D("36.000000")
    assert w.live_view() == (D("100.00"), D("36.000000"), 0)
    assert w.results(ev(START), ev(INTERIM, at=30, seconds=30)) == ["recorded", "recorded"]
    assert w.live_view(at=30) == (D("100.00"), D("36.000000"), 1)
    call = w.ledger.calls()[0]
    assert (call.hold, call.granted_seconds, call.authorized_at) == (D("36"), 3600, T0)
    stops = [ev(STOP, at=61, seconds=61), ev(STOP, at=64, seconds=61, delay=3)]
    assert w.results(*stops) == ["charged", "duplicate"]
    released = [e for e in w.live.applied if isinstance(e, Released)]
    assert len(released) == 1
    assert w.live_view(at=64) == (D("99.39"), D(0), 0)
    w.assert_books_balance()


@MODES
def test_a_stop_before_its_start_releases_the_hold_once(embedded: bool) -> None:
    w = world(embedded=embedded)
    w.authorize("s1")
    assert w.results(ev(STOP, at=61, seconds=61)) == ["charged"]
    assert w.live_view(at=61) == (D("99.39"), D(0), 0)
    assert w.results(late(START, "s1", event_at=0, arrived_at=62)) == ["recorded"]
    assert w.ledger.calls() == []
    assert w.live_view(at=62) == (D("99.39"), D(0), 0)
    assert len([e for e in w.live.applied if isinstance(e, Released)]) == 1
    w.assert_books_balance()


def test_a_stop_stored_by_another_worker_first_reruns_the_batch_and_is_a_duplicate() -> None:
    """The batch conflicts at commit (LedgerConflict), is rolled back and run again: it
    then sees the other worker's leg (test_sql_store, on PostgreSQL)."""
    w = world()
    other = AccountingService(
        w.catalog,  # the same catalog: another worker of the same server
        w.ledger,
        w.live,
        auth_hold_seconds=HOLD_SECONDS,
        max_acct_delay_seconds=86400,
        sequenced_live=True,
    )
    w.ledger.before_commit.append(lambda: other.record(ev(STOP, "s1", 61, seconds=61)))
    outcomes = w.acct.record_many([ev(STOP, "s1", 61, seconds=61), ev(STOP, "s2", 60, seconds=60)])
    assert [o.result for o in outcomes] == ["duplicate", "charged"]
    assert w.ledger.conflicts == 1
    assert sorted(w.cdrs()) == [(60, D("0.60"), "stop"), (61, D("0.61"), "stop")]
    assert w.live_view() == (D("98.79"), D(0), 0)
    w.assert_books_balance()


def test_a_batch_that_keeps_conflicting_goes_to_the_caller_with_nothing_written() -> None:
    w = world()
    for _ in range(3):
        w.ledger.before_commit.append(lambda: w.acct.record(ev(START, "other")))
    with pytest.raises(LedgerConflict):
        w.acct.record(ev(STOP, "s1", 61, seconds=61))
    assert w.ledger.conflicts == 3
    assert w.ledger.cdrs() == []
    assert w.live_view()[0] == D("100.00")


# A call's packets as the NAS sends them: (status, event time, Acct-Session-Time)
ONE_CALL = ((START, 0, None), (INTERIM, 30, 30), (INTERIM, 45, 45), (STOP, 61, 61))


@MODES
@settings(max_examples=100, deadline=None)
@given(
    delays=st.tuples(*(st.lists(st.integers(0, 300), min_size=1, max_size=3) for _ in ONE_CALL)),
    ties=st.randoms(use_true_random=False),
    cuts=st.lists(st.booleans(), min_size=12, max_size=12),
    authorized=st.booleans(),
)
def test_any_order_and_any_copies_of_a_calls_packets_charge_it_once(
    embedded: bool,
    delays: tuple[list[int], ...],
    ties: random.Random,
    cuts: list[bool],
    authorized: bool,
) -> None:
    """Each packet sent once or more, each copy late by its own Acct-Delay-Time, all of them
    recorded in the order they arrive, in group commits cut anywhere: one CDR, one charge."""
    w = world(embedded=embedded)
    if authorized:
        w.authorize("s1", at=-1)
    copies = [
        ev(status, at=event_at + delay, seconds=seconds, delay=delay)
        for (status, event_at, seconds), sent in zip(ONE_CALL, delays, strict=True)
        for delay in sent
    ]
    ties.shuffle(copies)
    copies.sort(key=lambda e: e.arrived)  # stable: copies arriving together stay shuffled
    batch: list[AccountingEvent] = []
    for packet, cut in zip(copies, cuts, strict=False):
        batch.append(packet)
        if cut:
            w.acct.record_many(batch)
            batch = []
    w.acct.record_many(batch)
    assert w.cdrs() == [(61, D("0.61"), "stop")]
    assert len(w.ledger.state.charges) == 1
    assert w.ledger.calls() == []
    assert w.live_view(at=400) == (D("99.39"), D(0), 0)
    w.assert_books_balance()


# --- epochs ---------------------------------------------------------------------------------


@MODES
@pytest.mark.parametrize(("status", "closed_by"), [(ON, "accounting-on"), (OFF, "accounting-off")])
def test_accounting_on_off_closes_the_nas_calls_and_starts_an_epoch(
    status: AcctStatus, closed_by: str, embedded: bool
) -> None:
    w = world(embedded=embedded)
    w.authorize("c1")
    w.authorize("held-only", at=10)  # authorized, never accounted
    assert w.results(ev(START, "c1"), ev(INTERIM, "c1", 40, seconds=40)) == ["recorded"] * 2
    assert w.results(ev(START, "elsewhere", nas=OTHER_NAS)) == ["recorded"]
    outcome = w.acct.record(ev(status, "reboot", 100))
    # the embedded live state counts the bare authorization too: it is a calls row there
    assert (outcome.result, outcome.closed_calls) == ("closed", 2 if embedded else 1)
    assert w.cdrs() == [(40, D("0.40"), closed_by)]
    with w.ledger.accounting() as tx:
        assert tx.current_epoch(NAS) == (1, T0 + timedelta(seconds=100))
        assert tx.current_epoch(OTHER_NAS) == (0, None)
    # the NAS's holds and calls are gone; the other NAS's call is untouched
    assert [c.nas_key for c in w.ledger.calls()] == [OTHER_NAS]
    assert NasReleased(NAS, T0 + timedelta(seconds=100)) in w.live.applied
    assert w.live_view(at=100) == (D("99.60"), D(0), 1)
    assert w.ledger.event_kinds() == ["nas_rebooted"]
    w.assert_books_balance()


def test_a_second_accounting_on_moves_the_epoch_again_and_closes_nothing_twice() -> None:
    w = world()
    w.results(ev(START, "c1"), ev(INTERIM, "c1", 40, seconds=40))
    assert w.acct.record(ev(ON, "r", 100)).closed_calls == 1
    assert w.acct.record(ev(ON, "r", 101)).closed_calls == 0
    with w.ledger.accounting() as tx:
        assert tx.current_epoch(NAS)[0] == 2
    assert w.cdrs() == [(40, D("0.40"), "accounting-on")]


def test_a_call_of_the_new_boot_survives_its_late_accounting_on() -> None:
    """The On's event time (less its Acct-Delay-Time) is the reboot: a call started after it
    belongs to the new boot."""
    w = world()
    assert w.results(ev(START, "old"), ev(START, "new", 60)) == ["recorded", "recorded"]
    outcome = w.acct.record(late(ON, "r", event_at=50, arrived_at=100))
    assert outcome.closed_calls == 1
    assert [c.acct_session_id for c in w.ledger.calls()] == ["new"]
    assert w.cdrs() == [(0, D("0.00"), "accounting-on")]


LATE_PACKETS = {
    # (the late packet of the closed epoch, its outcome, the CDRs after it, the ledger rows)
    "a late Stop corrects the closed call to its real duration": (
        late(STOP, "c1", event_at=90, arrived_at=120, seconds=50),
        "corrected",
        [(50, D("0.50"), "accounting-on")],
        2,  # the charge at 40 s and the correction's 10 s
    ),
    # the server's CDR is confirmed (marked corrected), with no ledger row: nothing moved
    "a late Stop of the closed call's length confirms it at no charge": (
        late(STOP, "c1", event_at=90, arrived_at=120, seconds=40),
        "corrected",
        [(40, D("0.40"), "accounting-on")],
        1,
    ),
    "a late Interim does not reopen the call": (
        late(INTERIM, "c1", event_at=90, arrived_at=120, seconds=60),
        "recorded",
        [(40, D("0.40"), "accounting-on")],
        1,
    ),
    "a late Start does not reopen the call": (
        late(START, "c1", event_at=90, arrived_at=120),
        "recorded",
        [(40, D("0.40"), "accounting-on")],
        1,
    ),
}


@pytest.mark.parametrize(
    ("packet", "result", "cdrs", "rows"), list(LATE_PACKETS.values()), ids=list(LATE_PACKETS)
)
def test_a_late_packet_of_the_old_epoch(
    packet: AccountingEvent, result: str, cdrs: list[tuple[int, Decimal, str]], rows: int
) -> None:
    w = world()
    w.authorize("c1")
    w.results(ev(START, "c1"), ev(INTERIM, "c1", 40, seconds=40), ev(ON, "r", 100))
    assert w.results(packet) == [result]
    assert w.results(packet) == ["duplicate" if result == "corrected" else result]
    assert w.cdrs() == cdrs
    assert w.charged() == cdrs[0][1]
    assert len(w.ledger.state.charges) == rows
    assert w.ledger.calls() == []
    assert w.live_view(at=120) == (w.opening - cdrs[0][1], D(0), 0)
    w.assert_books_balance()


def test_a_late_stop_of_a_call_closed_at_zero_is_charged_by_its_correction() -> None:
    w = world()
    w.results(ev(START, "c1"), ev(ON, "r", 100))
    assert w.cdrs() == [(0, D("0.00"), "accounting-on")]
    assert w.ledger.state.charges == []
    outcome = w.acct.record(late(STOP, "c1", event_at=95, arrived_at=130, seconds=95))
    assert (outcome.result, outcome.cost, outcome.duration) == ("corrected", D("0.95"), 95)
    assert w.cdrs() == [(95, D("0.95"), "accounting-on")]
    assert w.ledger.cdrs()[0].corrected_at == T0 + timedelta(seconds=95)
    w.assert_books_balance()


# A call whose Start was recorded before a late Accounting-On (one whose event time precedes
# the call's start) is kept as a call of the new boot, and moves to the new epoch: closed
# later by the server (stale, another On/Off), its CDR is the leg its real Stop corrects.
# (Found by these fakes: its row kept the old epoch, and the Stop charged it a second time.)
@MODES
def test_a_call_kept_by_a_late_accounting_on_is_later_corrected_by_its_stop(
    embedded: bool,
) -> None:
    w = world(max_call_length=60, embedded=embedded)
    w.results(ev(START, "old"), ev(START, "new", 60))
    assert w.acct.record(late(ON, "r", event_at=50, arrived_at=100)).closed_calls == 1
    w.results(ev(INTERIM, "new", 90, seconds=30))
    assert w.acct.close_stale(T0 + timedelta(seconds=90 + 61 + STALE_GRACE)) == 1
    assert w.cdrs() == [(0, D(0), "accounting-on"), (30, D("0.30"), "stale")]
    assert w.results(ev(STOP, "new", 500, seconds=120)) == ["corrected"]
    assert w.cdrs() == [(0, D(0), "accounting-on"), (120, D("1.20"), "stale")]
    assert w.charged() == D("1.20")


# An Accounting-On sent again (re-sent with a grown Acct-Delay-Time it has a new
# authenticator, which the duplicate cache does not know; or sent to another node) moves the
# epoch a second time; a late Stop of a call the first one closed still finds that leg: it
# is looked for in the last epochs before the current one, the newest first. (Found by
# these fakes: only the epoch just before was searched, and the Stop was charged again.)
@MODES
def test_a_late_stop_after_a_resent_accounting_on_corrects_the_closed_call(
    embedded: bool,
) -> None:
    w = world(embedded=embedded)
    w.authorize("c1")
    w.results(ev(START, "c1"), ev(INTERIM, "c1", 45, seconds=45), ev(ON, "boot", 100))
    assert w.results(late(ON, "boot", event_at=100, arrived_at=105)) == ["closed"]
    assert w.cdrs() == [(45, D("0.45"), "accounting-on")]
    assert w.results(late(STOP, "c1", event_at=61, arrived_at=120, seconds=61)) == ["corrected"]
    assert w.cdrs() == [(61, D("0.61"), "accounting-on")]
    assert w.charged() == D("0.61")


@MODES
def test_a_late_stop_after_an_off_and_an_on_corrects_the_call_the_off_closed(
    embedded: bool,
) -> None:
    """A NAS restarted gracefully sends an Accounting-Off, then an Accounting-On when it is
    back: two epochs at one reboot; a Stop of a call the Off closed, arriving after both,
    corrects that call."""
    w = world(embedded=embedded)
    w.authorize("c1")
    w.results(ev(START, "c1"), ev(INTERIM, "c1", 45, seconds=45))
    assert w.results(ev(OFF, "down", 100), ev(ON, "up", 160)) == ["closed", "closed"]
    assert w.cdrs() == [(45, D("0.45"), "accounting-off")]
    assert w.results(late(STOP, "c1", event_at=70, arrived_at=200, seconds=70)) == ["corrected"]
    assert w.cdrs() == [(70, D("0.70"), "accounting-off")]
    assert w.charged() == D("0.70")
    w.assert_books_balance()


def test_a_reused_session_id_in_a_new_epoch_is_a_new_call() -> None:
    w = world()
    w.results(ev(START, "c1"), ev(INTERIM, "c1", 40, seconds=40), ev(ON, "r", 100))
    # after the reboot the NAS numbers its calls from the start again
    assert w.results(ev(START, "c1", 200), ev(STOP, "c1", 261, seconds=61)) == [
        "recorded",
        "charged",
    ]
    assert w.cdrs() == [(40, D("0.40"), "accounting-on"), (61, D("0.61"), "stop")]
    assert [c.leg.identity.epoch for c in w.ledger.cdrs()] == [0, 1]
    # and the old call's late Stop still finds its own epoch's leg
    assert w.results(late(STOP, "c1", event_at=90, arrived_at=300, seconds=50)) == ["corrected"]
    assert w.cdrs() == [(50, D("0.50"), "accounting-on"), (61, D("0.61"), "stop")]
    assert w.charged() == D("1.11")
    w.assert_books_balance()


# --- corrections: calls the server closed as stale ----------------------------------------------


def stale_world(*interims: int) -> World:
    """A call started at T0 with no authorization (allowed the cap: 60 s), its Interims,
    then closed as stale once silent for 60 s + the grace."""
    w = world(max_call_length=60)
    w.results(ev(START, "quiet"), *(ev(INTERIM, "quiet", s, seconds=s) for s in interims))
    last = max(interims, default=0)
    assert w.acct.close_stale(T0 + timedelta(seconds=last + 60 + STALE_GRACE)) == 0
    assert w.acct.close_stale(T0 + timedelta(seconds=last + 61 + STALE_GRACE)) == 1
    return w


STALE = {
    # (Interims before the close, the real Stop's duration, CDR after the close, after the Stop)
    "silent call, then its Stop": ((), 61, (0, D("0.00")), (61, D("0.61"))),
    "closed at its last Interim, its Stop longer": ((30,), 61, (30, D("0.30")), (61, D("0.61"))),
    "closed at its last Interim, its Stop shorter: refunded": (
        (30,),
        20,
        (30, D("0.30")),
        (20, D("0.20")),
    ),
}


@pytest.mark.parametrize(
    ("interims", "duration", "closed", "corrected"), list(STALE.values()), ids=list(STALE)
)
def test_a_stale_call_is_closed_then_corrected_once_by_its_stop(
    interims: tuple[int, ...],
    duration: int,
    closed: tuple[int, Decimal],
    corrected: tuple[int, Decimal],
) -> None:
    w = stale_world(*interims)
    assert w.cdrs() == [(*closed, "stale")]
    assert w.charged() == closed[1]
    assert w.ledger.calls() == []
    assert w.live_view(at=400)[1:] == (D(0), 0)
    assert w.ledger.event_kinds() == ["call_stale"]
    stop = ev(STOP, "quiet", 500, seconds=duration)
    assert w.results(stop) == ["corrected"]
    assert w.results(stop, replace(stop, delay=3, arrived=stop.arrived + timedelta(seconds=3))) == [
        "duplicate",
        "duplicate",
    ]
    assert w.cdrs() == [(*corrected, "stale")]
    assert w.charged() == corrected[1]
    assert w.acct.close_stale(T0 + timedelta(hours=2)) == 0  # nothing left to close
    w.assert_books_balance()


def test_an_interim_after_the_stale_close_does_not_reopen_the_call() -> None:
    w = stale_world(30)
    assert w.results(ev(INTERIM, "quiet", 400, seconds=400)) == ["recorded"]
    assert w.ledger.calls() == []
    assert w.live_view(at=400)[2] == 0
    assert w.acct.close_stale(T0 + timedelta(hours=2)) == 0
    assert w.cdrs() == [(30, D("0.30"), "stale")]


@MODES
def test_a_stale_authorized_call_releases_its_hold(embedded: bool) -> None:
    w = world(embedded=embedded)
    w.authorize("c1")
    w.results(ev(START, "c1"), ev(INTERIM, "c1", 30, seconds=30))
    assert w.live_view(at=30) == (D("100.00"), D("36.000000"), 1)
    # its grant (3600 s) plus the grace
    assert w.acct.close_stale(T0 + timedelta(seconds=30 + 3600 + STALE_GRACE)) == 0
    assert w.acct.close_stale(T0 + timedelta(seconds=31 + 3600 + STALE_GRACE)) == 1
    assert w.live_view(at=4000) == (D("99.70"), D(0), 0)
    assert w.results(ev(STOP, "c1", 4000, seconds=61)) == ["corrected"]
    assert w.cdrs() == [(61, D("0.61"), "stale")]
    w.assert_books_balance()


# Without Redis an authorization stores its held call with no epoch of its own (0); its
# accounting moves it to the NAS's epoch, so the CDR a server's close gives it is the leg
# its real Stop corrects. (Found by these fakes: the Stop charged the call a second time.)
@MODES
def test_after_an_accounting_on_a_stale_authorized_call_is_corrected_by_its_stop(
    embedded: bool,
) -> None:
    """As above, on a NAS that once sent an Accounting-On (every NAS does on boot)."""
    w = world(embedded=embedded)
    w.results(ev(ON, "boot", -10))
    w.authorize("c1")
    w.results(ev(START, "c1"), ev(INTERIM, "c1", 30, seconds=30))
    assert w.acct.close_stale(T0 + timedelta(seconds=31 + 3600 + STALE_GRACE)) == 1
    assert w.cdrs() == [(30, D("0.30"), "stale")]
    assert w.results(ev(STOP, "c1", 4000, seconds=61)) == ["corrected"]
    assert w.cdrs() == [(61, D("0.61"), "stale")]
    assert w.charged() == D("0.61")
    w.assert_books_balance()


def test_a_zero_second_stop_after_the_stale_close_changes_nothing() -> None:
    w = stale_world(30)
    assert w.results(ev(STOP, "quiet", 500, seconds=0)) == ["ended"]
    assert w.cdrs() == [(30, D("0.30"), "stale")]
    w.assert_books_balance()


# --- money -----------------------------------------------------------------------------------

MONEY = {
    # (rate, duration, cost): the cost is rounded once, half-up, to 6 places
    "0.05/min for 60 s is 0.05, not 60 roundings of 0.000833": (per_second("0.05"), 60, "0.05"),
    "0.05/min for 1 s": (per_second("0.05"), 1, "0.000833"),
    "half a micro-unit rounds up": (per_second("0.00003"), 1, "0.000001"),
    "just under half a micro-unit rounds down": (per_second("0.0000299"), 1, "0.000000"),
    "the setup fee is added before the one rounding": (
        per_second("0.05", setup_fee="0.0000005"),
        1,
        "0.000834",
    ),
    "a minute grid: 61 s bill 120 s": (
        Rate("1", "USA", D("0.10"), D(0), 60, 60, 0, T0 - timedelta(days=1)),
        61,
        "0.20",
    ),
}


@pytest.mark.parametrize(("rate", "duration", "cost"), list(MONEY.values()), ids=list(MONEY))
def test_a_call_costs_its_rate_rounded_once_half_up(rate: Rate, duration: int, cost: str) -> None:
    w = world(rate=rate)
    outcome = w.acct.record(ev(STOP, at=duration, seconds=duration))
    assert outcome.result == "charged"
    assert outcome.cost == D(cost)
    assert outcome.cost is not None and outcome.cost.as_tuple().exponent == -6
    if D(cost):
        assert [(c.amount, c.cdr_id) for c in w.ledger.state.charges] == [(-D(cost), 1)]
    else:
        assert w.ledger.state.charges == []
    w.assert_books_balance()


def test_a_correction_is_rounded_once_at_the_corrected_duration() -> None:
    w = world(rate=per_second("0.05"), max_call_length=60)
    w.results(ev(START, "quiet"), ev(INTERIM, "quiet", 1, seconds=1))
    assert w.acct.close_stale(T0 + timedelta(seconds=1 + 61 + STALE_GRACE)) == 1
    assert w.cdrs() == [(1, D("0.000833"), "stale")]
    assert w.results(ev(STOP, "quiet", 500, seconds=60)) == ["corrected"]
    assert w.cdrs() == [(60, D("0.050000"), "stale")]
    assert [c.amount for c in w.ledger.state.charges] == [D("-0.000833"), D("-0.049167")]
    w.assert_books_balance()


@MODES
@pytest.mark.parametrize("final", [True, False], ids=["final", "retry"])
def test_a_zero_second_stop_costs_nothing(final: bool, embedded: bool) -> None:
    """zero_duration_stop: final ends the call; retry holds it again for another attempt
    (test_sip_legs)."""
    w = world(embedded=embedded)
    w.authorize("s1")
    outcome = w.acct.record(ev(START)) and w.acct.record(ev(STOP, seconds=0, final=final))
    assert (outcome.result, outcome.cost, outcome.duration) == ("ended", D(0), 0)
    assert w.ledger.cdrs() == []
    assert w.ledger.state.charges == []
    if final:
        assert w.ledger.calls() == []
        assert w.live_view() == (D("100.00"), D(0), 0)
    else:
        assert [c.state for c in w.ledger.calls()] == ["held"]
        assert w.live_view() == (D("100.00"), D("36.000000"), 0)  # still counted, held
        assert w.live_view(at=HOLD_SECONDS + 1)[1] == D(0)  # until the hold lapses
    w.assert_books_balance()


def test_a_start_resent_after_a_zero_second_ending_opens_a_call_the_stale_rule_closes() -> None:
    """README, zero_duration_stop: a zero-second ending leaves no CDR to compare a
    retransmitted Start with, so the Start opens a call again; the stale rule closes it at
    0 seconds. (A Kamailio Stop, with no Acct-Session-Time, that overtakes its Start is such
    an ending: that call is never charged.)"""
    w = world(max_call_length=60)
    assert w.results(ev(START), ev(STOP, at=0)) == ["recorded", "ended"]
    assert w.results(late(START, "s1", event_at=0, arrived_at=3)) == ["recorded"]
    assert w.live_view(at=3)[2] == 1
    assert w.acct.close_stale(T0 + timedelta(seconds=1 + 60 + STALE_GRACE)) == 1
    assert w.cdrs() == [(0, D(0), "stale")]
    assert w.live_view(at=400) == (D("100.00"), D(0), 0)
    w.assert_books_balance()


@MODES
def test_a_failed_leg_costs_nothing_and_its_call_is_charged_by_its_stop(embedded: bool) -> None:
    """e2e test_accounting: a Failed leg (retry) holds the call again; its Stop charges."""
    w = world(embedded=embedded)
    w.authorize("f1")
    assert w.results(ev(START, "f1"), ev(FAILED, "f1", 1, final=False)) == ["recorded", "ended"]
    assert w.ledger.cdrs() == []
    assert w.results(ev(STOP, "f1", 5, seconds=5)) == ["charged"]
    assert w.cdrs() == [(5, D("0.05"), "stop")]
    assert w.live_view(at=5) == (D("99.95"), D(0), 0)
    w.assert_books_balance()


def test_a_call_without_a_rate_is_recorded_at_no_cost() -> None:
    w = world(client=replace(ACME, rate_table_id=None))
    outcome = w.acct.record(ev(STOP, at=60, seconds=60))
    assert (outcome.result, outcome.cost) == ("charged", D(0))
    assert w.cdrs() == [(60, D(0), "stop")]
    assert w.ledger.state.charges == []


# --- the moment whose rate applies ------------------------------------------------------------

CHANGE = T0 + timedelta(hours=1)  # the rate doubles here (a new price list at midnight)
BEFORE_AND_AFTER = (
    replace(per_second("0.60"), end_date=CHANGE),
    replace(per_second("1.20"), effective_date=CHANGE),
)
MOMENTS = {
    # (bill_events_by, authorized, started, stopped: seconds from the change; cost of 90 s)
    "setup: authorized before the change": ("setup", -120, -60, 30, "0.90"),
    "connect: started before the change": ("connect", -120, -60, 30, "0.90"),
    "disconnect: stopped after the change": ("disconnect", -120, -60, 30, "1.80"),
    "setup: authorized before, started after": ("setup", -10, 5, 95, "0.90"),
    "connect: authorized before, started after": ("connect", -10, 5, 95, "1.80"),
}


@MODES
@pytest.mark.parametrize(
    ("bill_events_by", "authorized", "started", "stopped", "cost"),
    list(MOMENTS.values()),
    ids=list(MOMENTS),
)
def test_a_call_is_rated_at_its_clients_moment(
    bill_events_by: BillEventsBy,
    authorized: int,
    started: int,
    stopped: int,
    cost: str,
    embedded: bool,
) -> None:
    """CONTRACT §3, Times (test_invoice_moment): setup, connect or disconnect."""
    w = world(
        rates=BEFORE_AND_AFTER,
        client=replace(ACME, bill_events_by=bill_events_by),
        embedded=embedded,
    )
    at = (CHANGE - T0).total_seconds()
    w.authorize("s1", at + authorized)
    w.results(ev(START, at=at + started))
    outcome = w.acct.record(ev(STOP, at=at + stopped, seconds=stopped - started))
    assert (outcome.result, outcome.cost) == ("charged", D(cost))
    rated = {"setup": authorized, "connect": started, "disconnect": stopped}[bill_events_by]
    assert w.ledger.cdrs()[0].leg.rated_at == CHANGE + timedelta(seconds=rated)
    w.assert_books_balance()


@pytest.mark.parametrize(
    ("bill_events_by", "cost"), [("setup", "0.90"), ("connect", "0.90"), ("disconnect", "1.80")]
)
def test_without_start_or_authorization_the_call_began_its_duration_before_its_stop(
    bill_events_by: BillEventsBy, cost: str
) -> None:
    w = world(rates=BEFORE_AND_AFTER, client=replace(ACME, bill_events_by=bill_events_by))
    at = (CHANGE - T0).total_seconds()
    outcome = w.acct.record(ev(STOP, at=at + 30, seconds=90))  # began 60 s before the change
    assert outcome.cost == D(cost)
    assert w.ledger.cdrs()[0].leg.rated_at == CHANGE + timedelta(
        seconds=30 if bill_events_by == "disconnect" else -60
    )


@MODES
def test_the_hold_names_who_pays_not_the_stops_attributes(embedded: bool) -> None:
    """A Stop whose User-Name matches no account is still the authorized call's."""
    w = world(embedded=embedded)
    w.authorize("s1")
    outcome = w.acct.record(ev(STOP, at=61, seconds=61, user="stranger"))
    assert (outcome.result, outcome.client_id, outcome.cost) == ("charged", ACME.id, D("0.61"))
    assert w.live_view(at=61) == (D("99.39"), D(0), 0)
    w.assert_books_balance()
