"""The daemon's check-and-hold on Redis Cluster.

``AsyncAuthorizer`` pipelines every request of a loop turn on one connection to one
server; on a cluster the requests of a turn belong to many slots, so here each request
is its own pair of script calls, sent at once, each routed by redis-py's asyncio
``RedisCluster`` to the master of its slot (the check-and-hold to the client's slot, the
index entries to the NAS key's slot). That client follows MOVED and ASK, waits on
TRYAGAIN, and refreshes its slot map after a connection error or CLUSTERDOWN; on top of
it a request is tried again a bounded number of times (``ATTEMPTS``, ``PAUSE`` seconds
apart growing) while a failover completes, and then fails: the request is left
unanswered and the switch sends it again. A master without the scripts (restarted, or a
replica just promoted) answers NOSCRIPT: the scripts are loaded on every master and the
call sent again. Both scripts are safe to send twice: a repeated check-and-hold of a call
finds its own hold by the call's identifiers, and the index entries are plain SETs.

The speed of the single-server path is what is measured; this path trades the shared
pipeline for simplicity.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError, RedisClusterException, TryAgainError

from billing_core.authorization import Decision
from billing_core.ports import HoldRequest

from .redis_connect import async_cluster_client
from .redis_live import AUTHORIZE, INDEX, _keys, _sha, authorize_args, index_call, read_authorize

ATTEMPTS = 4
PAUSE = 0.25

# what a failover or a migration may answer for a while: worth trying again
_PASSING = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterError,  # ClusterDownError, MasterDownError, retries exhausted
    TryAgainError,
    RedisClusterException,  # no node answered the refresh of the slot map; slot not covered
)


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
        self._sha = {script: _sha(script) for script in (AUTHORIZE, INDEX)}
        self._load = load
        self._retention_ms = retention_seconds * 1000

    async def authorize(self, request: HoldRequest) -> Decision:
        loop = asyncio.get_running_loop()
        client_id = request.terms.client.id
        for _attempt in range(3):
            calls = [
                self._run(AUTHORIZE, _keys(client_id), authorize_args(request, self._retention_ms))
            ]
            if request.identifiers and request.terms.rate is not None:
                calls.append(self._run(INDEX, *index_call(request, request.uid)))
            reply, *_indexed = await asyncio.gather(*calls)
            outcome = read_authorize(reply, request)
            if outcome is None:  # the client is not loaded (a new or flushed cluster)
                await loop.run_in_executor(None, self._load, client_id)
                continue
            decision, own_uid = outcome
            if own_uid is not None and own_uid != request.uid:  # first seen by another id
                await self._run(INDEX, *index_call(request, own_uid))
            return decision
        raise RuntimeError(f"live state of client {client_id} could not be loaded")

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA on the master of the keys' slot, through NOSCRIPT and a failover."""
        for attempt in range(ATTEMPTS):
            try:
                return await self.redis.evalsha(self._sha[script], len(keys), *keys, *args)
            except NoScriptError:
                await self._load_scripts()
            except _PASSING:
                if attempt == ATTEMPTS - 1:
                    raise
                await asyncio.sleep(PAUSE * (attempt + 1))
        return await self.redis.evalsha(self._sha[script], len(keys), *keys, *args)

    async def _load_scripts(self) -> None:
        for script in self._sha:
            await self.redis.script_load(script)  # every master

    async def close(self) -> None:
        await self.redis.aclose()
