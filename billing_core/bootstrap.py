"""The billing side's composition root: the components the daemon needs, built from the config
in one place (the database and its threads, the catalog, the live state on Redis or in the
database, the two use cases, the health checks). The edge (``radiusd``) gets its parts from
here and imports no adapter; ``billingctl`` opens the same live state through ``live_state``.

Building is split in the order the daemon starts: ``open_database`` (no IO), then
``open_catalog`` in a database thread (the schema check and the first catalog load), then
``build``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from billing_core.adapters.errors import UnavailableOnOutage, raising_unavailable, unavailable
from billing_core.adapters.live_peek import peek
from billing_core.adapters.redis_connect import authorizer, redis_probe
from billing_core.adapters.redis_live import CHORES_LEASE_KEY, CHORES_LEASE_MS, ResyncingLive
from billing_core.adapters.secretbox import cipher_for
from billing_core.adapters.smtp_mail import SmtpOutbox, SmtpSettings
from billing_core.adapters.sql.db import current_revision, head_revision, make_engine
from billing_core.adapters.sql.disconnect import SqlDisconnectQueue
from billing_core.adapters.sql.live import SqlLiveState
from billing_core.adapters.sql.live_sqlite import SqliteLiveState
from billing_core.adapters.sql.notify import (
    SqlNotificationLog,
    daemon_source,
    record_event,
    set_event_source,
)
from billing_core.adapters.sql.store import SqlStore
from billing_core.config import Config, SecurityConfig, SmtpConfig
from billing_core.domain.accounting_packets import AccountingEvent
from billing_core.domain.model import Account, Client
from billing_core.errors import Dependency, UserError
from billing_core.explain import LivePeek
from billing_core.ports import (
    DisconnectQueue,
    LiveAuthorizer,
    LiveState,
    NotificationLog,
    Outbox,
    SecretCipher,
)
from billing_core.services.accounting import AccountingService, AcctOutcome
from billing_core.services.authorization import AuthorizationService, CatalogCache, SecretCache
from billing_core.services.live_threads import (
    BatchedLiveInThread,
    LiveInThread,
    LoopTurnBatches,
)

HealthCheck = tuple[Dependency, Callable[[], bool]]  # a part of /healthz: True when reachable

__all__ = [
    "Components",
    "Database",
    "HealthCheck",
    "build",
    "dependency_down",
    "health_checks",
    "live_state",
    "open_catalog",
    "open_database",
    "server_cipher",
]

dependency_down = unavailable  # which dependency an exception says is down (start-up errors)


@dataclass(frozen=True, slots=True)
class Database:
    """The engine, the store on it, and the threads that run its blocking calls."""

    engine: Engine
    store: SqlStore
    executor: ThreadPoolExecutor

    @property
    def sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"


def open_database(config: Config) -> Database:
    """The engine and its threads (SQLite has one writer: one thread); nothing connects yet."""
    engine = make_engine(
        config.database.url.reveal(), pool_size=config.database.pool_size, pre_ping=False
    )
    sqlite = engine.dialect.name == "sqlite"
    executor = ThreadPoolExecutor(
        max_workers=1 if sqlite else config.database.pool_size, thread_name_prefix="db"
    )
    return Database(engine, SqlStore(engine), executor)


def open_catalog(database: Database) -> CatalogCache:
    """Refuse a database whose schema is not this version's, then load the catalog (in a
    database thread: it blocks)."""
    require_current_schema(database.engine)
    return CatalogCache(database.store)


def require_current_schema(engine: Engine) -> None:
    """Refuse to serve on a database whose schema is not the one this version writes."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise UserError(
            f"database schema is at revision {current or 'none'}, this version needs {head}: "
            "run `billingctl db upgrade`"
        )


def live_state(
    store: SqlStore,
    redis_url: str,
    *,
    cluster: bool = False,
    clients: Callable[[], list[int]] | None = None,
) -> LiveState:
    """The live state every process shares: Redis (one server, or the Cluster ``redis_url``
    is a node of) when a URL is set, else the database's own (on SQLite with its check-and-hold
    batched: ``SqliteLiveState``). Nothing is rebuilt here: a
    client missing from Redis is loaded on first use, and one whose effects did not all
    reach it is healed by the daemon's background job. ``clients``: the ids the sweep walks
    (default: every client of the ledger)."""
    if not redis_url:  # on SQLite, the embedded default's batched check-and-hold
        return SqliteLiveState(store.engine) if store.engine.dialect.name == "sqlite" else store
    return ResyncingLive.from_url(
        redis_url,
        store.live_client,
        cluster=cluster,
        ended=store.ended_legs,
        clients=clients or (lambda: list(store.ledger_balances())),
        marks=store,
    )


def server_cipher(security: SecurityConfig) -> SecretCipher:
    """The cipher of account secrets under the configured key (none: nothing decrypts)."""
    key = security.secrets_key
    return cipher_for(key.reveal() if key is not None else None)


def health_checks(
    config: Config, store: SqlStore | None = None, live: LiveState | None = None
) -> list[HealthCheck]:
    """/healthz's parts: the database, and Redis when a URL is set. Without ``store``, an
    engine of one connection of its own; without the Redis ``live`` state, a probe whose
    client is made on its first check (a cluster down at start is reported down, not
    fatal)."""
    if store is None:
        store = SqlStore(make_engine(config.database.url.reveal(), pool_size=1))
    checks: list[HealthCheck] = [("database", store.reachable)]
    redis_url = config.redis.url.reveal()
    if isinstance(live, ResyncingLive):
        checks.append(("redis", live.reachable))
    elif redis_url:
        checks.append(("redis", redis_probe(redis_url, config.redis.cluster)))
    return checks


@dataclass(frozen=True, slots=True)
class Components:
    """What the daemon runs: the use cases and what its background jobs and trace read."""

    database: Database
    catalog: CatalogCache
    live: LiveState
    redis_live: ResyncingLive | None  # the Redis live state's heal and sweep, if any
    authorization: AuthorizationService
    accounting: AccountingService
    # a batch of accounting events recorded in one transaction (``Unavailable`` on an outage)
    record_batch: Callable[[Sequence[AccountingEvent]], list[AcctOutcome]]
    health_checks: list[HealthCheck]
    peek: Callable[[Client, datetime], LivePeek]  # the trace's read of the live state
    event_source: str  # this process's name in the events it writes
    # take or renew the deployment's chores lease in Redis: whether this node holds it now,
    # None when Redis is away; None without Redis (every node does the chores)
    chores_lease: Callable[[], bool | None] | None
    # the background jobs' stores: notifications and events, the mail queue's sender (None
    # without [smtp] host), the Disconnect-Request queue
    notifications: NotificationLog
    outbox: Outbox | None
    disconnects: DisconnectQueue

    @property
    def engine(self) -> Engine:
        return self.database.engine

    @property
    def store(self) -> SqlStore:
        return self.database.store

    def record_event(self, kind: str, **fields: Any) -> bool:
        """An event row in a transaction of its own (blocks: run in a database thread)."""
        return record_event(self.database.engine, kind, **fields)


def build(
    config: Config,
    database: Database,
    catalog: CatalogCache,
    *,
    on_secret_unusable: Callable[[Account, str], None] | None = None,
) -> Components:
    """The daemon's components on an open database with its catalog loaded."""
    source = daemon_source()
    set_event_source(source)
    store = database.store
    live = live_state(
        store,
        config.redis.url.reveal(),
        cluster=config.redis.cluster,
        clients=lambda: list(catalog.current.clients),
    )
    redis_live = live if isinstance(live, ResyncingLive) else None
    authorization = AuthorizationService(
        lambda: catalog.current,
        live,
        on_loop=_live_authorizer(config, live, database),
        max_call_length=config.billing.max_call_length,
        auth_hold_seconds=config.billing.auth_hold_seconds,
        secrets=SecretCache(server_cipher(config.security), on_secret_unusable),
        max_auth_failures=config.security.max_auth_failures,
        auth_lockout_seconds=config.security.auth_lockout_seconds,
    )
    accounting = AccountingService(
        lambda: catalog.current,
        store,
        live,
        auth_hold_seconds=config.billing.auth_hold_seconds,
        max_acct_delay_seconds=config.billing.max_acct_delay_seconds,
        stale_grace_seconds=config.billing.stale_grace_seconds,
        max_call_length=config.billing.max_call_length,
        sequenced_live=redis_live is not None,
    )
    return Components(
        database=database,
        catalog=catalog,
        live=live,
        redis_live=redis_live,
        authorization=authorization,
        accounting=accounting,
        record_batch=raising_unavailable(accounting.record_many),
        health_checks=health_checks(config, store, live),
        peek=functools.partial(peek, live, store),
        event_source=source,
        chores_lease=(
            functools.partial(redis_live.holds_lease, CHORES_LEASE_KEY, CHORES_LEASE_MS)
            if redis_live is not None
            else None
        ),
        notifications=SqlNotificationLog(database.engine),
        outbox=mail_outbox(config.smtp, database.engine),
        disconnects=SqlDisconnectQueue(database.engine),
    )


def mail_outbox(smtp: SmtpConfig, engine: Engine) -> Outbox | None:
    """The mail queue's sender through [smtp]; None when no host is set (mail stays queued)."""
    if not smtp.host:
        return None
    settings = SmtpSettings(
        host=smtp.host,
        port=smtp.port,
        sender=smtp.sender,
        starttls=smtp.starttls,
        username=smtp.username,
        password=smtp.password.reveal(),
        timeout_seconds=smtp.timeout_seconds,
    )
    return SmtpOutbox(engine, settings)


def _live_authorizer(config: Config, live: LiveState, database: Database) -> LiveAuthorizer:
    """How the event loop reaches the live state's check-and-hold: on Redis, one pipelined
    asynchronous connection (no thread hand-off; a client missing from Redis is loaded in a
    thread); on the database's own live state, a database thread per call (on SQLite, per
    batch of the calls that arrived meanwhile)."""
    if isinstance(live, ResyncingLive):
        loaded = live
        return UnavailableOnOutage(
            authorizer(
                config.redis.url.reveal(),
                lambda cid: loaded.load_client(cid, replace=False),
                cluster=config.redis.cluster,
            )
        )
    if isinstance(live, SqliteLiveState):  # one writer: one batch at a time
        return BatchedLiveInThread(
            raising_unavailable(live.authorize_many),
            raising_unavailable(live.auth_lockout),
            database.executor,
        )
    if isinstance(live, SqlLiveState) and not database.sqlite:  # one statement per batch
        return LoopTurnBatches(
            raising_unavailable(live.authorize_many),
            raising_unavailable(live.auth_lockout),
            database.executor,
        )
    return LiveInThread(
        raising_unavailable(live.authorize),
        raising_unavailable(live.auth_lockout),
        database.executor,
    )
