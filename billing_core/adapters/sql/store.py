"""The SQL adapter: catalog source, ledger, and the embedded live state (no Redis).

Works unchanged on PostgreSQL and SQLite. Check-and-hold runs in one transaction that first
locks the client's live-balance row (``FOR UPDATE`` on PostgreSQL; on SQLite every write
transaction is ``BEGIN IMMEDIATE``), so two processes can never hold the same money.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import BindParameter

from billing_core.domain.credentials import AuthMethod, parse_auth_methods
from billing_core.domain.identification import AccountIndex
from billing_core.domain.model import Account, Client, RejectReason
from billing_core.domain.money import ZERO, from_micros, to_micros
from billing_core.domain.policy import Accept, Decision, LiveSnapshot, Reject, decide
from billing_core.domain.rating import RateIndexBuilder, RateTableIndex
from billing_core.ports import (
    Catalog,
    HeldCall,
    HoldRequest,
    LedgerConflict,
    LiveEffect,
    LiveView,
    LockoutProbe,
)

from .accounting import SqlAccountingTx, add_keys
from .models import (
    AccountRow,
    AcctEventRow,
    AuthFailureRow,
    CallKeyRow,
    CallRow,
    CatalogVersion,
    CdrRow,
    ClientRow,
    LiveBalanceRow,
    NasEpochRow,
    RateRow,
    RateTableRow,
    Setting,
    TransactionRow,
    table,
)

accounts_t = table(AccountRow)
auth_failures_t = table(AuthFailureRow)
acct_events_t = table(AcctEventRow)
call_keys_t = table(CallKeyRow)
calls_t = table(CallRow)
catalog_version_t = table(CatalogVersion)
cdrs_t = table(CdrRow)
clients_t = table(ClientRow)
live_t = table(LiveBalanceRow)
nas_epochs_t = table(NasEpochRow)
rates_t = table(RateRow)
rate_tables_t = table(RateTableRow)
settings_t = table(Setting)
transactions_t = table(TransactionRow)


_RETRYABLE = frozenset(("40P01", "40001"))  # deadlock detected, serialization failure


_METHODS: dict[str, frozenset[AuthMethod]] = {}


def _methods(text: str | None) -> frozenset[AuthMethod]:
    """The stored ``pap,chap`` as a set, shared between accounts with the same methods."""
    key = text or "pap"
    found = _METHODS.get(key)
    if found is None:
        try:
            found = parse_auth_methods(key)
        except ValueError:
            found = frozenset()  # unreadable: no method is allowed
        _METHODS[key] = found
    return found


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def bump_rates_version(conn: Connection, table_id: int) -> None:
    """After a change to a rate table's rates (same transaction as the change)."""
    conn.execute(
        update(rate_tables_t)
        .where(rate_tables_t.c.id == table_id)
        .values(rates_version=rate_tables_t.c.rates_version + 1)
    )


def bump_catalog_version(conn: Connection) -> None:
    conn.execute(
        update(catalog_version_t)
        .where(catalog_version_t.c.id == 1)
        .values(version=catalog_version_t.c.version + 1)
    )


def client_from_row(row: Any) -> Client:
    return Client(
        id=row.id,
        name=row.name,
        status=row.status,
        currency=row.currency,
        locale=row.locale,
        postpaid=bool(row.postpaid),
        credit=row.credit,
        rate_table_id=row.rate_table_id,
        capacity=row.capacity,
        low_balance_threshold=row.low_balance_threshold,
        low_balance_capacity=row.low_balance_capacity,
        bill_events_by=row.bill_events_by,
    )


def live_calls_condition(now: datetime | BindParameter[datetime]) -> Any:
    """Calls that count: active ones, and held ones whose hold has not lapsed (at ``now``, or
    at a bind parameter's value in a statement built once)."""
    return or_(
        calls_t.c.state == "active",
        and_(calls_t.c.state == "held", calls_t.c.hold_expires_at > now),
    )


class _AuthStatements:
    """The embedded live state's check-and-hold, built once per dialect: built per request,
    SQLAlchemy spent more time making and keying the statements than running them."""

    def __init__(self, dialect_insert: Any, *, lock: bool) -> None:
        balance = select(live_t.c.balance).where(live_t.c.client_id == bindparam("client_id"))
        self.balance = balance.with_for_update() if lock else balance
        self.new_balance = (
            dialect_insert(live_t)
            .values(client_id=bindparam("client_id"), balance=ZERO)
            .on_conflict_do_nothing()
        )
        self.held = select(func.sum(calls_t.c.hold), func.count()).where(
            calls_t.c.client_id == bindparam("client_id"),
            live_calls_condition(bindparam("now", type_=calls_t.c.hold_expires_at.type)),
            calls_t.c.id != bindparam("own_id"),  # 0 when there is none: ids start at 1
        )
        grant: dict[str, Any] = {
            name: bindparam(f"v_{name}")
            for name in ("hold", "granted_seconds", "hold_expires_at", "authorized_at")
        }
        self.update_own = update(calls_t).where(calls_t.c.id == bindparam("own_id")).values(grant)
        given = ("client_id", "account_id", "nas_key", "acct_session_id", "called", "live_uid")
        self.insert_call = (
            insert(calls_t)
            .values(
                {
                    **{name: bindparam(f"v_{name}") for name in given},
                    "state": "held",
                    "max_session_time": 0,
                    "charged": False,
                    "epoch": 0,
                    "accounted": False,
                    "conf_id": "",
                    "origin": "",
                    **grant,
                }
            )
            .returning(calls_t.c.id)
        )
        self.delete_own = delete(calls_t).where(calls_t.c.id == bindparam("own_id"))


_AUTH_PG = _AuthStatements(postgresql.insert, lock=True)
_AUTH_SQLITE = _AuthStatements(sqlite.insert, lock=False)
_LOCKED = select(auth_failures_t.c.locked_until).where(
    auth_failures_t.c.account_id == bindparam("account_id")
)
_OWN_CALL = (
    select(calls_t.c.id)
    .join(call_keys_t, call_keys_t.c.call_id == calls_t.c.id)
    .where(
        call_keys_t.c.nas_key == bindparam("nas_key"),
        call_keys_t.c.key.in_(bindparam("keys", expanding=True)),
        calls_t.c.account_id == bindparam("account_id"),
        calls_t.c.called == bindparam("called"),
    )
    .limit(1)
)


def change_balance(conn: Connection, client_id: int, amount: Decimal) -> int:
    """Move the materialized live balance by ``amount`` (same transaction as the ledger row)
    and the client's live sequence; the new sequence."""
    seq = conn.execute(
        update(live_t)
        .where(live_t.c.client_id == client_id)
        .values(balance=live_t.c.balance + _money_literal(amount), seq=live_t.c.seq + 1)
        .returning(live_t.c.seq)
    ).scalar_one_or_none()
    if seq is None:
        conn.execute(insert(live_t).values(client_id=client_id, balance=amount, seq=1, applied=0))
        return 1
    return int(seq)


def _money_literal(amount: Decimal) -> Any:
    # live_balances.balance is BIGINT micro-units underneath; add micro-units
    from sqlalchemy import literal

    from billing_core.domain.money import to_micros

    return literal(to_micros(amount))


# nodes' clocks (NTP) differ a little: a CDR rated this long before an authorization's time
# by another node's clock still counts as its call's. Short, so that the CDR of an earlier
# call with the same Acct-Session-Id (a SIP Call-ID used again) does not release a new
# call's hold; a CDR missed for a clock further off leaves the hold to lapse (the safe side)
_ENDED_MARGIN = timedelta(seconds=5)


class SqlStore:
    """CatalogSource + LiveState + Ledger on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pg = engine.dialect.name == "postgresql"
        self._auth = _AUTH_PG if self._pg else _AUTH_SQLITE

    # --- CatalogSource -----------------------------------------------------------------
    def catalog_version(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(catalog_version_t.c.version).where(catalog_version_t.c.id == 1)
                ).scalar_one()
            )

    def load_catalog(self, previous: Catalog | None = None) -> Catalog:
        with self.engine.connect() as conn:
            version = int(
                conn.execute(
                    select(catalog_version_t.c.version).where(catalog_version_t.c.id == 1)
                ).scalar_one()
            )
            clients = {row.id: client_from_row(row) for row in conn.execute(select(clients_t))}
            accounts = [
                Account(
                    id=row.id,
                    client_id=row.client_id,
                    name=row.name,
                    ident=row.ident,
                    value=row.value,
                    tech_prefix=row.tech_prefix,
                    password_hash=row.password_hash,
                    auth_methods=_methods(row.auth_methods),
                    secret_enc=row.secret_enc,
                    secret_version=int(row.secret_version or 0),
                    # a deleted client's accounts stay identifiable, so that its calls are
                    # rejected as a deleted client's (code 1, reason client_deleted)
                    enabled=bool(row.enabled)
                    and (
                        bool(row.originate)
                        or (row.client_id in clients and clients[row.client_id].status == "deleted")
                    ),
                )
                for row in conn.execute(select(accounts_t))
            ]
            versions = {
                row.id: int(row.rates_version)
                for row in conn.execute(select(rate_tables_t.c.id, rate_tables_t.c.rates_version))
            }
            kept = {
                table_id: previous.rate_tables[table_id]
                for table_id, version in versions.items()
                if previous is not None
                and previous.rate_versions.get(table_id) == version
                and table_id in previous.rate_tables
            }
            changed = [table_id for table_id in versions if table_id not in kept]
            by_table = {**kept, **(_load_rates(conn, changed) if changed else {})}
            mcl = conn.execute(
                select(settings_t.c.value).where(settings_t.c.name == "max_call_length")
            ).scalar_one_or_none()
        return Catalog(
            version=version,
            clients=clients,
            accounts=AccountIndex(accounts),
            rate_tables=by_table,
            rate_versions=versions,
            max_call_length=int(mcl) if mcl is not None else None,
        )

    # --- LiveState (embedded: the database itself) --------------------------------------
    def reachable(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any failure means unreachable
            return False
        return True

    def authorize(self, request: HoldRequest) -> Decision:
        client_id = request.terms.client.id
        st = self._auth
        with self.engine.begin() as conn:
            if request.lock_check and self._locked(conn, request.account_id, request.now):
                return Reject(RejectReason.LOCKED_OUT)
            balance = self._lock_balance(conn, client_id)
            own = self._own_call(conn, request) if request.identifiers else None
            held, count = conn.execute(
                st.held, {"client_id": client_id, "now": request.now, "own_id": own or 0}
            ).one()
            snapshot = LiveSnapshot(balance, held if held is not None else ZERO, int(count))
            decision = decide(request.terms, snapshot)
            if request.terms.rate is None:  # authentication only: nothing held
                return decision
            if isinstance(decision, Accept):
                values = {
                    "v_hold": decision.hold,
                    "v_granted_seconds": decision.grant_seconds,
                    "v_hold_expires_at": request.now + timedelta(seconds=request.hold_seconds),
                    "v_authorized_at": request.now,
                }
                if own is not None:
                    conn.execute(st.update_own, {"own_id": own, **values})
                else:
                    call_id = conn.execute(
                        st.insert_call,
                        {
                            "v_client_id": client_id,
                            "v_account_id": request.account_id,
                            "v_nas_key": request.nas_key,
                            "v_acct_session_id": request.acct_session_id,
                            "v_called": request.called,
                            "v_live_uid": request.uid,
                            **values,
                        },
                    ).scalar_one()
                    add_keys(conn, call_id, request.nas_key, request.identifiers)
            elif own is not None:
                conn.execute(st.delete_own, {"own_id": own})
            return decision

    @staticmethod
    def _locked(conn: Connection, account_id: int, now: datetime) -> bool:
        until = conn.execute(_LOCKED, {"account_id": account_id}).scalar_one_or_none()
        return until is not None and _aware(until) > now

    def auth_lockout(self, probe: LockoutProbe) -> bool:
        """The failed-login window and lockout of an account, in ``auth_failures``."""
        with self.engine.begin() as conn:
            if self._pg:  # one writer per account at a time
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:k, :a)"),
                    {"k": 0x6175, "a": probe.account_id},
                )
            row = conn.execute(
                select(auth_failures_t).where(auth_failures_t.c.account_id == probe.account_id)
            ).one_or_none()
            now = probe.now
            if row is not None and row.locked_until is not None and _aware(row.locked_until) > now:
                return True
            if not probe.failed:
                return False
            window = timedelta(seconds=probe.window_seconds)
            if row is None or _aware(row.window_start) + window <= now:
                start, failures = now, 1
            else:
                start, failures = _aware(row.window_start), int(row.failures) + 1
            locked_until = None
            if failures >= probe.max_failures:
                locked_until = now + timedelta(seconds=probe.lockout_seconds)
                start, failures = now, 0
            values = {"window_start": start, "failures": failures, "locked_until": locked_until}
            if row is None:
                conn.execute(insert(auth_failures_t).values(account_id=probe.account_id, **values))
            else:
                conn.execute(
                    update(auth_failures_t)
                    .where(auth_failures_t.c.account_id == probe.account_id)
                    .values(**values)
                )
            return False  # this failure may start a lockout: the next request sees it

    def _lock_balance(self, conn: Connection, client_id: int) -> Decimal:
        st = self._auth
        balance = conn.execute(st.balance, {"client_id": client_id}).scalar_one_or_none()
        if balance is None:
            conn.execute(st.new_balance, {"client_id": client_id})
            balance = conn.execute(st.balance, {"client_id": client_id}).scalar_one()
        return cast(Decimal, balance)

    def _own_call(self, conn: Connection, request: HoldRequest) -> int | None:
        found = conn.execute(
            _OWN_CALL,
            {
                "nas_key": request.nas_key,
                "keys": list(request.identifiers),
                "account_id": request.account_id,
                "called": request.called,
            },
        ).scalar_one_or_none()
        return cast(int | None, found)

    def find_holds(self, keys: Sequence[tuple[str, tuple[str, ...]]]) -> list[HeldCall | None]:
        """Holds live in the calls table here: accounting finds them in its transaction."""
        return [None] * len(keys)

    def apply(self, effects: Sequence[LiveEffect], seqs: Mapping[int, int] | None = None) -> None:
        """Nothing to do: the effects were written in the accounting transaction itself."""

    def view(self, client_ids: Sequence[int], now: datetime) -> dict[int, LiveView]:
        out = {cid: LiveView(ZERO, ZERO, 0) for cid in client_ids}
        if not client_ids:
            return out
        with self.engine.connect() as conn:
            balances = {
                r.client_id: r.balance
                for r in conn.execute(
                    select(live_t.c.client_id, live_t.c.balance).where(
                        live_t.c.client_id.in_(client_ids)
                    )
                )
            }
            held = {
                r.client_id: r.held
                for r in conn.execute(
                    select(calls_t.c.client_id, func.sum(calls_t.c.hold).label("held"))
                    .where(calls_t.c.client_id.in_(client_ids), live_calls_condition(now))
                    .group_by(calls_t.c.client_id)
                )
            }
            active = {
                r.client_id: int(r.n)
                for r in conn.execute(
                    select(calls_t.c.client_id, func.count().label("n"))
                    .where(calls_t.c.client_id.in_(client_ids), calls_t.c.state == "active")
                    .group_by(calls_t.c.client_id)
                )
            }
        for cid in client_ids:
            out[cid] = LiveView(balances.get(cid, ZERO), held.get(cid) or ZERO, active.get(cid, 0))
        return out

    def count_active_calls(self) -> int:
        """Calls in state active (their accounting recorded): the radiusd_active_calls gauge."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(calls_t).where(calls_t.c.state == "active")
                ).scalar_one()
            )

    # --- the truth behind a live state kept elsewhere (Redis) ----------------------------------
    def ledger_balances(self, client_ids: Sequence[int] | None = None) -> dict[int, Decimal]:
        """Each client's ledger sum (the live balance's truth), every client when None."""
        with self.engine.connect() as conn:
            ids = (
                list(client_ids)
                if client_ids is not None
                else [r.id for r in conn.execute(select(clients_t.c.id))]
            )
            out = dict.fromkeys(ids, ZERO)
            query = select(
                transactions_t.c.client_id, func.sum(transactions_t.c.amount).label("total")
            ).group_by(transactions_t.c.client_id)
            if client_ids is not None:
                query = query.where(transactions_t.c.client_id.in_(ids))
            for row in conn.execute(query):
                if row.client_id in out:
                    out[row.client_id] = row.total if row.total is not None else ZERO
        return out

    def live_client(self, client_id: int) -> tuple[int, Decimal, list[dict[str, Any]]]:
        """One client's live sequence, ledger balance and calls whose accounting was
        recorded (in the form the Redis live state stores them), as of one moment: the
        client's live-balance row is locked (shared) first, and every writer of the client
        moves that row, so none commits in between. Other clients are never waited for."""
        calls: list[dict[str, Any]] = []
        with self.engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE, writers wait anyway
            lock = select(live_t.c.seq).where(live_t.c.client_id == client_id)
            if self._pg:
                lock = lock.with_for_update(read=True)
            seq = int(conn.execute(lock).scalar_one_or_none() or 0)
            balance = conn.execute(
                select(func.coalesce(func.sum(transactions_t.c.amount), ZERO)).where(
                    transactions_t.c.client_id == client_id
                )
            ).scalar_one()
            rows = list(
                conn.execute(
                    select(calls_t).where(
                        calls_t.c.client_id == client_id, calls_t.c.accounted.is_(True)
                    )
                )
            )
            keys: dict[int, list[str]] = {}
            if rows:
                for row in conn.execute(
                    select(call_keys_t.c.call_id, call_keys_t.c.key).where(
                        call_keys_t.c.call_id.in_([r.id for r in rows])
                    )
                ):
                    keys.setdefault(row.call_id, []).append(row.key)
        for row in rows:
            uid = row.live_uid or f"db{row.id}"
            expires = row.hold_expires_at
            calls.append(
                {
                    "uid": uid,
                    "nas_key": row.nas_key,
                    "identifiers": keys.get(row.id, []),
                    "record": {
                        "s": "a" if row.state == "active" else "h",
                        "h": to_micros(row.hold),
                        "e": int(expires.timestamp() * 1000) if expires else 0,
                        "a": row.account_id or 0,
                        "c": row.called,
                        "n": row.nas_key,
                        "t": int(row.authorized_at.timestamp() * 1000) if row.authorized_at else 0,
                        "g": row.granted_seconds or 0,
                        "i": keys.get(row.id, []),
                        "x": 1,
                    },
                }
            )
        return seq, balance, calls

    def ended_legs(
        self, client_id: int, legs: Sequence[tuple[str, Sequence[str], datetime]]
    ) -> set[tuple[str, str]]:
        """Of ``legs`` (NAS key, identifiers, authorized at): the (NAS key, identifier) pairs
        whose call has a CDR of the client, in the NAS key's current epoch, rated after the
        authorization (less the clock margin): an authorization whose accounting the database
        holds but whose release never reached the live state. Looked up by the CDRs' unique
        index (NAS key, epoch, Acct-Session-Id)."""
        since_of: dict[tuple[str, str], datetime] = {}
        for nas_key, identifiers, authorized_at in legs:
            for ident in identifiers:
                if ident:
                    key = (nas_key, ident)
                    since_of[key] = min(since_of.get(key, authorized_at), authorized_at)
        by_nas: dict[str, list[str]] = {}
        for nas_key, ident in since_of:
            by_nas.setdefault(nas_key, []).append(ident)
        found: set[tuple[str, str]] = set()
        with self.engine.connect() as conn:
            for nas_key, idents in by_nas.items():
                epoch = select(func.coalesce(func.max(nas_epochs_t.c.epoch), 0)).where(
                    nas_epochs_t.c.nas_key == nas_key
                )
                since = min(since_of[(nas_key, i)] for i in idents) - _ENDED_MARGIN
                rows = conn.execute(
                    select(cdrs_t.c.acct_session_id, cdrs_t.c.created_at).where(
                        cdrs_t.c.nas_key == nas_key,
                        cdrs_t.c.epoch == epoch.scalar_subquery(),
                        cdrs_t.c.acct_session_id.in_(sorted(idents)),
                        cdrs_t.c.client_id == client_id,
                        cdrs_t.c.created_at >= since,
                    )
                )
                for row in rows:
                    key = (nas_key, str(row.acct_session_id))
                    if row.created_at >= since_of[key] - _ENDED_MARGIN:
                        found.add(key)
        return found

    # --- the live sequence: what reached a live state kept outside the database ----------------
    def unapplied_live(self, limit: int = 1000) -> list[tuple[int, int]]:
        """(client, live sequence) of clients whose latest live effects are not known to have
        reached the live state (through the partial index on ``seq <> applied``)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(live_t.c.client_id, live_t.c.seq)
                .where(live_t.c.seq != live_t.c.applied)
                .order_by(live_t.c.client_id)
                .limit(limit)
            )
            return [(int(r.client_id), int(r.seq)) for r in rows]

    def live_sequences(self, after: int = 0, limit: int = 1000) -> list[tuple[int, int]]:
        """(client, live sequence) of clients with an id above ``after`` whose every live
        effect was marked applied, in id order: one page of a sweep over the clients."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(live_t.c.client_id, live_t.c.seq)
                .where(live_t.c.client_id > after, live_t.c.seq == live_t.c.applied)
                .order_by(live_t.c.client_id)
                .limit(limit)
            )
            return [(int(r.client_id), int(r.seq)) for r in rows]

    def mark_applied(self, applied: Mapping[int, int]) -> None:
        """Record that each client's live state has every effect up to the given sequence."""
        if not applied:
            return
        stmt = (
            update(live_t)
            .where(
                live_t.c.client_id == bindparam("m_client"),
                live_t.c.applied < bindparam("m_seq"),
            )
            .values(applied=bindparam("m_seq"))
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, [{"m_client": c, "m_seq": applied[c]} for c in sorted(applied)])

    # --- Ledger ---------------------------------------------------------------------------
    @contextmanager
    def accounting(self) -> Iterator[SqlAccountingTx]:
        try:
            with self.engine.begin() as conn:
                tx = SqlAccountingTx(conn)
                yield tx
                tx.finish()
        except DBAPIError as exc:
            # PostgreSQL gave up one of two transactions waiting on each other: run it again
            if getattr(exc.orig, "sqlstate", None) in _RETRYABLE:
                raise LedgerConflict(str(exc.orig).strip()) from exc
            raise


def _load_rates(conn: Connection, table_ids: Sequence[int]) -> dict[int, RateTableIndex]:
    """Every rate table's index, read with a plain cursor and built row by row (a million
    rows in seconds), equal values shared: a table has few distinct prices, grids and dates."""
    shared: dict[object, object] = {}

    def money(micros: int) -> Decimal:
        key = ("m", micros)
        found = shared.get(key)
        if found is None:
            found = shared.setdefault(key, from_micros(int(micros)))
        return found  # type: ignore[return-value]

    def moment(value: datetime | str | None) -> datetime | None:
        if value is None:
            return None
        key = ("t", value)
        found = shared.get(key)
        if found is None:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
            found = shared.setdefault(key, parsed.replace(tzinfo=UTC))
        return found  # type: ignore[return-value]

    builders: dict[int, RateIndexBuilder] = {}
    # names are left out: rating does not need them (the CDR records the code), and a deck
    # of a million prefixes often has a name per prefix
    # streamed (a server-side cursor on PostgreSQL): a million rows are never held at once
    ids = ",".join(str(int(table_id)) for table_id in table_ids)
    result = conn.execution_options(stream_results=True, max_row_buffer=20000).exec_driver_sql(
        "SELECT rate_table_id, code, rate, setup_fee, min_volume, interval, "
        f"grace_volume, effective_date, end_date FROM rates WHERE rate_table_id IN ({ids})"
    )
    for table_id, code, rate, setup, min_volume, interval, grace, start, end in result:
        builder = builders.get(table_id)
        if builder is None:
            builder = builders[table_id] = RateIndexBuilder()
        effective = moment(start)
        assert effective is not None
        builder.add(
            code,
            ("", money(rate), money(setup), min_volume, interval, grace, effective, moment(end)),
        )
    return {table_id: builder.build() for table_id, builder in builders.items()}
