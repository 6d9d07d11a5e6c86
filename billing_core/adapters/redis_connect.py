"""Every Redis client of the project is made here: one server, or a Redis Cluster.

``[redis] cluster = true`` makes the URL name one seed node of a cluster. redis-py's
``RedisCluster`` then reads the slot map from it (CLUSTER SLOTS), sends each command to
the master of its key's slot, follows MOVED (the slot has moved: the map is patched) and
ASK (the slot is being migrated: the one command goes to the importing node), waits and
sends again on TRYAGAIN (a script's keys are split between the two nodes of a migration),
and after a connection error, a timeout or CLUSTERDOWN refreshes the map and tries again a
bounded number of times (a failover). A pipeline is split per node and its replies put
back in order. SCAN and SCRIPT LOAD go to every master.

The key layout keeps this cheap: every key of a client is under ``{c:N}`` and a hold's
index entries under ``hold:{<NAS key>}:...``, so each Lua script touches one slot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeAlias

import redis
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from billing_core.domain.policy import Decision
from billing_core.ports import HoldRequest, LockoutProbe

SyncRedis: TypeAlias = redis.Redis | RedisCluster
# What Redis raises when it cannot do what was asked: redis-py's errors, and the cluster
# client's own when no node answers or a slot is served by none (not RedisErrors)
REDIS_ERRORS = (redis.RedisError, RedisClusterException)

TIMEOUT = 2.0  # seconds to connect, and to wait for a reply
# A cluster command that fails on a connection error, a timeout or CLUSTERDOWN is tried
# again this many times, the slot map read again in between, after pauses that grow from
# 50 ms to at most 0.5 s: about a second and a half in all, so that a failover stalls
# neither an accounting batch (what it could not apply is healed from the database) nor the
# event loop's requests for long. redis-py's default (10 times, up to 1 s) waits far longer.
CLUSTER_RETRIES = 3
_BACKOFF = {"cap": 0.5, "base": 0.05}


def redis_client(url: str, cluster: bool = False) -> SyncRedis:
    """The synchronous client of ``url``: a ``RedisCluster`` (which connects to the seed at
    once and reads the slot map) when ``cluster``, else a ``redis.Redis`` (connects on use)."""
    if cluster:
        return RedisCluster.from_url(
            url,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            retry=redis.retry.Retry(ExponentialWithJitterBackoff(**_BACKOFF), CLUSTER_RETRIES),
        )
    return redis.Redis.from_url(
        url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, health_check_interval=10
    )


def async_cluster_client(url: str) -> redis.asyncio.cluster.RedisCluster:
    """The event loop's cluster client (it connects on first use)."""
    return redis.asyncio.cluster.RedisCluster.from_url(
        url,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=redis.asyncio.retry.Retry(ExponentialWithJitterBackoff(**_BACKOFF), CLUSTER_RETRIES),
    )


def load_scripts(client: SyncRedis, scripts: Iterable[str]) -> None:
    """SCRIPT LOAD each script: on the server, or on every master of a cluster (a master
    that restarted, or a replica promoted by a failover, answers NOSCRIPT until then)."""
    for script in scripts:
        client.script_load(script)


def redis_probe(url: str, cluster: bool = False) -> Callable[[], bool]:
    """A health check of ``url`` that never raises: True when Redis answers PING. The
    client is made on the first check, so that a cluster down at start-up (whose client
    cannot be made without a node that answers) is reported down, not fatal."""
    made: list[SyncRedis] = []

    def reachable() -> bool:
        try:
            if not made:
                made.append(redis_client(url, cluster))
            return bool(made[0].ping())
        except REDIS_ERRORS:
            return False

    return reachable


class Authorizer(Protocol):
    """The daemon's check-and-hold on its event loop."""

    async def authorize(self, request: HoldRequest) -> Decision: ...

    async def auth_lockout(self, probe: LockoutProbe) -> bool: ...

    async def close(self) -> None: ...


def authorizer(
    url: str,
    load: Callable[[int], Any],
    *,
    cluster: bool = False,
    retention_seconds: int = 86400,
) -> Authorizer:
    """``AsyncAuthorizer`` (one pipelining connection) on one server; ``ClusterAuthorizer``
    (redis-py's asyncio cluster client) on a cluster."""
    if cluster:
        from .redis_cluster import ClusterAuthorizer

        return ClusterAuthorizer(url, load, retention_seconds=retention_seconds)
    from .redis_live import AsyncAuthorizer

    return AsyncAuthorizer(url, load, retention_seconds=retention_seconds)
