"""The Redis live state against a real Redis server (and PostgreSQL as the ledger)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster
from sqlalchemy import text

from billing_core.adapters.redis_live import RedisLiveState, ResyncingLive
from billing_core.adapters.sql.db import make_engine
from billing_core.adapters.sql.store import SqlStore
from billing_core.domain.accounting_packets import AccountingEvent
from billing_core.domain.calls import CallState
from billing_core.domain.identification import CallerFacts
from billing_core.domain.model import Client, RejectReason
from billing_core.domain.money import from_micros, to_micros
from billing_core.domain.policy import Accept, GrantTerms, LiveSnapshot, Reject, decide
from billing_core.domain.rating import Rate
from billing_core.ports import (
    Activated,
    BalanceMoved,
    ClientTruth,
    HoldRequest,
    LiveCall,
    NasReleased,
    Rehold,
    Released,
)
from billing_core.services.accounting import AccountingService
from billing_core.services.authorization import AuthorizationService, AuthorizeCall, CatalogCache
from billingctl.adapters import admin
from billingctl.provisioning import parse_provisioning
from billingctl.services import load
from tests import builders
from tests.conftest import RedisTarget


def now() -> datetime:
    """The real clock, read per use: holds lapse against it, however long the run."""
    return datetime.now(UTC).replace(microsecond=0)


EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def client(**kw: Any) -> Client:
    return builders.client(**{"id": 7, "name": "c", **kw})


def rate(**kw: Any) -> Rate:
    return builders.rate(**{"rate": Decimal("0.20"), **kw})


def no_loader(_client_id: int) -> ClientTruth:
    raise AssertionError("the client should be loaded already")


def request(terms: GrantTerms, ids: tuple[str, ...] = (), uid: str = "u") -> HoldRequest:
    return HoldRequest(
        terms=terms,
        nas_key="nas",
        account_id=1,
        called="1555",
        identifiers=ids,
        acct_session_id="",
        now=now(),
        hold_seconds=180,
        uid=uid,
    )


amounts = st.integers(min_value=-5_000_000, max_value=20_000_000).map(from_micros)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    balance=amounts,
    credit=st.sampled_from([Decimal(0), Decimal("5"), Decimal("-2")]),
    postpaid=st.booleans(),
    capacity=st.one_of(st.none(), st.integers(0, 4)),
    low=st.one_of(st.none(), st.tuples(amounts, st.integers(0, 3))),
    others=st.lists(st.integers(0, 3_000_000), max_size=4),
    price=st.integers(0, 2_000_000).map(from_micros),
    setup=st.integers(0, 100_000).map(from_micros),
    min_volume=st.integers(0, 120),
    interval=st.integers(1, 90),
    grace=st.integers(0, 30),
    mcl=st.integers(1, 7200),
    auth_only=st.booleans(),
)
def test_the_lua_policy_decides_as_the_python_policy(
    redis_url: str,
    balance: Decimal,
    credit: Decimal,
    postpaid: bool,
    capacity: int | None,
    low: tuple[Decimal, int] | None,
    others: list[int],
    price: Decimal,
    setup: Decimal,
    min_volume: int,
    interval: int,
    grace: int,
    mcl: int,
    auth_only: bool,
) -> None:
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    live = RedisLiveState(r, no_loader)
    c = client(
        credit=credit,
        postpaid=postpaid,
        capacity=capacity,
        low_balance_threshold=low[0] if low else None,
        low_balance_capacity=low[1] if low else None,
    )
    the_rate = rate(
        rate=price, setup_fee=setup, min_volume=min_volume, interval=interval, grace_volume=grace
    )
    r.set("{c:7}:bal", to_micros(balance))
    for i, hold in enumerate(others):
        record = {"s": "a", "h": hold, "e": 0, "a": 2, "c": "x", "n": "nas", "t": 0, "g": 60}
        r.hset("{c:7}:calls", f"other{i}", json.dumps({**record, "i": [], "x": 1}))
    terms = GrantTerms(c, None if auth_only else the_rate, mcl)
    expected = decide(terms, LiveSnapshot(balance, from_micros(sum(others)), len(others)))
    assert live.authorize(request(terms)) == expected


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


Tally = tuple[tuple[int, int, int, int], dict[str, int]]


def _tallied(r: redis.Redis, client_id: int = 7) -> Tally:
    """What ``{c:N}:agg`` and ``{c:N}:hs`` must say, counted from the client's records: the
    holds and number of the active calls, those of the held calls whose expiry is after
    ``hl`` (the time authorizations have taken lapsed holds off up to), each held call's uid
    and hold expiry."""
    records = {
        _str(uid): json.loads(raw) for uid, raw in r.hgetall(f"{{c:{client_id}}}:calls").items()
    }
    hl = int(r.hget(f"{{c:{client_id}}}:agg", "hl") or 0)
    active = [c for c in records.values() if c["s"] == "a"]
    pending = [c for c in records.values() if c["s"] == "h" and int(c["e"]) > hl]
    held = {uid: int(c["e"]) for uid, c in records.items() if c["s"] == "h"}
    return (
        sum(int(c["h"]) for c in active),
        len(active),
        sum(int(c["h"]) for c in pending),
        len(pending),
    ), held


def _kept(r: redis.Redis, client_id: int = 7) -> Tally:
    tag = f"{{c:{client_id}}}"
    ah, an, hh, hc = r.hmget(f"{tag}:agg", ["ah", "an", "hh", "hc"])
    scored: Any = r.zrange(f"{tag}:hs", 0, -1, withscores=True)
    held = {_str(u): int(e) for u, e in scored}
    return (int(ah or 0), int(an or 0), int(hh or 0), int(hc or 0)), held


def _records(r: redis.Redis, client_id: int = 7) -> dict[str, Any]:
    return {_str(u): json.loads(v) for u, v in r.hgetall(f"{{c:{client_id}}}:calls").items()}


def _others(r: redis.Redis, req: HoldRequest) -> LiveSnapshot:
    """The snapshot a full reading of the records gives the request: the funds held by the
    client's other calls that count at its time, and their number (its own call, found by
    identifier, account and number, left out), on the live balance."""
    tag = f"{{c:{req.terms.client.id}}}"
    records = {_str(u): json.loads(v) for u, v in r.hgetall(f"{tag}:calls").items()}
    own = None
    for ident in req.identifiers:
        found = r.hget(f"{tag}:ids", f"{req.nas_key}|{ident}")
        record = records.get(_str(found)) if found else None
        if record and record["a"] == req.account_id and record["c"] == req.called:
            own = _str(found)
            break
    now_ms = int(req.now.timestamp() * 1000)
    counting = [
        c
        for uid, c in records.items()
        if uid != own and (c["s"] == "a" or (c["s"] == "h" and c["e"] > now_ms))
    ]
    balance = from_micros(int(r.get(f"{tag}:bal") or 0))
    return LiveSnapshot(balance, from_micros(sum(int(c["h"]) for c in counting)), len(counting))


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("auth"), st.integers(0, 2), st.integers(0, 400), st.booleans()),
        st.tuples(st.just("act"), st.integers(0, 2), st.integers(0, 3_000_000), st.booleans()),
        st.tuples(st.just("rehold"), st.integers(0, 2), st.integers(-60, 300), st.booleans()),
        st.tuples(st.just("rel"), st.integers(0, 2), st.integers(0, 1), st.booleans()),
        st.tuples(st.just("relnas"), st.integers(0, 2), st.integers(0, 400), st.booleans()),
        st.tuples(st.just("load"), st.integers(0, 2), st.integers(0, 1), st.booleans()),
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS, capacity=st.one_of(st.none(), st.integers(1, 6)))
def test_the_tally_of_active_and_held_calls_follows_every_write(
    redis_url: str, steps: list[tuple[str, int, int, bool]], capacity: int | None
) -> None:
    """Authorizations (new calls and repeated ones, over time, so that holds lapse and past
    their retention are removed), activations, re-holds, releases, a NAS's release and
    reloads, in any order: after each, ``agg`` and ``hs`` say what the records say, and
    every authorization decides on what a reading of every record gives."""
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    accounted: list[Any] = []
    live = RedisLiveState(
        r, lambda _cid: ClientTruth(1, Decimal("3.00"), list(accounted)), retention_seconds=120
    )
    terms = GrantTerms(client(capacity=capacity), rate(), 600)
    live.load_client(7, replace=True)
    start = EPOCH
    for kind, n, value, flag in steps:
        ids = (f"conf-{n}", f"leg-{n}")
        if kind == "auth":
            req = replace(
                request(terms, ids if flag else (f"new-{value}",), uid=f"u{n}-{value}"),
                now=start + timedelta(seconds=value),
            )
            expected = decide(terms, _others(r, req))
            assert live.authorize(req) == expected
        elif kind == "act":
            effect = Activated(
                7, f"u{n}", from_micros(value), 60, 1, "1555", "nas", ids if flag else ()
            )
            live.apply([effect])
        elif kind == "rehold":
            live.apply([Rehold(7, f"u{n}", start + timedelta(seconds=value))])
        elif kind == "rel":
            live.apply([Released(7, f"u{n}", "nas", ids if flag else (), 1, "1555")])
        elif kind == "relnas":
            live.apply([NasReleased("nas", start + timedelta(seconds=value))])
        else:  # the database's accounted calls: the activated ones of the steps so far
            accounted[:] = [
                LiveCall(
                    f"db{n}",
                    "nas",
                    ids,
                    CallState.ACTIVE.value if value else CallState.HELD.value,
                    Decimal("0.40"),
                    start + timedelta(seconds=200),
                    1,
                    "1555",
                    start,
                    60,
                )
            ]
            live.load_client(7, replace=flag)
        assert _kept(r) == _tallied(r), (kind, n, value, flag)
        at = start + timedelta(seconds=value % 400)
        view = live.view([7], at)[7]
        every = _others(r, replace(request(terms), now=at))  # no identifiers: every call
        active = sum(1 for c in _records(r).values() if c["s"] == "a")
        assert (view.balance, view.held, view.active_calls) == (
            every.balance,
            every.held_by_others,
            active,
        )


def test_a_hold_counts_until_its_expiry_and_past_its_retention_only_an_accounted_one_stays(
    redis_url: str,
) -> None:
    """A hold counts while its expiry is after the request's time (not at it). A lapsed hold
    stays for the retention (a late Start still finds its authorization); past it, it is
    removed at the client's next authorization, unless its call was accounted (held again
    after a zero-second leg: accounting releases it)."""
    r = redis.Redis.from_url(redis_url)
    live = RedisLiveState(
        r, lambda _cid: ClientTruth(1, Decimal("100.00"), []), retention_seconds=60
    )
    terms = GrantTerms(client(capacity=1), rate(), 600)
    live.load_client(7, replace=False)

    def at(seconds: int, uid: str) -> Any:
        return live.authorize(
            replace(request(terms, (uid,), uid=uid), now=EPOCH + timedelta(seconds=seconds))
        )

    assert isinstance(at(0, "a"), Accept)  # held until 180 s
    assert at(179, "b") == Reject(RejectReason.CAPACITY)
    live.apply([Activated(7, "acc", Decimal("0.10"), 60, 1, "1555", "nas", ("acc",))])
    live.apply([Rehold(7, "acc", EPOCH + timedelta(seconds=100))])  # lapses at 100 s
    assert isinstance(at(180, "c"), Accept)  # a lapsed at 180, acc at 100: c held to 360 s
    assert {_str(u) for u in r.hkeys("{c:7}:calls")} == {"a", "acc", "c"}
    assert at(359, "d") == Reject(RejectReason.CAPACITY)
    assert isinstance(at(361, "e"), Accept)  # past 240 s (a's retention), a is gone
    assert {_str(u) for u in r.hkeys("{c:7}:calls")} == {"acc", "c", "e"}
    assert _kept(r) == _tallied(r)


def test_calls_an_earlier_version_wrote_beside_the_tally_are_counted_within_ten_seconds(
    redis_url: str,
) -> None:
    """During a rolling upgrade a node of the earlier version writes call records without
    the tally. A client's first authorization in ten seconds checks the tally against the
    records and counts them again when they differ: the call it missed counts from then on."""
    r = redis.Redis.from_url(redis_url)
    live = RedisLiveState(r, lambda _cid: ClientTruth(1, Decimal("100.00"), []))
    terms = GrantTerms(client(capacity=2), rate(), 600)
    live.load_client(7, replace=False)

    def at(seconds: int, uid: str) -> Any:
        moment = EPOCH + timedelta(seconds=seconds)
        return live.authorize(replace(request(terms, (uid,), uid=uid), now=moment))

    assert isinstance(at(0, "n1"), Accept)
    record = {"s": "a", "h": 4_000_000, "e": 0, "a": 2, "c": "x", "n": "nas", "t": 0, "g": 60}
    r.hset("{c:7}:calls", "old1", json.dumps({**record, "i": [], "x": 1}))  # no tally
    assert _kept(r) != _tallied(r)
    assert at(11, "n2") == Reject(RejectReason.CAPACITY)  # n1 held, old1 active: 2 of 2
    assert _kept(r) == _tallied(r)


def test_a_client_written_before_the_tally_is_counted_at_its_next_use(redis_url: str) -> None:
    """Records written by a version that kept no tally (an upgrade with Redis kept): the
    first script to touch the client counts them, and the next decisions use the count."""
    r = redis.Redis.from_url(redis_url)
    live = RedisLiveState(r, no_loader)
    r.set("{c:7}:bal", to_micros(Decimal("10.00")))
    for i, hold in enumerate([1_000_000, 2_500_000]):
        record = {"s": "a", "h": hold, "e": 0, "a": 2, "c": "x", "n": "nas", "t": 0, "g": 60}
        r.hset("{c:7}:calls", f"old{i}", json.dumps({**record, "i": [], "x": 1}))
    assert not r.exists("{c:7}:agg")
    terms = GrantTerms(client(capacity=3), rate(), 600)
    first = live.authorize(request(terms, ("conf-1",), uid="new1"))
    assert isinstance(first, Accept) and first.funds == Decimal("6.50")
    assert _kept(r) == _tallied(r)
    # the two active calls, and new1's hold (not lapsed): 3 of 3
    assert _kept(r)[0][:2] == (3_500_000, 2) and _kept(r)[0][3] == 1
    assert list(_kept(r)[1]) == ["new1"]
    assert live.authorize(request(terms, ("conf-2",), uid="new2")) == Reject(RejectReason.CAPACITY)


def test_a_repeated_request_for_the_same_call_holds_once(live_redis: RedisTarget) -> None:
    r = live_redis.client()
    live = RedisLiveState(r, lambda _cid: (0, Decimal("1.00"), []))
    terms = GrantTerms(client(rate_table_id=1), rate(rate=Decimal("0.10")), 3600)
    first = live.authorize(request(terms, ("conf-1",), uid="a"))
    again = live.authorize(request(terms, ("conf-1",), uid="b"))
    assert first == again == Accept(600, Decimal("1.00"), Decimal("1.00"))
    assert r.hlen("{c:7}:calls") == 1
    other = live.authorize(request(terms, ("conf-2",), uid="c"))
    assert other == Reject(RejectReason.INSUFFICIENT_FUNDS)


def test_concurrent_authorizations_never_hold_more_than_the_funds(
    live_redis: RedisTarget,
) -> None:
    r = live_redis.client()
    live = RedisLiveState(r, lambda _cid: (0, Decimal("10.00"), []))
    terms = GrantTerms(client(), rate(rate=Decimal("0.60")), 120)  # cost(120) = 1.20
    results: list[Any] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        decision = live.authorize(request(terms, (f"call-{i}",), uid=f"u{i}"))
        with lock:
            results.append(decision)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [d for d in results if isinstance(d, Accept)]
    held = sum((d.hold for d in accepted), Decimal(0))
    assert len(results) == 100
    assert held <= Decimal("10.00")
    # 8 full grants (9.60) and one last grant of the remaining 0.40 (1 grid point: 0.60 > 0.40)
    assert sorted(d.grant_seconds for d in accepted if d.grant_seconds) == [120] * 8
    assert sum(1 for d in results if d == Reject(RejectReason.INSUFFICIENT_FUNDS)) == 92


# --- through the services, with PostgreSQL as the ledger ------------------------------------


def provisioning(balance: str) -> Any:
    return parse_provisioning(
        {
            "settings": {"max_call_length": 1800},
            "rate_tables": [
                {
                    "name": "t",
                    "rates": [
                        {
                            "code": "1",
                            "rate": "0.20",
                            "min_volume": 60,
                            "interval": 60,
                            "effective_date": "2026-01-01",
                        }
                    ],
                }
            ],
            "clients": [
                {
                    "name": "Acme",
                    "rate_table": "t",
                    "payments": [{"id": "p", "amount": balance}],
                    "accounts": [{"name": "a", "ident": "login", "value": "acme"}],
                },
                {
                    "name": "Other",
                    "rate_table": "t",
                    "payments": [{"id": "q", "amount": "50.00"}],
                    "accounts": [{"name": "o", "ident": "login", "value": "other"}],
                },
            ],
        },
        lambda _p: iter(()),
    )


class Stack:
    def __init__(self, pg_url: str, target: RedisTarget) -> None:
        self.engine = make_engine(pg_url)
        self.store = SqlStore(self.engine)
        self.catalog = CatalogCache(self.store, min_interval=0)
        self.live = ResyncingLive(
            target.client(),
            self.store.live_client,
            clients=lambda: list(self.catalog.current.clients),
            marks=self.store,
            ended=self.store.ended_legs,
        )
        self.authz = AuthorizationService(
            lambda: self.catalog.current, self.live, max_call_length=7200, auth_hold_seconds=180
        )
        self.acct = AccountingService(
            lambda: self.catalog.current,
            self.store,
            self.live,
            auth_hold_seconds=180,
            max_acct_delay_seconds=86400,
            sequenced_live=True,
        )

    def authorize(self, conf_id: str, user: str = "acme") -> Any:
        return asyncio.run(
            self.authz.authorize(
                AuthorizeCall(
                    nas_key="nas",
                    caller=CallerFacts(user_name=user, called="15550001111"),
                    password=None,
                    chap=None,
                    identifiers=(conf_id, f"leg-{conf_id}"),
                    arrived=datetime.now(UTC),
                    acct_session_id=f"leg-{conf_id}",
                )
            )
        ).decision

    def account(
        self, conf_id: str, status: int, seconds: int | None = None, user: str = "acme"
    ) -> str:
        event = AccountingEvent(
            nas_key="nas",
            bill_leg="originate",
            status=status,
            acct_session_id=f"leg-{conf_id}",
            conf_id=conf_id,
            avpair_call_id=None,
            origin=None,
            session_time=seconds,
            delay=0,
            arrived=datetime.now(UTC) + timedelta(seconds=seconds or 0),
            caller=CallerFacts(user_name=user, called="15550001111"),
        )
        return self.acct.record(event).result

    def balance(self) -> Decimal:
        view = self.live.view([1], datetime.now(UTC))[1]
        return view.balance

    def view(self, client_id: int = 1) -> Any:
        return self.live.view([client_id], datetime.now(UTC))[client_id]

    def close(self) -> None:
        self.live.redis.close()
        self.engine.dispose()


def test_concurrent_holds_example_of_the_issue(pg_url: str, live_redis: RedisTarget) -> None:
    stack = Stack(pg_url, live_redis)
    load.apply_provisioning(stack.engine, provisioning("8.00"))
    stack.catalog.refresh(force=True)
    stack.live.rebuild()
    assert stack.authorize("c1") == Accept(1800, Decimal("6.00"), Decimal("8.00"))
    assert stack.authorize("c2") == Accept(600, Decimal("2.00"), Decimal("2.00"))
    assert stack.authorize("c3") == Reject(RejectReason.INSUFFICIENT_FUNDS)
    assert stack.account("c1", 1) == "recorded"
    assert stack.account("c1", 2, 720) == "charged"  # 720 s at 0.20/min = 2.40
    assert stack.balance() == Decimal("5.60")
    assert stack.authorize("c4") == Accept(1080, Decimal("3.60"), Decimal("3.60"))


def test_a_flushed_redis_is_rebuilt_from_the_database(pg_url: str, live_redis: RedisTarget) -> None:
    stack = Stack(pg_url, live_redis)
    load.apply_provisioning(stack.engine, provisioning("8.00"))
    stack.catalog.refresh(force=True)
    stack.live.rebuild()
    assert isinstance(stack.authorize("c1"), Accept)
    assert stack.account("c1", 1) == "recorded"  # accounted: survives a flush
    assert stack.account("c1", 3, 30) == "recorded"
    assert stack.authorize("c2") == Accept(600, Decimal("2.00"), Decimal("2.00"))
    live_redis.flush()
    # c2 had no accounting yet: its hold is gone with Redis; c1's hold comes back from the calls
    assert stack.authorize("c3") == Accept(600, Decimal("2.00"), Decimal("2.00"))
    assert stack.account("c1", 2, 720) == "charged"
    assert stack.balance() == Decimal("5.60")
    assert stack.store.ledger_balances([1])[1] == Decimal("5.60")


@pytest.mark.parametrize("flush_between", [False, True])
def test_live_balance_equals_the_ledger_after_traffic(
    pg_url: str, live_redis: RedisTarget, flush_between: bool
) -> None:
    stack = Stack(pg_url, live_redis)
    load.apply_provisioning(stack.engine, provisioning("100.00"))
    stack.catalog.refresh(force=True)
    stack.live.rebuild()
    for i in range(20):
        stack.authorize(f"k{i}")
        stack.account(f"k{i}", 1)
        if flush_between and i == 10:
            live_redis.flush()
        stack.account(f"k{i}", 2, 61 + i)
    assert stack.balance() == stack.store.ledger_balances([1])[1]
    assert stack.live.view([1], datetime.now(UTC))[1].held == Decimal(0)


def test_billingctl_live_verify_reports_drift_and_rebuild_repairs_it(
    pg_url: str, live_redis: RedisTarget, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from billingctl.cli import main

    stack = Stack(pg_url, live_redis)
    load.apply_provisioning(stack.engine, provisioning("8.00"))
    stack.catalog.refresh(force=True)
    stack.live.rebuild()
    stack.authorize("v1")
    stack.account("v1", 2, 60)  # 0.20 charged: Redis and the ledger say 7.80
    config = tmp_path / "radiusd.toml"
    config.write_text(f'[database]\nurl = "{pg_url}"\n{live_redis.toml()}')
    args = ["--config", str(config), "live"]
    assert main([*args, "verify"]) == 0
    assert "every live balance equals its ledger" in capsys.readouterr().out
    live_redis.client().set("{c:1}:bal", to_micros(Decimal("9.99")))
    assert main([*args, "verify", "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["drifts"] == [
        {
            "client_id": 1,
            "live_balance": "9.99",
            "ledger_balance": "7.80",
            "difference": "2.19",
        }
    ]
    assert main([*args, "rebuild"]) == 0
    assert main([*args, "verify"]) == 0
    assert stack.balance() == Decimal("7.80")


# --- a live state that heals itself from the database ---------------------------------------


def started(pg_url: str, target: RedisTarget, balance: str = "8.00") -> Stack:
    stack = Stack(pg_url, target)
    load.apply_provisioning(stack.engine, provisioning(balance))
    stack.catalog.refresh(force=True)
    return stack


def test_a_rebuild_marks_what_it_read_applied(pg_url: str, live_redis: RedisTarget) -> None:
    """Data loaded without Redis leaves every client's sequence ahead of its applied mark;
    a rebuild brings those effects, so it marks them: no healer reloads every client again
    afterwards (with 10,000 clients, a thousand a second on every node)."""
    stack = started(pg_url, live_redis)
    try:
        assert {client for client, _seq in stack.store.unapplied_live()} == {1, 2}
        assert stack.live.rebuild() == 2
        assert stack.store.unapplied_live() == []
        assert stack.balance() == Decimal("8.00")
    finally:
        stack.close()


def test_effects_a_node_could_not_bring_to_redis_are_healed_by_another(
    pg_url: str, live_redis: RedisTarget
) -> None:
    """Node A is cut off from Redis and records a Stop (accounting goes on); the charge and
    the released call are in the database only. Node B's healer finds the client through
    the database's marks and, after the grace a writer has to apply its own effects,
    reloads it: no drift, no call left active."""
    b = started(pg_url, live_redis)
    # nothing listens there: every call of node A's fails
    a = Stack(pg_url, RedisTarget("redis://127.0.0.1:1/0", False, lambda: None))
    try:
        assert isinstance(b.authorize("c1"), Accept)
        assert b.account("c1", 1) == "recorded"
        assert b.view().active_calls == 1
        assert a.account("c1", 2, 720) == "charged"  # 2.40, in the database only
        assert a.live.missed
        assert b.view().active_calls == 1 and b.balance() == Decimal("8.00")
        assert b.live.heal(now=100.0) == 0  # seen lagging: its writer may still apply it
        assert b.live.heal(now=101.0) == 0
        assert b.live.heal(now=102.5) == 1
        view = b.view()
        assert (view.balance, view.held, view.active_calls) == (Decimal("5.60"), 0, 0)
        assert b.store.unapplied_live() == []
        assert b.live.heal(now=200.0) == 0
    finally:
        a.close()
        b.close()


def test_effects_redis_refuses_are_logged_and_healed_from_the_database(
    pg_url: str, live_redis: RedisTarget, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis that answers and refuses (here: a client's balance key of the wrong type, as a
    script's fault would) is not an outage: the accounting is recorded, the refusal is
    logged with Redis's message, and the heal reloads the client from the database."""
    stack = started(pg_url, live_redis)
    try:
        stack.live.rebuild()
        assert isinstance(stack.authorize("c1"), Accept)
        assert stack.account("c1", 1) == "recorded"
        r = live_redis.client()
        r.delete("{c:1}:bal")
        r.rpush("{c:1}:bal", "not a balance")
        with caplog.at_level("ERROR", logger="billing_core.adapters.redis_live"):
            assert stack.account("c1", 2, 720) == "charged"
        assert stack.live.missed
        assert [rec.getMessage() for rec in caplog.records if "refused" in rec.getMessage()]
        assert "WRONGTYPE" in caplog.text
        assert stack.live.heal(now=100.0) == 0
        assert stack.live.heal(now=102.5) == 1
        view = stack.view()
        assert (view.balance, view.active_calls) == (Decimal("5.60"), 0)
    finally:
        stack.close()


def test_one_node_heals_at_a_time_and_another_takes_over_when_it_stops(
    pg_url: str, live_redis: RedisTarget
) -> None:
    """Every node runs the healer each second; one holds the lease and does the work (the
    others would read and mark the same clients again); when it stops renewing the lease,
    another node's healer takes over within the lease's time."""
    a = started(pg_url, live_redis)
    b = Stack(pg_url, live_redis)
    b.live = ResyncingLive(
        live_redis.client(),
        b.store.live_client,
        clients=lambda: list(b.catalog.current.clients),
        marks=b.store,
        ended=b.store.ended_legs,
        heal_lease_ms=300,
    )
    a.live = ResyncingLive(
        live_redis.client(),
        a.store.live_client,
        clients=lambda: list(a.catalog.current.clients),
        marks=a.store,
        ended=a.store.ended_legs,
        heal_lease_ms=300,
    )
    try:
        assert a.live.rebuild() == 2 and a.store.unapplied_live() == []
        assert a.live.heal(now=0.0) == 0  # a takes the lease
        with b.engine.begin() as conn:  # a client lagging again
            conn.execute(text("UPDATE live_balances SET seq = seq + 1 WHERE client_id = 1"))
        assert b.live.heal(now=0.0) == 0 and b.store.unapplied_live() != []  # not its turn
        assert a.live.heal(now=1.0) == 0  # a renews it
        time.sleep(0.4)  # a stopped: its lease lapses
        assert b.live.heal(now=10.0) == 0  # b takes over, seeing the client lagging
        assert b.live.heal(now=12.5) == 1
        assert b.store.unapplied_live() == []
        assert a.live.heal(now=20.0) == 0  # b holds it now
    finally:
        a.close()
        b.close()


def test_a_call_whose_start_and_stop_both_missed_redis_frees_its_hold_at_the_heal(
    pg_url: str, live_redis: RedisTarget
) -> None:
    """Authorized on node B; its Start and its Stop both answered by node A, cut off from
    Redis (or by a node whose updates met a slot migration longer than its retries). The
    hold in Redis was never told its call ended: the heal's reload releases it, with its
    index entries, rather than keeping the funds held until the hold lapses. A hold whose
    call has no CDR (not accounted yet) stays."""
    b = started(pg_url, live_redis)
    a = Stack(pg_url, RedisTarget("redis://127.0.0.1:1/0", False, lambda: None))
    try:
        assert isinstance(b.authorize("c1"), Accept)
        assert isinstance(b.authorize("c2"), Accept)  # no accounting: its hold stays
        assert b.view().held == Decimal("8.00")
        assert a.account("c1", 1) == "recorded"
        assert a.account("c1", 2, 720) == "charged"  # 2.40, in the database only
        assert a.live.missed
        assert b.live.heal(now=100.0) == 0
        assert b.live.heal(now=102.5) == 1
        view = b.view()
        assert (view.balance, view.active_calls) == (Decimal("5.60"), 0)
        assert view.held == Decimal("2.00"), "c2's hold is kept, c1's released"
        r = live_redis.client()
        assert sorted(k.decode() if isinstance(k, bytes) else k for k in r.hkeys("{c:1}:ids")) == [
            "nas|c2",
            "nas|leg-c2",
        ]
        assert len(r.hkeys("{c:1}:calls")) == 1
        # the identifiers used again by a later call (a SIP Call-ID): the earlier call's CDR,
        # rated before this authorization, does not release the new call's hold
        with b.engine.begin() as conn:
            conn.execute(text("UPDATE cdrs SET created_at = created_at - interval '1 hour'"))
        assert isinstance(b.authorize("c1"), Accept)
        held = b.view().held
        assert held > Decimal("2.00")
        b.live.load_client(1, replace=True)
        assert b.view().held == held
    finally:
        a.close()
        b.close()


def test_applied_effects_are_only_marked_and_lagging_ones_wait_for_their_writer(
    pg_url: str, live_redis: RedisTarget
) -> None:
    """Effects that reached Redis are marked applied without a reload; a client whose
    writers keep applying (its sequence in Redis moves) is never reloaded under them."""
    stack = started(pg_url, live_redis)
    try:
        stack.view()  # loaded
        assert stack.store.unapplied_live() != []
        assert stack.live.heal(now=0.0) == 0
        assert stack.store.unapplied_live() == []
        moved: list[admin.LiveMove] = []
        admin.add_payment(stack.engine, "Acme", Decimal("1.00"), "", applied=moved)
        assert stack.live.heal(now=10.0) == 0  # committed, not applied yet: lagging
        admin.add_payment(stack.engine, "Acme", Decimal("1.00"), "", applied=moved)
        stack.live.apply([BalanceMoved(1, Decimal("1.00"))], {1: moved[0][2]})
        assert stack.live.heal(now=20.0) == 0  # progress since: wait again
        stack.live.apply([BalanceMoved(1, Decimal("1.00"))], {1: moved[1][2]})
        assert stack.live.heal(now=30.0) == 0
        assert stack.store.unapplied_live() == []
        assert stack.balance() == Decimal("10.00")
    finally:
        stack.close()


def test_effects_applied_out_of_order_reload_once_and_never_count_twice(
    pg_url: str, live_redis: RedisTarget
) -> None:
    """Two writers of one client commit in turn but reach Redis in the other order: the
    later one finds a gap and reloads the client (both effects are in the database); the
    earlier one then finds its effect already there."""
    stack = started(pg_url, live_redis)
    try:
        stack.view()
        moved: list[admin.LiveMove] = []
        admin.add_payment(stack.engine, "Acme", Decimal("1.00"), "", applied=moved)
        admin.add_payment(stack.engine, "Acme", Decimal("-3.00"), "", applied=moved)
        for client_id, amount, seq in reversed(moved):
            stack.live.apply([BalanceMoved(client_id, amount)], {client_id: seq})
            assert stack.balance() == Decimal("6.00")
        live_redis.client().set("{c:1}:seq", 1)  # Redis restored from older data
        assert stack.live.sweep() == 0  # not marked applied yet: the healer's business
        stack.store.mark_applied({1: moved[1][2]})
        live_redis.client().set("{c:1}:bal", 0)
        assert stack.live.sweep() == 1
        assert stack.balance() == Decimal("6.00")
    finally:
        stack.close()


def test_loading_a_client_never_holds_up_accounting_of_another(
    pg_url: str, live_redis: RedisTarget
) -> None:
    """A rebuild reads one client at a time: while a writer of client 1 has not committed,
    the rebuild waits at client 1, and client 2's accounting goes on meanwhile."""
    stack = started(pg_url, live_redis)
    other = make_engine(pg_url)
    try:
        assert isinstance(stack.authorize("o1", user="other"), Accept)
        with other.connect() as writer:
            writer.exec_driver_sql("UPDATE live_balances SET seq = seq + 1 WHERE client_id = 1")
            rebuilding = threading.Thread(target=stack.live.rebuild)
            rebuilding.start()
            rebuilding.join(timeout=1.0)
            assert rebuilding.is_alive()  # at client 1
            done: list[str] = []
            accounting = threading.Thread(
                target=lambda: done.append(stack.account("o1", 2, 60, user="other"))
            )
            accounting.start()
            accounting.join(timeout=20)
            assert done == ["charged"]
            assert rebuilding.is_alive()
            writer.commit()
        rebuilding.join(timeout=20)
        assert not rebuilding.is_alive()
        assert stack.view(2).balance == Decimal("49.80")
    finally:
        other.dispose()
        stack.close()


def test_a_held_call_is_listed_with_its_acct_session_id(
    pg_url: str, live_redis: RedisTarget
) -> None:
    """An authorization without accounting yet lives only in Redis: sessions list shows it
    with the Acct-Session-Id its Access-Request carried."""
    stack = started(pg_url, live_redis)
    try:
        assert isinstance(stack.authorize("h1"), Accept)
        [held] = admin.list_sessions(stack.engine, live=stack.live)
        assert (held["acct_session_id"], held["state"]) == ("leg-h1", "held")
    finally:
        stack.close()


def test_held_calls_and_a_nas_release_reach_every_master(live_redis: RedisTarget) -> None:
    """Holds of clients whose slots are on different masters of a cluster: the SCAN of
    held_calls and the Accounting-On/Off release (a SCAN of the NAS key's index entries,
    then one script per client) find them all."""
    live = RedisLiveState(live_redis.client(), lambda _cid: (0, Decimal("50.00"), []))
    if isinstance(live.redis, RedisCluster):  # the clients' slots: on several masters
        node = live.redis.get_node_from_key
        masters = {node(f"{{c:{cid}}}").name for cid in (1, 2, 4)}  # type: ignore[no-untyped-call]
        assert len(masters) >= 2, masters
    for cid in (1, 2, 4):
        terms = GrantTerms(client(id=cid), rate(), 600)
        for nas in ("nas-a", "nas-b"):
            held = replace(request(terms, (f"{nas}-{cid}",), uid=f"{nas}-{cid}"), nas_key=nas)
            assert isinstance(live.authorize(held), Accept)
    listed = sorted((c["client_id"], c["nas"], c["identifiers"]) for c in live.held_calls(now()))
    assert listed == [
        (cid, nas, [f"{nas}-{cid}"]) for cid in (1, 2, 4) for nas in ("nas-a", "nas-b")
    ]
    live.apply([NasReleased("nas-a", now() + timedelta(seconds=1))])
    left = sorted((c["client_id"], c["nas"]) for c in live.held_calls(now()))
    assert left == [(cid, "nas-b") for cid in (1, 2, 4)]
    views = live.view([1, 2, 4], now())
    assert {cid: view.held for cid, view in views.items()} == dict.fromkeys(
        (1, 2, 4), Decimal("2.00")
    )


def test_scripts_lost_by_one_master_are_loaded_and_each_effect_applied_once(
    live_redis: RedisTarget,
) -> None:
    """A master restarted (or a replica just promoted) has no scripts: its calls answer
    NOSCRIPT and did not run, while the other masters ran theirs. Only the calls refused
    are sent again, after the scripts are loaded: every balance moves exactly once."""
    r = live_redis.client()
    live = RedisLiveState(r, lambda _cid: (0, Decimal("10.00"), []))
    ids = (1, 2, 4)
    for cid in ids:
        live.load_client(cid, replace=True)
    live.apply([BalanceMoved(cid, Decimal("0.25")) for cid in ids])  # APPLY on every master
    if isinstance(r, RedisCluster):  # one master forgets: the one serving client 1
        node = r.get_node_from_key("{c:1}")  # type: ignore[no-untyped-call]
        r.get_redis_connection(node).script_flush()
    else:
        r.script_flush()
    live.apply([BalanceMoved(cid, Decimal("-1.25")) for cid in ids])
    views = live.view(list(ids), now())
    assert {cid: view.balance for cid, view in views.items()} == dict.fromkeys(ids, Decimal("9.00"))
    # the check-and-hold too, after its master lost the scripts
    r.script_flush()
    decision = live.authorize(request(GrantTerms(client(id=1), rate(), 600), ("x",), uid="x"))
    assert decision == Accept(600, Decimal("2.00"), Decimal("9.00"))


def test_billingctl_on_a_cluster_that_does_not_answer_says_so_in_one_line(
    sqlite_url: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from billingctl.cli import main

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "radiusd.toml"
    redis_section = f'[redis]\nurl = "redis://127.0.0.1:{port}"\n'
    config.write_text(f'[database]\nurl = "{sqlite_url}"\n{redis_section}cluster = true\n')
    assert main(["--config", str(config), "live", "verify"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("billingctl: redis unreachable: ") and err.count("\n") == 1, err
    config.write_text(f'[database]\nurl = "{sqlite_url}"\n{redis_section}cluster = "yes"\n')
    assert main(["--config", str(config), "live", "verify"]) != 0
    assert "redis.cluster: expected true or false" in capsys.readouterr().err


def test_accounting_that_missed_its_hold_adopts_it_instead_of_stranding_it(
    pg_url: str, live_redis: RedisTarget
) -> None:
    """A Start recorded while Redis could not be read (a failover, a migration, a cut) makes
    the call under its database id; the authorization's hold, under its own id, was left
    for auth_hold_seconds. The heal's load, and any activation, now take it over: one call,
    held once, and nothing held once it ends."""
    b = started(pg_url, live_redis)
    a = Stack(pg_url, RedisTarget("redis://127.0.0.1:1/0", False, lambda: None))
    try:
        assert b.authorize("m1") == Accept(1800, Decimal("6.00"), Decimal("8.00"))
        assert a.account("m1", 1) == "recorded"  # found no hold: the call's own id
        assert b.live.heal(now=0.0) == 0 and b.live.heal(now=5.0) == 1
        view = b.view()
        assert (view.active_calls, view.held) == (1, Decimal("0"))
        assert len(live_redis.client().hgetall("{c:1}:calls")) == 1
        assert b.account("m1", 2, 60) == "charged"
        view = b.view()
        assert (view.balance, view.held, view.active_calls) == (Decimal("7.80"), 0, 0)
    finally:
        a.close()
        b.close()


def test_an_activation_under_another_id_takes_over_the_calls_hold(
    live_redis: RedisTarget,
) -> None:
    live = RedisLiveState(live_redis.client(), lambda _cid: (0, Decimal("10.00"), []))
    terms = GrantTerms(client(), rate(), 600)
    held = live.authorize(request(terms, ("conf-9", "leg-9"), uid="auth-9"))
    assert held == Accept(600, Decimal("2.00"), Decimal("10.00"))
    other = live.authorize(request(terms, ("conf-8",), uid="auth-8"))
    assert isinstance(other, Accept)
    live.apply([Activated(7, "db42", Decimal(0), None, 1, "1555", "nas", ("conf-9", "leg-9"))])
    calls = {k if isinstance(k, str) else k.decode() for k in live.redis.hkeys("{c:7}:calls")}
    assert calls == {"db42", "auth-8"}
    view = live.view([7], now())[7]
    assert (view.held, view.active_calls) == (Decimal("4.00"), 1)  # the grant's hold kept


def test_a_stop_releases_the_hold_its_start_could_not_find(
    pg_url: str, live_redis: RedisTarget
) -> None:
    """The Start was recorded without Redis (its hold not found); the Stop, on a node that
    reaches Redis, finds a gap in the client's sequence and reloads the client from the
    database, which no longer knows the call: the Stop's release still takes the
    authorization's hold with it."""
    b = started(pg_url, live_redis)
    a = Stack(pg_url, RedisTarget("redis://127.0.0.1:1/0", False, lambda: None))
    try:
        assert isinstance(b.authorize("m2"), Accept)
        assert a.account("m2", 1) == "recorded"
        assert b.account("m2", 2, 60) == "charged"
        view = b.view()
        assert (view.balance, view.held, view.active_calls) == (Decimal("7.80"), 0, 0)
    finally:
        a.close()
        b.close()


def test_one_node_holds_the_chores_lease_and_redis_away_leaves_no_one_without_it(
    pg_url: str, live_redis: RedisTarget
) -> None:
    """The deployment's chores (stale calls, Disconnect-Requests, mail) follow a lease: one
    node holds it while it renews it, another takes it when it lapses; a node that cannot
    reach Redis is told so (None), and does the chores itself rather than nobody."""
    a, b = Stack(pg_url, live_redis), Stack(pg_url, live_redis)
    lives = [a.live, b.live]
    with socket.socket() as sock:  # a port where no Redis answers
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    away = ResyncingLive(
        redis.Redis(port=port, socket_connect_timeout=0.2),
        a.store.live_client,
        clients=list,
        marks=a.store,
        ended=a.store.ended_legs,
    )
    key = "radiusd:lease:test-chores"
    try:
        assert lives[0].holds_lease(key, 300) is True
        assert lives[1].holds_lease(key, 300) is False
        assert lives[0].holds_lease(key, 300) is True  # renewed
        time.sleep(0.4)  # a stopped renewing
        assert lives[1].holds_lease(key, 300) is True
        assert lives[0].holds_lease(key, 300) is False
        assert away.holds_lease(key, 300) is None
    finally:
        a.close()
        b.close()
