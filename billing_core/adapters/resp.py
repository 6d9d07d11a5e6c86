"""A pipelining Redis connection for the event loop: pre-encoded commands in, replies out.

The daemon's check-and-hold sends each loop turn's batch of EVALSHA commands in one write.
On redis.asyncio every batch also took a connection from the pool, a retry wrapper and a
timeout context per reply read: at half load, where a batch holds one or two requests,
that machinery cost about a fifth of an Access-Request's CPU (the profile in
BENCHMARKS.md). Here one connection carries every batch: a batch is written whole, its
replies are parsed by hiredis as they arrive and handed back in order, and several batches
may be in flight at once.

Failures are redis-py's exceptions (which billing_core.adapters.errors translates into
``billing_core.errors.Unavailable`` for the daemon): a
connection that cannot be made raises ``redis.ConnectionError``; a connection lost with
batches in flight fails those batches with it (they may or may not have run: the callers'
scripts are idempotent, and the switch sends again); a batch without its replies after
``timeout`` seconds raises ``redis.TimeoutError`` and the connection is dropped. The next
batch connects again. An error reply takes its command's place in the list, as an
exception (``NoScriptError`` for NOSCRIPT).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis
import redis
from redis.connection import SSLConnection, parse_url
from redis.exceptions import NoScriptError


def command(args: Sequence[str | int]) -> bytes:
    """One command in the Redis protocol (RESP), packed by hiredis in C: what redis-py's
    packer sends for str and int arguments (``python_command`` is its twin in Python, 2.6
    times slower: it was the fourth function by self time of an Access-Request)."""
    return _pack(tuple(args))


def python_command(args: Sequence[str | int]) -> bytes:
    """``command`` in Python, built as one str (an ASCII argument's length in bytes is its
    length): for a hiredis without ``pack_command`` (before 2.1), and the tests' reference."""
    parts = [f"*{len(args)}\r\n"]
    for arg in args:
        text = arg if isinstance(arg, str) else str(arg)
        size = len(text) if text.isascii() else len(text.encode())
        parts.append(f"${size}\r\n{text}\r\n")
    return "".join(parts).encode()


_pack: Callable[[tuple[str | int, ...]], bytes] = getattr(hiredis, "pack_command", python_command)


def pipeline(client: Any, commands: Sequence[Sequence[str | int]]) -> list[Any]:
    """Send ``commands`` on a blocking client in one write and read their replies in order
    (an error reply in its command's place, as an exception, like redis-py's pipeline with
    ``raise_on_error=False``; no response callbacks: the replies as Redis gives them). On a
    single Redis server the commands are packed here (``command``) and sent on a pooled
    connection, once more on a fresh connection if it breaks (redis-py's pipeline retries
    alike): its command objects, packer and stack cost a tenth of an accounting batch's CPU
    in the profile. A cluster client goes through redis-py's pipeline, which routes each
    command to its slot's master."""
    if not commands:
        return []
    if not isinstance(client, redis.Redis):
        pipe = client.pipeline(transaction=False)
        for args in commands:
            pipe.execute_command(*args)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies
    packed = b"".join(command(args) for args in commands)
    pool = client.connection_pool
    conn: Any = pool.get_connection()
    try:
        result: list[Any] = conn.retry.call_with_retry(
            lambda: _exchange(conn, packed, len(commands)), lambda _error: conn.disconnect()
        )
        return result
    except BaseException:
        conn.disconnect()  # replies may be left unread on it
        raise
    finally:
        pool.release(conn)


def _exchange(conn: Any, packed: bytes, count: int) -> list[Any]:
    conn.send_packed_command([packed])
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(conn.read_response())
        except redis.ResponseError as error:
            replies.append(error)
    return replies


def _error(reply: hiredis.ReplyError) -> redis.ResponseError:
    message = str(reply)
    return (
        NoScriptError(message) if message.startswith("NOSCRIPT") else redis.ResponseError(message)
    )


@dataclass
class _Batch:
    future: asyncio.Future[list[Any]]
    count: int
    replies: list[Any] = field(default_factory=list)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._reader = hiredis.Reader()
        self._waiting: deque[_Batch] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reason = f": {exc}" if exc else ""
        self.fail(redis.ConnectionError(f"Connection to Redis lost{reason}"))

    def fail(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, deque()
        for batch in waiting:
            if not batch.future.done():
                batch.future.set_exception(error)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                head = self._waiting[0]
                head.replies.append(
                    _error(reply) if isinstance(reply, hiredis.ReplyError) else reply
                )
                if len(head.replies) == head.count:
                    self._waiting.popleft()
                    if not head.future.done():
                        head.future.set_result(head.replies)
        except (hiredis.ProtocolError, IndexError) as exc:  # out of step: start again
            self.abort(redis.ConnectionError(f"Redis protocol error: {exc}"))

    def send(self, data: bytes, count: int) -> asyncio.Future[list[Any]]:
        assert self.transport is not None
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Batch(future, count))
        self.transport.write(data)
        return future

    def abort(self, error: Exception) -> None:
        self.closed = True
        self.fail(error)
        if self.transport is not None:
            self.transport.abort()


class RespConnection:
    """One connection to the Redis of ``url`` (redis://, rediss://, unix://, with a user,
    password and database as redis-py reads them), made on first use and again after a loss."""

    def __init__(self, url: str, *, timeout: float = 2.0, connect_timeout: float = 2.0) -> None:
        options = parse_url(url)  # type: ignore[no-untyped-call]
        self._path: str | None = options.get("path")
        self._host: str = options.get("host", "localhost")
        self._port: int = int(options.get("port", 6379))
        self._ssl = options.get("connection_class") is SSLConnection
        self._hello: list[bytes] = []
        if options.get("password") is not None:
            user = options.get("username")
            auth = ["AUTH", user, options["password"]] if user else ["AUTH", options["password"]]
            self._hello.append(command(auth))
        if int(options.get("db", 0) or 0):
            self._hello.append(command(["SELECT", int(options["db"])]))
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    @property
    def _where(self) -> str:
        return self._path or f"{self._host}:{self._port}"

    async def execute(self, commands: Sequence[bytes]) -> list[Any]:
        """Send ``commands`` (RESP) in one write; their replies, in order."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connected()
        future = protocol.send(b"".join(commands), len(commands))
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self._timeout, self._expire, protocol, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, protocol: _Protocol, future: asyncio.Future[list[Any]]) -> None:
        if not future.done():
            protocol.abort(redis.TimeoutError(f"Timeout reading from Redis at {self._where}"))

    async def _connected(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # one connection, however many batches wait for it
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            protocol = await self._connect()
            if self._hello:
                replies = await asyncio.wait_for(
                    protocol.send(b"".join(self._hello), len(self._hello)), self._timeout
                )
                refused = next((r for r in replies if isinstance(r, Exception)), None)
                if refused is not None:
                    protocol.abort(redis.ConnectionError("refused"))
                    raise redis.AuthenticationError(str(refused))
            self._protocol = protocol
            return protocol

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            if self._path is not None:
                made = loop.create_unix_connection(_Protocol, self._path)
            else:
                context = ssl.create_default_context() if self._ssl else None
                made = loop.create_connection(_Protocol, self._host, self._port, ssl=context)
            _transport, protocol = await asyncio.wait_for(made, self._connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise redis.ConnectionError(f"Error connecting to {self._where}: {exc}") from exc
        return protocol

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.closed = True
            protocol.transport.close()
