"""asyncio UDP transport: NAS lookup, verification, duplicate cache, bounded in-flight work.

Every datagram either gets one reply or is dropped and counted by reason; no exception from
a handler escapes (it is logged once, counted, and the packet is left unanswered).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from billing_core.config import NasConfig
from billing_core.domain.nas import longest_first, match_source
from billing_core.errors import Unavailable

from .codec import ACCESS_REQUEST, ACCOUNTING_REQUEST, STATUS_SERVER, Codec, Malformed, Request
from .logging import get_logger
from .metrics import Metrics

Address = tuple[Any, ...]
HandleFn = Callable[[Request, NasConfig, str, bool], Awaitable[bytes | None]]

_IN_FLIGHT = object()


class NasTable:
    """[[nas]] entries by source address; the longest prefix wins."""

    _CACHE_SIZE = 65536

    def __init__(self, entries: Sequence[NasConfig]) -> None:
        self._entries = longest_first(entries)
        self._cache: dict[str, NasConfig | None] = {}  # by source address, as received

    def lookup(self, source_ip: str) -> NasConfig | None:
        try:
            return self._cache[source_ip]
        except KeyError:
            pass
        found = self._match(source_ip)
        if len(self._cache) >= self._CACHE_SIZE:  # bounded: spoofed sources cannot grow it
            self._cache.clear()
        self._cache[source_ip] = found
        return found

    def _match(self, source_ip: str) -> NasConfig | None:
        return match_source(self._entries, source_ip)


class DuplicateCache:
    """RFC 5080 §2.2.2: (source, code, id, authenticator) -> in flight, or the reply bytes.

    Requests in flight are kept apart from the replies: the bound on replies (LRU, ttl) never
    evicts a request still being processed (those are bounded by max_in_flight instead).
    """

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._in_flight: set[tuple[Any, ...]] = set()
        self._replies: OrderedDict[tuple[Any, ...], tuple[float, bytes]] = OrderedDict()

    def get(self, key: tuple[Any, ...], now: float) -> object | None:
        if key in self._in_flight:
            return _IN_FLIGHT
        entry = self._replies.get(key)
        if entry is None:
            return None
        if entry[0] < now:
            del self._replies[key]
            return None
        return entry[1]

    def begin(self, key: tuple[Any, ...]) -> None:
        self._replies.pop(key, None)
        self._in_flight.add(key)

    def done(self, key: tuple[Any, ...], reply: bytes | None, now: float) -> None:
        self._in_flight.discard(key)
        if reply is None or self.ttl <= 0:
            return
        self._replies[key] = (now + self.ttl, reply)
        self._replies.move_to_end(key)
        while len(self._replies) > self.size:
            self._replies.popitem(last=False)
        # drop expired replies from the old end
        while self._replies:
            oldest, (expires, _reply) = next(iter(self._replies.items()))
            if expires >= now:
                break
            del self._replies[oldest]


class LogThrottle:
    """At most one log line per reason every ``interval`` seconds (an outage at thousands of
    requests a second must not flood the log); the next line says how many it held back."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, reason: str) -> int | None:
        """None to stay silent, else the number of lines held back since the last one."""
        now = time.monotonic()
        if now - self._last.get(reason, -self.interval) < self.interval:
            self._held[reason] = self._held.get(reason, 0) + 1
            return None
        self._last[reason] = now
        return self._held.pop(reason, 0)


class RadiusServer:
    def __init__(
        self,
        codec: Codec,
        nas_table: NasTable,
        handle: HandleFn,
        metrics: Metrics,
        *,
        max_in_flight: int,
        duplicate_ttl: float,
        duplicate_size: int,
        codecs: Mapping[str, Codec] | None = None,
    ) -> None:
        self.codec = codec
        # the codec of each [[nas]] dialect; a dialect not named here uses ``codec``
        self.codecs: Mapping[str, Codec] = codecs or {}
        self.nas_table = nas_table
        self.handle = handle
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        # one [[nas]] entry may hold at most 3/4 of the bound, so a flooding switch leaves
        # room for the others (below 4 the bound is too small to share)
        self.nas_max_in_flight = max_in_flight - max_in_flight // 4
        self.nas_in_flight: dict[str, int] = {}
        self.duplicates = DuplicateCache(duplicate_ttl, duplicate_size)
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False  # set on shutdown: new datagrams are ignored
        self._drop_throttle = LogThrottle(1.0)  # one line per NAS and reason a second
        self.log = get_logger("radiusd.transport")
        metrics.track_in_flight(lambda: len(self.tasks))

    def drop(
        self, reason: str, kind: str, nas: str = "unknown", source: str = "", detail: str = ""
    ) -> None:
        """Count a datagram left unanswered; per NAS too (configured names only, a closed set).
        Logged too, at most one line per NAS and reason a second (the next line says how
        many were held back)."""
        self.metrics.child(self.metrics.dropped, reason).inc()
        self.metrics.child(self.metrics.nas_dropped, nas, reason).inc()
        self.metrics.child(self.metrics.requests, kind, "dropped").inc()
        suppressed = self._drop_throttle.allow(f"{nas}|{reason}")
        if suppressed is not None:
            self.log.warning(
                "dropped",
                nas=nas,
                reason=reason,
                kind=kind,
                source=source or None,
                detail=detail or None,
                suppressed_since_last=suppressed,
            )

    def receive(
        self,
        data: bytes,
        addr: Address,
        transport: asyncio.DatagramTransport,
        accounting_port: bool,
    ) -> None:
        if self.closing:
            return
        kind = "acct" if accounting_port else "auth"
        source_ip = str(addr[0])
        if source_ip.startswith("::ffff:") and "." in source_ip:
            source_ip = source_ip[7:]  # an IPv4 switch on a dual-stack socket: a.b.c.d
        nas = self.nas_table.lookup(source_ip)
        if nas is None:
            self.drop("unknown_nas", kind, source=source_ip)
            return
        # a retransmission is recognised from its header alone, before any decoding work
        key = (accounting_port, addr[0], addr[1], data[:1], data[1:2], data[4:20])
        cached = self.duplicates.get(key, time.monotonic()) if len(data) >= 20 else None
        if cached is _IN_FLIGHT:
            self.drop("duplicate_in_flight", kind, nas.name, source_ip)
            return
        if isinstance(cached, bytes):
            self.metrics.child(self.metrics.requests, kind, "duplicate").inc()
            transport.sendto(cached, addr)
            return
        if (
            len(self.tasks) >= self.max_in_flight
            or self.nas_in_flight.get(nas.name, 0) >= self.nas_max_in_flight
        ):
            self.drop("overload", kind, nas.name, source_ip)
            return
        try:
            codec = self.codecs.get(nas.dialect, self.codec)
            request = codec.decode(data, nas.secret.bytes())
        except Malformed as exc:
            self.drop(exc.reason, kind, nas.name, source_ip, str(exc))
            return
        for attribute in request.attribute_errors:
            self.metrics.child(self.metrics.attribute_errors, nas.name, attribute).inc()
        expected = ACCOUNTING_REQUEST if accounting_port else ACCESS_REQUEST
        if request.code not in (expected, STATUS_SERVER):
            self.drop("wrong_port", kind, nas.name, source_ip)
            return
        # (a request with a Message-Authenticator passes: verified by the codec)
        refused = None if request.has_message_authenticator else unauthenticated(request, nas)
        if refused is not None:
            self.drop(refused, kind, nas.name, source_ip)
            return
        self.duplicates.begin(key)
        task = asyncio.get_running_loop().create_task(
            self._process(request, nas, source_ip, accounting_port, key, addr, transport)
        )
        self.tasks.add(task)
        self.nas_in_flight[nas.name] = self.nas_in_flight.get(nas.name, 0) + 1
        self.metrics.changed()  # radiusd_in_flight, at the end of this loop turn
        task.add_done_callback(functools.partial(self._finished, nas.name))

    def _finished(self, nas_name: str, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        left = self.nas_in_flight.pop(nas_name, 1) - 1
        if left > 0:
            self.nas_in_flight[nas_name] = left
        self.metrics.changed()

    async def _process(
        self,
        request: Request,
        nas: NasConfig,
        source_ip: str,
        accounting_port: bool,
        key: tuple[Any, ...],
        addr: Address,
        transport: asyncio.DatagramTransport,
    ) -> None:
        kind = "acct" if accounting_port else "auth"
        reply: bytes | None = None
        try:
            reply = await self.handle(request, nas, source_ip, accounting_port)
        except Unavailable as exc:  # a dependency did not answer: no reply, the switch retries
            self._failed(f"{exc.dependency}_unavailable", kind, nas, request, exc.__cause__ or exc)
        except Exception as exc:  # noqa: BLE001 - the boundary: log, count, no reply
            self._failed("handler_error", kind, nas, request, exc)
        finally:
            self.duplicates.done(key, reply, time.monotonic())
        if reply is not None and not transport.is_closing():
            transport.sendto(reply, addr)

    def _failed(
        self, reason: str, kind: str, nas: NasConfig, request: Request, exc: BaseException
    ) -> None:
        """A request the handler could not answer: counted, logged (throttled), no reply."""
        self.metrics.child(self.metrics.dropped, reason).inc()
        self.metrics.child(self.metrics.nas_dropped, nas.name, reason).inc()
        self.metrics.child(self.metrics.requests, kind, "error").inc()
        suppressed = self._drop_throttle.allow(f"{nas.name}|{reason}")
        if suppressed is not None:
            self.log.error(
                reason,
                nas=nas.name,
                code=request.code,
                identifier=request.identifier,
                error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                suppressed_since_last=suppressed,
            )

    async def drain(self, deadline: float) -> bool:
        """Wait for in-flight work; True when everything finished before the deadline."""
        if not self.tasks:
            return True
        _done, pending = await asyncio.wait(set(self.tasks), timeout=deadline)
        return not pending


def unauthenticated(request: Request, nas: NasConfig) -> str | None:
    """Why an Access-Request or Status-Server without a Message-Authenticator is dropped
    (a Status-Server always needs one; ``require_message_authenticator``;
    ``limit_proxy_state`` with Proxy-State), or None to take it."""
    if request.has_message_authenticator or request.code not in (ACCESS_REQUEST, STATUS_SERVER):
        return None
    if request.code == STATUS_SERVER or nas.require_message_authenticator:
        return "missing_message_authenticator"
    if nas.limit_proxy_state and request.has_proxy_state:
        return "proxy_state_without_message_authenticator"
    return None


class RadiusProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: RadiusServer, accounting_port: bool) -> None:
        self.server = server
        self.accounting_port = accounting_port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        assert self.transport is not None
        try:
            self.server.receive(data, addr, self.transport, self.accounting_port)
        except Exception as exc:  # noqa: BLE001 - never let a datagram kill the loop
            self.server.drop("internal_error", "acct" if self.accounting_port else "auth")
            self.server.log.error("receive_error", error=f"{type(exc).__name__}: {exc}")

    def error_received(self, exc: Exception) -> None:
        self.server.log.warning("socket_error", error=str(exc))
