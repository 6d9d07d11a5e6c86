"""AsyncAuthorizer (the daemon's check-and-hold on its own pipelining connection) against a
real Redis, and ClusterAuthorizer (its twin on redis-py's asyncio cluster client) against a
real Redis Cluster: the same decisions and Redis writes as the synchronous RedisLiveState,
batching, scripts missing from the server, a dropped connection, and an unreachable
server."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import pytest
import redis

from billing_core.adapters.errors import unavailable
from billing_core.adapters.redis_cluster import ClusterAuthorizer
from billing_core.adapters.redis_connect import Authorizer, SyncRedis, authorizer
from billing_core.adapters.redis_live import AsyncAuthorizer, RedisLiveState
from billing_core.domain.model import RejectReason
from billing_core.domain.policy import Accept, GrantTerms, Reject
from tests.conftest import RedisTarget

from .test_redis_live import client, rate, request

T = TypeVar("T")

TERMS = GrantTerms(client(), rate(rate=Decimal("0.60")), 120)  # cost(120) = 1.20


def run(make: Callable[[Any], Awaitable[T]], url: str, *, cluster: bool = False, **kw: Any) -> T:
    """``make(authorizer)`` on a fresh event loop with a fresh authorizer (the daemon's, for
    one server or a cluster), closed after."""

    async def main() -> T:
        made: Authorizer = authorizer(url, kw.pop("load", lambda _cid: None), cluster=cluster, **kw)
        try:
            return await asyncio.wait_for(make(made), timeout=20)
        finally:
            await made.close()

    return asyncio.run(main())


def state(r: SyncRedis) -> dict[str, Any]:
    """Every key and its value (hashes as dicts), without the calls' timestamps."""
    out: dict[str, Any] = {}
    for name in sorted(bytes(key).decode() for key in r.scan_iter()):
        kind = r.type(name)
        if name == "{c:7}:calls":
            records = {k: json.loads(v) for k, v in r.hgetall(name).items()}
            for record in records.values():
                del record["t"], record["e"]
            out[name] = records
        elif kind == b"hash":
            out[name] = r.hgetall(name)
        elif kind == b"zset":  # the held calls, without their expiry times
            out[name] = sorted(r.zrange(name, 0, -1))
        else:
            out[name] = (r.get(name), r.ttl(name) > 0)
    return out


def test_decisions_and_writes_equal_the_synchronous_live_state(live_redis: RedisTarget) -> None:
    r = live_redis.client()
    requests = [request(TERMS, (f"conf-{i}", f"call-{i}"), uid=f"u{i}") for i in range(6)] + [
        request(TERMS, ("conf-1", "call-1"), uid="again"),  # the same call again
        request(TERMS, (), uid="no-ids"),
        request(GrantTerms(client(), None, 120), ("auth-only",), uid="auth-only"),
    ]

    r.set("{c:7}:bal", 5_000_000)  # 5.00: four calls of 1.20, then 0.20 left
    sync_live = RedisLiveState(r, lambda _cid: (0, Decimal(0), []))
    expected = [sync_live.authorize(req) for req in requests]
    expected_state = state(r)

    live_redis.flush()
    r.set("{c:7}:bal", 5_000_000)

    async def one_by_one(authorizer: Authorizer) -> list[Any]:
        return [await authorizer.authorize(req) for req in requests]

    assert run(one_by_one, live_redis.url, cluster=live_redis.cluster) == expected
    assert state(r) == expected_state
    short = Reject(RejectReason.INSUFFICIENT_FUNDS)
    assert expected == [
        Accept(120, Decimal("1.20"), Decimal("5.00")),
        Accept(120, Decimal("1.20"), Decimal("3.80")),
        Accept(120, Decimal("1.20"), Decimal("2.60")),
        Accept(120, Decimal("1.20"), Decimal("1.40")),
        short,  # 0.20 left, a minute costs 0.60
        short,
        Accept(120, Decimal("1.20"), Decimal("1.40")),  # conf-1 again: its own hold is not counted
        short,
        Accept(None, Decimal(0), Decimal("0.20")),
    ]


def test_a_burst_shares_one_pipeline_and_never_holds_more_than_the_funds(
    redis_url: str,
) -> None:
    r = redis.Redis.from_url(redis_url)
    r.set("{c:7}:bal", 10_000_000)
    sent: list[int] = []

    async def burst(authorizer: AsyncAuthorizer) -> list[Any]:
        execute = authorizer._execute

        async def counting(commands: list[bytes]) -> list[Any]:
            sent.append(len(commands))
            return await execute(commands)

        authorizer._execute = counting  # type: ignore[method-assign]
        return list(
            await asyncio.gather(
                *(
                    authorizer.authorize(request(TERMS, (f"call-{i}",), uid=f"u{i}"))
                    for i in range(100)
                )
            )
        )

    results = run(burst, redis_url)
    assert sent == [200]  # one write: the script and the index entries of each request
    accepted = [d for d in results if isinstance(d, Accept)]
    assert sorted(d.grant_seconds or 0 for d in accepted) == [120] * 8
    assert sum(d.hold for d in accepted) == Decimal("9.60")  # 0.40 left: less than a minute
    assert results.count(Reject(RejectReason.INSUFFICIENT_FUNDS)) == 92
    assert r.get("hold:{nas}:call-0") == b"7|u0"
    assert r.ttl("hold:{nas}:call-99") > 0


def test_scripts_missing_from_the_server_are_loaded_and_sent_again(
    live_redis: RedisTarget,
) -> None:
    r = live_redis.client()
    r.set("{c:7}:bal", 10_000_000)

    async def flushed_between(authorizer: Authorizer) -> list[Any]:
        first = await authorizer.authorize(request(TERMS, ("a",), uid="a"))
        r.script_flush()
        second = await authorizer.authorize(request(TERMS, ("b",), uid="b"))
        r.script_flush()
        third = await authorizer.authorize(request(TERMS, (), uid="c"))  # no index script
        return [first, second, third]

    decisions = run(flushed_between, live_redis.url, cluster=live_redis.cluster)
    assert [d.grant_seconds for d in decisions] == [120, 120, 120]
    assert r.hlen("{c:7}:calls") == 3  # each held once, none twice
    assert r.get("hold:{nas}:b") == b"7|b"


def test_a_client_missing_from_redis_is_loaded_then_decided(live_redis: RedisTarget) -> None:
    r = live_redis.client()
    loaded: list[int] = []

    def load(client_id: int) -> None:
        loaded.append(client_id)
        r.set("{c:7}:bal", 2_000_000)

    decision = run(
        lambda a: a.authorize(request(TERMS, ("x",), uid="x")),
        live_redis.url,
        cluster=live_redis.cluster,
        load=load,
    )
    assert loaded == [7]
    assert decision == Accept(120, Decimal("1.20"), Decimal("2.00"))


def test_a_killed_connection_fails_its_batch_and_the_next_reconnects(redis_url: str) -> None:
    """As with redis-py's Pipeline on a pool made from a URL (no retries): the batch on the
    dead connection fails (no reply; the switch sends again), the next one reconnects."""
    r = redis.Redis.from_url(redis_url)
    r.set("{c:7}:bal", 10_000_000)

    async def killed_between(authorizer: AsyncAuthorizer) -> list[Any]:
        first = await authorizer.authorize(request(TERMS, ("a",), uid="a"))
        r.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(redis.ConnectionError):
            await authorizer.authorize(request(TERMS, ("b",), uid="b"))
        third = await authorizer.authorize(request(TERMS, ("c",), uid="c"))
        return [first, third]

    assert [d.grant_seconds for d in run(killed_between, redis_url)] == [120, 120]
    assert r.hlen("{c:7}:calls") == 2


def test_an_unreachable_redis_raises_a_redis_connection_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def refused(authorizer: Authorizer) -> Any:
        return await authorizer.authorize(request(TERMS, ("a",), uid="a"))

    with pytest.raises(redis.ConnectionError):
        run(refused, f"redis://127.0.0.1:{port}/0")
    # on a cluster whose seed does not answer: an error the edge reads as "redis is down"
    # (the request is left unanswered), after the bounded retries
    with pytest.raises(Exception) as raised:
        run(refused, f"redis://127.0.0.1:{port}", cluster=True)
    assert unavailable(raised.value) == "redis"


def test_a_burst_on_a_cluster_never_holds_more_than_the_funds(live_redis: RedisTarget) -> None:
    """Concurrent requests of one client on the cluster's client: each check-and-hold is
    atomic in the client's slot, whichever master serves it; the index entries land in
    their NAS key's slot."""
    r = live_redis.client()
    r.set("{c:7}:bal", 10_000_000)
    r.set("{c:8}:bal", 0)

    async def burst(authorizer: Authorizer) -> list[Any]:
        assert isinstance(authorizer, ClusterAuthorizer if live_redis.cluster else AsyncAuthorizer)
        # another client first: a fresh cluster lacks the scripts (NOSCRIPT: the slow path
        # loads them on every master)
        warm = GrantTerms(client(id=8), rate(rate=Decimal("0.60")), 120)
        assert await authorizer.authorize(request(warm, ("warm",), uid="warm")) == Reject(
            RejectReason.ZERO_BALANCE
        )
        if isinstance(authorizer, ClusterAuthorizer):
            authorizer.slow = 0
        decisions = list(
            await asyncio.gather(
                *(
                    authorizer.authorize(request(TERMS, (f"call-{i}",), uid=f"u{i}"))
                    for i in range(40)
                )
            )
        )
        if isinstance(authorizer, ClusterAuthorizer):  # each call went straight to its master
            assert authorizer.slow == 0
        return decisions

    results = run(burst, live_redis.url, cluster=live_redis.cluster)
    accepted = [d for d in results if isinstance(d, Accept)]
    assert sorted(d.grant_seconds or 0 for d in accepted) == [120] * 8
    assert results.count(Reject(RejectReason.INSUFFICIENT_FUNDS)) == 32
    assert r.hlen("{c:7}:calls") == 8
    assert r.get("hold:{nas}:call-39") == b"7|u39"
