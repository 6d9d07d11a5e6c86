"""The daemon's check-and-hold on Redis Cluster.

Each request is two script calls: the check-and-hold in the client's slot, the index
entries in the NAS key's slot.

The fast path is ``AsyncAuthorizer``'s: the calls of one loop turn are grouped by the
master that serves their slot (the slot map read from redis-py's asyncio ``RedisCluster``)
and written to it in one write, on a pipelining connection per master
(``resp.RespConnection``), so that a request costs about what it costs on one server.

Whatever the fast path cannot settle, an error reply (MOVED or ASK in a slot migration,
TRYAGAIN, NOSCRIPT, CLUSTERDOWN) or a connection that fails, goes by the slow path: the
call is sent again through ``RedisCluster`` itself, and the slot map is read again for
the requests that follow. That client follows MOVED and ASK, waits on TRYAGAIN, and
refreshes its slot map after a connection error or CLUSTERDOWN; on top of it a call is
tried again a bounded number of times (``ATTEMPTS``, ``PAUSE`` seconds apart growing, none
begun after ``DEADLINE`` seconds) while a failover completes, and then fails: the request
is left unanswered and the switch sends it again. A master without the scripts
(restarted, or a replica just promoted) answers NOSCRIPT: the scripts are loaded on every
master and the call sent again.

Both calls are safe to send twice (a connection may fail after a call ran): a repeated
check-and-hold of a call finds its own hold by the call's identifiers, and the index
entries are plain SETs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException, TryAgainError

from billing_core.domain.policy import Decision
from billing_core.ports import HoldRequest, LockoutProbe

from . import resp
from .redis_connect import TIMEOUT, async_cluster_client
from .redis_live import (
    AUTHORIZE,
    INDEX,
    LOCKOUT,
    _auth_keys,
    _sha,
    authorize_args,
    index_call,
    lockout_call,
    read_authorize,
)
from .resp import RespConnection

ATTEMPTS = 4
PAUSE = 0.25
DEADLINE = 2.5  # seconds: a switch re-sends an Access-Request after 2 to 5 s

# what a failover or a migration may answer for a while: worth trying again
_PASSING = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterError,  # ClusterDownError, MasterDownError, retries exhausted
    TryAgainError,
    RedisClusterException,  # no node answered the refresh of the slot map; slot not covered
)

_Batch = list[tuple[bytes, "asyncio.Future[Any]"]]


class ClusterAuthorizer:
    """``AsyncAuthorizer``'s twin on a Redis Cluster whose seed node is ``url``."""

    def __init__(
        self,
        url: str,
        load: Callable[[int], Any],
        *,
        retention_seconds: int = 86400,
    ) -> None:
        self.redis = async_cluster_client(url)
        self._sha = {script: _sha(script) for script in (AUTHORIZE, INDEX, LOCKOUT)}
        self._load = load
        self._retention_ms = retention_seconds * 1000
        seed = urlsplit(url)
        credentials = seed.netloc.rpartition("@")[0]
        self._node_url = f"{seed.scheme}://{credentials + '@' if credentials else ''}"
        self._masters: list[str] | None = None  # by slot: "host:port" of its master
        self._connections: dict[str, RespConnection] = {}
        self._pending: dict[str, _Batch] = {}
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.slow = 0  # calls the fast path could not settle

    async def authorize(self, request: HoldRequest) -> Decision:
        loop = asyncio.get_running_loop()
        client_id = request.terms.client.id
        for _attempt in range(3):
            calls = [
                self._call(
                    AUTHORIZE, _auth_keys(request), authorize_args(request, self._retention_ms)
                )
            ]
            if request.identifiers and request.terms.rate is not None:
                calls.append(self._call(INDEX, *index_call(request, request.uid)))
            reply, *_indexed = await asyncio.gather(*calls)
            outcome = read_authorize(reply, request)
            if outcome is None:  # the client is not loaded (a new or flushed cluster)
                await loop.run_in_executor(None, self._load, client_id)
                continue
            decision, own_uid = outcome
            if own_uid is not None and own_uid != request.uid:  # first seen by another id
                await self._call(INDEX, *index_call(request, own_uid))
            return decision
        raise RuntimeError(f"live state of client {client_id} could not be loaded")

    async def auth_lockout(self, probe: LockoutProbe) -> bool:
        """The lockout script in the account's client slot (after a failure only)."""
        keys, args = lockout_call(probe)
        return bool(int(await self._call(LOCKOUT, keys, args)))

    # --- the fast path: one write per master and loop turn -----------------------------------
    async def _call(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The call's reply by the fast path; else by the slow path, after which the slot
        map is read again."""
        try:
            reply = await self._queue(script, keys, args)
        except Exception:  # noqa: BLE001 - the slow path settles it, or raises
            reply = None
        if reply is None or isinstance(reply, Exception):
            self.slow += 1
            self._masters = None
            return await self._run(script, keys, args)
        return reply

    async def _queue(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self._masters is None:
            await self.redis.initialize()  # returns at once once it has a topology
            self._masters = self._read_masters()
        node = self._masters[key_slot(keys[0].encode())]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        command = resp.command(["EVALSHA", self._sha[script], len(keys), *keys, *args])
        self._pending.setdefault(node, []).append((command, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _read_masters(self) -> list[str]:
        slots = self.redis.nodes_manager.slots_cache
        masters = [""] * 16384
        for slot, nodes in slots.items():
            masters[slot] = f"{nodes[0].host}:{nodes[0].port}"
        return masters

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        loop = asyncio.get_running_loop()
        for node, batch in pending.items():
            task = loop.create_task(self._send(node, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, node: str, batch: _Batch) -> None:
        try:
            replies = await self._connection(node).execute([command for command, _ in batch])
        except Exception as exc:  # noqa: BLE001 - each call of the batch fails with it
            for _command, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_command, future), reply in zip(batch, replies, strict=True):
            if not future.done():
                future.set_result(reply)

    def _connection(self, node: str) -> RespConnection:
        connection = self._connections.get(node)
        if connection is None:
            if not node:
                raise redis.ConnectionError("a slot is served by no master")
            host, _, port = node.rpartition(":")
            where = f"[{host}]:{port}" if ":" in host else node
            connection = RespConnection(
                self._node_url + where, timeout=TIMEOUT, connect_timeout=TIMEOUT
            )
            self._connections[node] = connection
        return connection

    # --- the slow path: redis-py's cluster client --------------------------------------------
    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA on the master of the keys' slot, through NOSCRIPT and a failover."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + DEADLINE
        for attempt in range(ATTEMPTS):
            try:
                return await self.redis.evalsha(self._sha[script], len(keys), *keys, *args)
            except NoScriptError:
                await self._load_scripts()
            except _PASSING:
                pause = PAUSE * (attempt + 1)
                if attempt == ATTEMPTS - 1 or loop.time() + pause > give_up:
                    raise
                await asyncio.sleep(pause)
        return await self.redis.evalsha(self._sha[script], len(keys), *keys, *args)

    async def _load_scripts(self) -> None:
        for script in self._sha:
            await self.redis.script_load(script)  # every master

    async def close(self) -> None:
        for connection in self._connections.values():
            await connection.close()
        await self.redis.aclose()
