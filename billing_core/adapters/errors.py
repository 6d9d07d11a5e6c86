"""Which dependency an exception says is unavailable (for metrics, logs and /healthz)."""

from __future__ import annotations

import redis
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout


def unavailable(exc: BaseException) -> str | None:
    """ "database", "redis", or None when the exception is not an outage of either."""
    if isinstance(exc, OperationalError | PoolTimeout) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return "database"
    if isinstance(
        exc,
        redis.ConnectionError
        | redis.TimeoutError
        | redis.BusyLoadingError
        | redis.exceptions.ClusterError  # CLUSTERDOWN, MASTERDOWN, a failover's retries spent
        | redis.exceptions.TryAgainError  # a slot migration that did not settle in time
        | redis.exceptions.RedisClusterException,  # no node of the cluster answers
    ):
        return "redis"
    return None
