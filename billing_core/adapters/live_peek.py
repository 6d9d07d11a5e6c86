"""Read one client's live state without changing it (``billingctl explain``, the daemon's
trace): the same numbers the check-and-hold decides on, from Redis or the database.

Nothing is written: a client not loaded in Redis yet is not loaded here; its numbers are
read from the database's truth instead (the ledger and the calls whose accounting was
recorded), which is what Redis would load on first use.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from billing_core.domain.model import Client
from billing_core.domain.money import ZERO, from_micros
from billing_core.explain import LivePeek
from billing_core.ports import LiveState

from .redis_live import RedisLiveState, _keys, call_record
from .sql.store import SqlStore
from .sql.tables import calls_t, live_calls_condition, live_t


def peek(live: LiveState, store: SqlStore, client: Client, now: datetime) -> LivePeek:
    if isinstance(live, RedisLiveState):
        return _peek_redis(live, store, client.id, now)
    return _peek_database(store, client.id, now)


def _peek_database(store: SqlStore, client_id: int, now: datetime) -> LivePeek:
    with store.engine.connect() as conn:
        balance = conn.execute(
            select(live_t.c.balance).where(live_t.c.client_id == client_id)
        ).scalar_one_or_none()
        held, calls = conn.execute(
            select(func.sum(calls_t.c.hold), func.count()).where(
                calls_t.c.client_id == client_id, live_calls_condition(now)
            )
        ).one()
        active = conn.execute(
            select(func.count()).where(
                calls_t.c.client_id == client_id, calls_t.c.state == "active"
            )
        ).scalar_one()
    return LivePeek(
        balance if balance is not None else ZERO,
        held if held is not None else ZERO,
        int(calls),
        int(active),
        "database",
    )


def _counts(record: dict[str, Any], now_ms: int) -> bool:
    """As the Lua scripts: an active call, or a held one whose hold has not lapsed."""
    state = record.get("s")
    return state == "a" or (state == "h" and int(record.get("e", 0)) > now_ms)


def _peek_redis(live: RedisLiveState, store: SqlStore, client_id: int, now: datetime) -> LivePeek:
    now_ms = int(now.timestamp() * 1000)
    bal_key, calls_key = _keys(client_id)[:2]
    pipe = live.redis.pipeline(transaction=False)
    pipe.get(bal_key)
    pipe.hgetall(calls_key)
    raw_balance, raw_calls = pipe.execute()
    if raw_balance is None:  # not loaded yet: what the first use would load
        _seq, balance, loaded = store.live_client(client_id)
        records = [call_record(call) for call in loaded]
        source = "database (not in redis yet)"
    else:
        balance = from_micros(int(raw_balance))
        records = [json.loads(value) for value in raw_calls.values()]
        source = "redis"
    counting = [r for r in records if _counts(r, now_ms)]
    return LivePeek(
        balance,
        from_micros(sum(int(r.get("h", 0)) for r in counting)),
        len(counting),
        sum(1 for r in records if r.get("s") == "a"),
        source,
    )
