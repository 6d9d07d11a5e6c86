"""What a live state kept outside the database (Redis) rebuilds and heals from: the ledger's
balances, each client's accounted calls as of one moment, the CDRs that ended a hold, and
the live sequences that tell which clients' effects reached it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, bindparam, func, select, update

from billing_core.domain.calls import CallState, live_uid
from billing_core.domain.money import ZERO
from billing_core.ports import ClientTruth, LiveCall

from .tables import (
    call_keys_t,
    calls_t,
    cdrs_t,
    clients_t,
    live_t,
    nas_epochs_t,
    transactions_t,
)

# nodes' clocks (NTP) differ a little: a CDR rated this long before an authorization's time
# by another node's clock still counts as its call's. Short, so that the CDR of an earlier
# call with the same Acct-Session-Id (a SIP Call-ID used again) does not release a new
# call's hold; a CDR missed for a clock further off leaves the hold to lapse (the safe side)
_ENDED_MARGIN = timedelta(seconds=5)


class SqlLiveTruth:
    """The database's side of a live state kept elsewhere, on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pg = engine.dialect.name == "postgresql"

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

    def live_client(self, client_id: int) -> ClientTruth:
        """One client's live sequence, ledger balance and calls whose accounting was
        recorded, as of one moment: the client's live-balance row is locked (shared) first,
        and every writer of the client moves that row, so none commits in between. Other
        clients are never waited for."""
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
        calls = [
            LiveCall(
                uid=live_uid(row.id, row.live_uid),
                nas_key=row.nas_key,
                identifiers=tuple(keys.get(row.id, [])),
                state=CallState.ACTIVE if row.state == CallState.ACTIVE else CallState.HELD,
                hold=row.hold,
                hold_expires_at=row.hold_expires_at,
                account_id=row.account_id,
                called=row.called,
                authorized_at=row.authorized_at,
                granted_seconds=row.granted_seconds,
            )
            for row in rows
        ]
        return ClientTruth(seq, balance, calls)

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
        reached the live state (a scan of the table: no index on the sequence, migration 0011)."""
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
