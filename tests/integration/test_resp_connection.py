"""RespConnection (the daemon's pipelining Redis connection) against a real Redis: replies in
order across batches in flight, error replies in place, a connection lost or silent with a
batch in flight, reconnecting, the database and the user of the URL."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis
from redis.exceptions import NoScriptError

from billing_core.adapters.resp import RespConnection, command, pipeline

T = TypeVar("T")


def run(make: Callable[[RespConnection], Awaitable[T]], url: str, **kw: Any) -> T:
    async def main() -> T:
        conn = RespConnection(url, **kw)
        try:
            return await asyncio.wait_for(make(conn), timeout=20)
        finally:
            await conn.close()

    return asyncio.run(main())


def test_batches_in_flight_together_get_their_own_replies_in_order(redis_url: str) -> None:
    async def many(conn: RespConnection) -> list[list[Any]]:
        batches = [[command(["INCR", "n"]) for _ in range(size)] for size in (3, 1, 5, 2)]
        return list(await asyncio.gather(*(conn.execute(b) for b in batches)))

    replies = run(many, redis_url)
    assert [len(r) for r in replies] == [3, 1, 5, 2]
    assert [n for r in replies for n in r] == list(range(1, 12))  # one write after another


def test_an_error_reply_takes_its_command_s_place(redis_url: str) -> None:
    async def mixed(conn: RespConnection) -> list[Any]:
        return await conn.execute(
            [
                command(["SET", "k", "é"]),
                command(["NO-SUCH-COMMAND"]),
                command(["EVALSHA", "0" * 40, 0]),
                command(["GET", "k"]),
            ]
        )

    ok, unknown, noscript, value = run(mixed, redis_url)
    assert ok == b"OK" and value == "é".encode()
    assert isinstance(unknown, redis.ResponseError) and not isinstance(unknown, NoScriptError)
    assert isinstance(noscript, NoScriptError)


def _kill_later(url: str, delay: float) -> threading.Thread:
    def kill() -> None:
        time.sleep(delay)
        redis.Redis.from_url(url).client_kill_filter(_type="normal", skipme=True)

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


def test_a_batch_in_flight_on_a_lost_connection_fails_and_the_next_reconnects(
    redis_url: str,
) -> None:
    r = redis.Redis.from_url(redis_url)

    async def lost(conn: RespConnection) -> list[Any]:
        assert await conn.execute([command(["SET", "a", 1])]) == [b"OK"]
        r.client_pause(1500, all=False)  # writes wait: the next batch stays in flight
        killer = _kill_later(redis_url, 0.2)
        with pytest.raises(redis.ConnectionError):
            await conn.execute([command(["SET", "b", 2])])
        killer.join()
        r.client_unpause()
        return await conn.execute([command(["SET", "c", 3]), command(["GET", "a"])])

    assert run(lost, redis_url) == [b"OK", b"1"]
    assert r.get("c") == b"3"


def test_a_silent_server_times_the_batch_out_and_the_next_batch_reconnects(
    redis_url: str,
) -> None:
    r = redis.Redis.from_url(redis_url)

    async def silent(conn: RespConnection) -> list[Any]:
        r.client_pause(800, all=False)
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            await conn.execute([command(["SET", "a", 1])])
        assert time.monotonic() - started < 0.7
        await asyncio.sleep(0.9)  # the pause is over
        return await conn.execute([command(["INCR", "n"])])

    assert run(silent, redis_url, timeout=0.3) == [1]


def test_the_database_and_the_user_of_the_url_are_used(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    user, password = f"radiusd-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"]
    )
    try:
        base = redis_url.split("//", 1)[1].rsplit("/", 1)[0]
        db = int(redis_url.rsplit("/", 1)[1] or 0)
        url = f"redis://{user}:{password}@{base}/{db}"
        assert run(lambda c: c.execute([command(["SET", "mine", "yes"])]), url) == [b"OK"]
        assert admin.get("mine") == b"yes"  # the URL's database, not database 0
        wrong = f"redis://{user}:not-{password}@{base}/{db}"
        with pytest.raises(redis.AuthenticationError):
            run(lambda c: c.execute([command(["PING"])]), wrong)
    finally:
        admin.acl_deluser(user)


def test_an_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(redis.ConnectionError):
        run(lambda c: c.execute([command(["PING"])]), f"redis://127.0.0.1:{port}/0")


def test_a_blocking_pipeline_reads_replies_in_order_with_errors_in_place(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    replies = pipeline(
        r,
        [
            ["SET", "k", "é"],
            ["NO-SUCH-COMMAND"],
            ["EVALSHA", "0" * 40, 0],
            ["MGET", "k", "missing"],
            ["INCR", "n"],
        ],
    )
    ok, unknown, noscript, values, count = replies
    assert ok == b"OK" and values == ["é".encode(), None] and count == 1
    assert isinstance(unknown, redis.ResponseError) and not isinstance(unknown, NoScriptError)
    assert isinstance(noscript, NoScriptError)
    assert pipeline(r, []) == []
    assert pipeline(r, [["GET", "k"]]) == ["é".encode()]  # the connection went back clean


def test_a_blocking_pipeline_on_a_killed_connection_sends_again_on_a_new_one(
    redis_url: str,
) -> None:
    r = redis.Redis.from_url(redis_url)
    assert pipeline(r, [["SET", "a", 1]]) == [b"OK"]  # a pooled connection, now idle
    redis.Redis.from_url(redis_url).client_kill_filter(_type="normal", skipme=True)
    assert pipeline(r, [["INCR", "a"], ["GET", "a"]]) == [2, b"2"]
