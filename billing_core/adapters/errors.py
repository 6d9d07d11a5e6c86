"""The database's and Redis's outage errors, translated into ``billing_core.errors.Unavailable``
at the adapters' edge, so that nothing past it needs to know their libraries."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import redis
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from billing_core.domain.policy import Decision
from billing_core.errors import Dependency, Unavailable
from billing_core.ports import HoldRequest, LiveAuthorizer, LockoutProbe

P = ParamSpec("P")
R = TypeVar("R")


def unavailable(exc: BaseException) -> Dependency | None:
    """ "database", "redis", or None when the exception is not an outage of either."""
    if isinstance(exc, Unavailable):
        return exc.dependency
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


def raising_unavailable(call: Callable[P, R]) -> Callable[P, R]:
    """``call``, raising ``Unavailable`` (from the library's error) on an outage."""

    @functools.wraps(call)
    def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return call(*args, **kwargs)
        except Unavailable:
            raise
        except Exception as exc:
            down = unavailable(exc)
            if down is None:
                raise
            raise Unavailable(down) from exc

    return translated


class UnavailableOnOutage:
    """An asynchronous live authorizer (Redis) that raises ``Unavailable`` on an outage."""

    def __init__(self, authorizer: LiveAuthorizer) -> None:
        self._authorizer = authorizer

    async def authorize(self, request: HoldRequest) -> Decision:
        try:
            return await self._authorizer.authorize(request)
        except Exception as exc:
            down = unavailable(exc)
            if down is None or isinstance(exc, Unavailable):
                raise
            raise Unavailable(down) from exc

    async def auth_lockout(self, probe: LockoutProbe) -> bool:
        try:
            return await self._authorizer.auth_lockout(probe)
        except Exception as exc:
            down = unavailable(exc)
            if down is None or isinstance(exc, Unavailable):
                raise
            raise Unavailable(down) from exc
