"""The SQL adapter against real SQLite and PostgreSQL: provisioning, holds, ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from billing_core.adapters.sql.db import current_revision, make_engine, upgrade
from billing_core.adapters.sql.store import SqlStore
from billing_core.adapters.sql.tables import call_keys_t, calls_t, clients_t, transactions_t
from billing_core.bootstrap import live_state
from billing_core.domain.accounting_packets import AccountingEvent
from billing_core.domain.identification import CallerFacts
from billing_core.domain.model import RejectReason
from billing_core.domain.policy import Accept, Reject
from billing_core.errors import UserError
from billing_core.services.accounting import AccountingService
from billing_core.services.authorization import AuthorizationService, AuthorizeCall, CatalogCache
from billingctl.adapters import admin
from billingctl.provisioning import parse_provisioning
from billingctl.services import load

from ..authorize import decide


def now() -> datetime:
    """The real clock, read per use: holds lapse against it, however long the run."""
    return datetime.now(UTC).replace(microsecond=0)


def spec(balance: str = "1.00", **client: Any) -> Any:
    document = {
        "settings": {"max_call_length": 3600},
        "rate_tables": [
            {
                "name": "retail",
                "currency": "USD",
                "rates": [
                    {
                        "code": "1",
                        "name": "USA",
                        "rate": "0.10",
                        "setup_fee": "0",
                        "min_volume": 60,
                        "interval": 60,
                        "grace_volume": 0,
                        "effective_date": "2026-01-01T00:00:00Z",
                    }
                ],
            }
        ],
        "clients": [
            {
                "name": "Acme",
                "rate_table": "retail",
                "payments": [{"id": "p1", "amount": balance}],
                "accounts": [
                    {"name": "acme-login", "ident": "login", "value": "acme", "password": "pw"},
                    {"name": "acme-ip", "ident": "ip", "value": "10.1.1.1"},
                ],
                **client,
            }
        ],
    }
    return parse_provisioning(document, lambda _path: iter(()))


def services(url: str) -> tuple[SqlStore, AuthorizationService, AccountingService]:
    store = SqlStore(make_engine(url))
    catalog = CatalogCache(store, min_interval=0)
    live = live_state(store, "")  # the daemon's: on SQLite, the batched SqliteLiveState
    authz = AuthorizationService(
        lambda: catalog.current, live, max_call_length=7200, auth_hold_seconds=180
    )
    acct = AccountingService(
        lambda: catalog.current, store, live, auth_hold_seconds=180, max_acct_delay_seconds=86400
    )
    return store, authz, acct


def call(conf_id: str = "c1", user: str = "acme", password: bytes | None = b"pw") -> AuthorizeCall:
    return AuthorizeCall(
        nas_key="nas|10.0.0.1",
        caller=CallerFacts(user_name=user, called="15550001111"),
        password=password,
        chap=None,
        identifiers=(conf_id,),
        arrived=now(),
        acct_session_id=conf_id,
    )


def stop(session: str, seconds: int, *, delay: int = 0, status: int = 2) -> AccountingEvent:
    return AccountingEvent(
        nas_key="nas|10.0.0.1",
        bill_leg="originate",
        status=status,
        acct_session_id=session,
        conf_id=None,
        avpair_call_id=None,
        origin=None,
        session_time=seconds,
        delay=delay,
        arrived=now() + timedelta(seconds=seconds + delay),
        caller=CallerFacts(user_name="acme", called="15550001111"),
    )


def test_migrations_are_idempotent_and_match_the_models(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from billing_core.adapters.sql.db import _alembic_config
    from billing_core.adapters.sql.models import metadata

    engine = make_engine(db_url)
    upgrade(engine)
    upgrade(engine)
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert current_revision(engine) == head
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_load_is_idempotent_and_payments_apply_once(db_url: str) -> None:
    engine = make_engine(db_url)
    first = load.apply_provisioning(engine, spec())
    second = load.apply_provisioning(engine, spec())
    assert first["payments"] == 1
    assert second["payments"] == 0
    shown = admin.client_summary(engine, "Acme")
    assert shown["live_balance"] == "1.00"
    assert shown["fixed_balance"] == "1.00"
    assert shown["available_balance"] == "1.00"


def test_unknown_rate_table_is_refused_and_nothing_written(db_url: str) -> None:
    engine = make_engine(db_url)
    with pytest.raises(UserError, match=r"clients\[0\]\.rate_table: unknown rate table 'nope'"):
        load.apply_provisioning(engine, spec(rate_table="nope"))
    assert admin.list_clients(engine, status="all") == []


def test_prepaid_call_end_to_end_through_the_services(db_url: str) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("1.00"))
    _store, authz, acct = services(db_url)
    outcome = decide(authz, call())
    assert outcome.decision == Accept(600, Decimal("1.000000"), Decimal("1.000000"))
    assert admin.client_summary(engine, "Acme")["held"] == "1.00"
    assert acct.record(stop("c1", 61)).result == "charged"
    shown = admin.client_summary(engine, "Acme")
    assert shown["live_balance"] == "0.80"
    assert shown["held"] == "0.00"
    cdrs = admin.list_cdrs(engine)
    assert [(c["duration"], c["billed_duration"], c["cost"]) for c in cdrs] == [(61, 120, "0.20")]


def test_a_duplicate_stop_is_charged_once(db_url: str) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("5.00"))
    _store, _authz, acct = services(db_url)
    assert acct.record(stop("s9", 61)).result == "charged"
    # re-sent with a larger Acct-Delay-Time: same identity and duration
    assert acct.record(stop("s9", 61, delay=7)).result == "duplicate"
    assert admin.client_summary(engine, "Acme")["live_balance"] == "4.80"
    with engine.connect() as conn:
        charges = conn.execute(
            select(func.count()).where(transactions_t.c.kind == "call")
        ).scalar_one()
    assert charges == 1


def test_holds_are_shared_between_concurrent_calls(db_url: str) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("1.00"))
    _store, authz, _acct = services(db_url)
    assert decide(authz, call("a")).decision == Accept(600, Decimal("1.00"), Decimal("1.00"))
    second = decide(authz, call("b")).decision
    assert second == Reject(RejectReason.INSUFFICIENT_FUNDS)
    # the same call asking again is granted afresh, its own hold not counted
    again = decide(authz, call("a")).decision
    assert again == Accept(600, Decimal("1.00"), Decimal("1.00"))
    assert admin.client_summary(engine, "Acme")["held"] == "1.00"


@pytest.mark.parametrize(
    ("user", "password", "reason"),
    [
        ("nobody", b"pw", RejectReason.UNKNOWN_ACCOUNT),
        ("acme", b"wrong", RejectReason.BAD_PASSWORD),
        ("acme", None, RejectReason.BAD_PASSWORD),
    ],
)
def test_identity_rejections(
    db_url: str, user: str, password: bytes | None, reason: RejectReason
) -> None:
    load.apply_provisioning(make_engine(db_url), spec())
    _store, authz, _acct = services(db_url)
    assert decide(authz, call(user=user, password=password)).decision == Reject(reason)


def test_zero_balance_and_no_rate(db_url: str) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("0"))
    _store, authz, _acct = services(db_url)
    assert decide(authz, call()).decision == Reject(RejectReason.ZERO_BALANCE)
    admin.add_payment(engine, "Acme", Decimal("2.00"), "top-up")
    _store, authz, _acct = services(db_url)
    foreign = AuthorizeCall(
        nas_key="n",
        caller=CallerFacts(user_name="acme", called="+4420771234"),
        password=b"pw",
        chap=None,
        identifiers=(),
        arrived=now(),
    )
    assert decide(authz, foreign).decision == Reject(RejectReason.NO_RATE)


def test_catalog_follows_changes_by_version(db_url: str) -> None:
    engine = make_engine(db_url)
    store = SqlStore(engine)
    cache = CatalogCache(store, min_interval=0)
    assert cache.current.clients == {}
    load.apply_provisioning(engine, spec())
    assert cache.refresh() is True
    assert [c.name for c in cache.current.clients.values()] == ["Acme"]
    assert cache.refresh() is False
    admin.update_setting(engine, "max_call_length", "120")
    assert cache.refresh() is True
    assert cache.current.max_call_length == 120


def test_sqlite_file_database_is_created_with_its_directory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'deep' / 'dir' / 'billing.db'}"
    upgrade(make_engine(url))
    assert (tmp_path / "deep" / "dir" / "billing.db").exists()


def test_a_catalog_reload_rebuilds_only_the_rate_tables_that_changed(db_url: str) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec())
    cache = CatalogCache(SqlStore(engine), min_interval=0)
    ((table_id, index),) = cache.current.rate_tables.items()
    admin.update_setting(engine, "max_call_length", "600")  # a change that is not a rate
    assert cache.refresh() is True
    assert cache.current.rate_tables[table_id] is index  # reused, not rebuilt
    changed = spec()
    rate = changed.rate_tables[0].rates[0]
    from dataclasses import replace

    new_rate = replace(rate, rate=Decimal("0.50"))
    changed = replace(changed, rate_tables=(replace(changed.rate_tables[0], rates=(new_rate,)),))
    load.apply_provisioning(engine, changed)
    assert cache.refresh() is True
    rebuilt = cache.current.rate_tables[table_id]
    assert rebuilt is not index
    found = rebuilt.lookup("15550001111", now())
    assert found is not None and found.rate == Decimal("0.50")


# --- a batch is one unit of work ---------------------------------------------------------------
def leg(session: str, status: int, seconds: int | None = None, **extra: Any) -> AccountingEvent:
    return AccountingEvent(
        nas_key="nas|10.0.0.1",
        bill_leg="originate",
        status=status,
        acct_session_id=session,
        conf_id=f"conf-{session}",
        avpair_call_id=None,
        origin=None,
        session_time=seconds,
        delay=0,
        arrived=now() + timedelta(seconds=seconds or 0),
        caller=CallerFacts(user_name="acme", called="15550001111"),
        **extra,
    )


def test_a_call_started_and_stopped_in_one_batch_is_charged_once_and_ended(db_url: str) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("5.00"))
    store, _authz, acct = services(db_url)
    batch = [leg("a", 1), leg("b", 1), leg("a", 3, 30), leg("a", 2, 61), leg("a", 2, 61)]
    results = [o.result for o in acct.record_many(batch)]
    assert results == ["recorded", "recorded", "recorded", "charged", "duplicate"]
    assert admin.client_summary(engine, "Acme")["live_balance"] == "4.80"
    # "a" ended in the batch; "b" is still up, with its identifiers for the next batch
    assert store.count_active_calls() == 1
    assert [o.result for o in acct.record_many([leg("b", 2, 60)])] == ["charged"]
    assert store.count_active_calls() == 0
    assert sorted((c["duration"], c["cost"]) for c in admin.list_cdrs(engine)) == [
        (60, "0.10"),
        (61, "0.20"),
    ]
    assert store.ledger_balances() == {1: Decimal("4.70")}


def _orphan_keys(engine: Any) -> int:
    """Identifiers whose call is gone (call_keys has no foreign key: migration 0010)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(call_keys_t)
                .where(call_keys_t.c.call_id.not_in(select(calls_t.c.id)))
            ).scalar_one()
        )


def test_an_ended_call_takes_its_identifiers_with_it(db_url: str) -> None:
    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("1.00"))
    store, authz, acct = services(db_url)
    assert isinstance(decide(authz, call("a")).decision, Accept)
    assert isinstance(decide(authz, call("b")).decision, Reject)  # a holds every cent
    # a call of another batch: its row and identifiers written, then ended by its Stop
    assert [o.result for o in acct.record_many([leg("c", 1)])] == ["recorded"]
    assert [o.result for o in acct.record_many([leg("c", 2, 600)])] == ["charged"]
    # the balance is gone: "a" asking again is refused, and its held call removed
    assert decide(authz, call("a")).decision == Reject(RejectReason.ZERO_BALANCE)
    assert store.count_active_calls() == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(calls_t)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(call_keys_t)).scalar_one() == 0
    assert _orphan_keys(engine) == 0


def test_the_packets_are_stored_as_received(db_url: str) -> None:
    import json

    from billing_core.adapters.sql.tables import acct_events_t

    engine = make_engine(db_url)
    load.apply_provisioning(engine, spec("5.00"))
    _store, _authz, acct = services(db_url)
    attributes = {"User-Name": ["acme"], "Cisco-AVPair": ['h323-conf-id="x y"', "é\\n"]}
    acct.record_many([leg("a", 1, attributes=attributes)])
    with engine.connect() as conn:
        stored = conn.execute(select(acct_events_t.c.attributes)).scalar_one()
    # one compact JSON text, UTF-8 as received (not escaped into a string a second time)
    assert json.loads(stored) == attributes
    assert stored == '{"User-Name":["acme"],"Cisco-AVPair":["h323-conf-id=\\"x y\\"","é\\\\n"]}'


def test_a_leg_stored_first_by_another_transaction_rolls_the_batch_back_and_reruns_it(
    pg_url: str,
) -> None:
    """PostgreSQL (SQLite has one writer): another worker commits the same Stop between this
    batch's reading and its writing. The batch runs again and finds it a duplicate."""
    from collections.abc import Iterator
    from contextlib import contextmanager

    from billing_core.adapters.sql.accounting import SqlAccountingTx

    engine = make_engine(pg_url)
    load.apply_provisioning(engine, spec("5.00"))
    store, _authz, other = services(pg_url)
    runs: list[int] = []

    class Racing(SqlStore):
        @contextmanager
        def accounting(self) -> Iterator[SqlAccountingTx]:
            with super().accounting() as tx:
                yield tx
                runs.append(len(runs))
                if len(runs) == 1:  # the other worker's copy commits first
                    assert other.record(stop("s1", 61)).result == "charged"

    racing = Racing(make_engine(pg_url))
    catalog = CatalogCache(racing, min_interval=0)
    acct = AccountingService(
        lambda: catalog.current, racing, racing, auth_hold_seconds=180, max_acct_delay_seconds=86400
    )
    outcomes = acct.record_many([stop("s1", 61), stop("s2", 60)])
    assert [o.result for o in outcomes] == ["duplicate", "charged"]
    assert runs == [0, 1]
    assert len(admin.list_cdrs(engine)) == 2
    assert store.ledger_balances() == {1: Decimal("4.70")}
    assert admin.client_summary(engine, "Acme")["live_balance"] == "4.70"


def test_the_batch_statements_reach_rows_through_indexes(pg_url: str) -> None:
    """With a carrier's million CDRs, a hash join over the table per batch would be the
    end of accounting: every lookup of a batch must be an index scan."""
    from billing_core.adapters.sql import bulk_pg as sql_bulk

    engine = make_engine(pg_url)
    load.apply_provisioning(engine, spec("5.00"))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO cdrs (client_id, nas_key, epoch, acct_session_id, conf_id, origin, "
            "called, duration, billed_duration, cost, rated_at, stopped_at, closed_by, "
            "created_at) SELECT 1, 'nas', 0, 's' || g, '', '', '1', 1, 1, 0, now(), now(), "
            "'stop', now() FROM generate_series(1, 20000) AS g"
        )
        conn.exec_driver_sql(
            "INSERT INTO calls (id, client_id, nas_key, acct_session_id, conf_id, origin, "
            "called, state, hold, max_session_time, charged, epoch, live_uid, accounted) "
            "SELECT g, 1, 'nas', 's' || g, '', '', '1', 'active', 0, 0, false, 0, '', true "
            "FROM generate_series(1, 20000) AS g"
        )
        conn.exec_driver_sql(
            "INSERT INTO call_keys (call_id, nas_key, key) "
            "SELECT g, 'nas', 's' || g FROM generate_series(1, 20000) AS g"
        )
        conn.exec_driver_sql("ANALYZE")
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for sql, params in [
            (sql_bulk._PG_FIND_LEGS, ['[["nas",0,"s5"]]']),
            (sql_bulk._PG_FIND_CALLS, ['[["nas","s5"]]']),
            (sql_bulk._pg_update_calls(("state",)), ['[{"id":5,"state":"held"}]', "[5]"]),
            (sql_bulk._PG_CORRECT, ["[]", "[5]"]),
        ]:
            cursor.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan on cdrs" not in plan and "Seq Scan on call" not in plan, plan


def test_the_live_sequence_moves_with_every_ledger_write_and_marks_what_is_unapplied(
    db_url: str,
) -> None:
    """A payment and a charge each move the client's live sequence in their transaction;
    until marked applied, the client is listed as unapplied (on both engines)."""
    engine = make_engine(db_url)
    store = SqlStore(engine)
    moved: list[admin.LiveMove] = []
    load.apply_provisioning(engine, spec("5.00"), payments_applied=moved)
    assert moved == [(1, Decimal("5.00"), 1)]
    admin.add_payment(engine, "Acme", Decimal("-2.00"), "charge", applied=moved)
    assert moved[-1] == (1, Decimal("-2.00"), 2)
    assert store.unapplied_live() == [(1, 2)]
    assert store.live_sequences() == []  # a sweep looks only at settled clients
    assert store.live_client(1)[:2] == (2, Decimal("3.00"))
    store.mark_applied({1: 1})
    assert store.unapplied_live() == [(1, 2)]
    store.mark_applied({1: 2})
    assert store.unapplied_live() == []
    assert store.live_sequences() == [(1, 2)]
    store.mark_applied({1: 1})  # never back
    assert store.unapplied_live() == []
    store.mark_applied({1: 1, 999: 5})  # a client without a row (deleted meanwhile): nothing
    assert store.unapplied_live() == [] and store.live_sequences() == [(1, 2)]


def test_reading_a_client_for_the_live_state_waits_for_its_writers_only(pg_url: str) -> None:
    """live_client locks the client's live-balance row (shared): a writer of that client
    that has not committed holds it back, and the reading then includes the write; another
    client's writer does not."""
    import threading

    from sqlalchemy import text

    engine = make_engine(pg_url)
    store = SqlStore(engine)
    load.apply_provisioning(engine, spec("5.00"))
    load.apply_provisioning(
        engine, spec(name="Other", payments=[{"id": "p2", "amount": "1.00"}], accounts=[])
    )
    other = make_engine(pg_url)
    with other.connect() as writer:
        writer.execute(
            text("UPDATE live_balances SET seq = seq + 1 WHERE client_id = 1")
        )  # a ledger writer of client 1, not committed yet
        assert store.live_client(2)[0] == 1  # another client: read at once
        result: list[Any] = []
        reader = threading.Thread(target=lambda: result.append(store.live_client(1)))
        reader.start()
        reader.join(timeout=1.0)
        assert reader.is_alive() and not result  # waits for client 1's writer
        writer.commit()
    reader.join(timeout=10)
    assert result and result[0][0] == 2
    other.dispose()


def test_batch_times_in_any_offset_are_stored_as_utc(pg_url: str) -> None:
    """The PostgreSQL batch writer sends times with their offset (orjson's own format) and
    stores them AT TIME ZONE 'UTC': a time given at +02:00 is read back as the same instant,
    and a call found by two identifiers comes back once per row with both of them."""
    from datetime import timezone

    from billing_core.adapters.sql.bulk_pg import PgBulk

    load.apply_provisioning(make_engine(pg_url), spec())
    store, _auth, _acct = services(pg_url)
    client_id = store.engine.connect().execute(select(func.min(clients_t.c.id))).scalar_one()
    instant = datetime(2026, 3, 1, 12, 0, 5, 250000, tzinfo=UTC)
    plus_two = instant.astimezone(timezone(timedelta(hours=2)))
    with store.engine.begin() as conn:
        bulk = PgBulk(conn)
        (call_id,) = bulk.call_ids(1)
        bulk.insert_calls([_call_row(call_id, client_id, plus_two)])
        bulk.insert_keys([(call_id, "nas", "s1"), (call_id, "nas", "c1")])
        bulk.update_calls(("last_seen_at",), [{"id": call_id, "last_seen_at": plus_two}])
        found = bulk.calls([("nas", "s1"), ("nas", "c1")])
    assert sorted((record.id, key) for record, _nas, key in found) == [
        (call_id, "c1"),
        (call_id, "s1"),
    ]
    record = found[0][0]
    assert found[1][0] is record
    assert record.keys == frozenset(("s1", "c1"))
    assert record.started_at == instant and record.started_at.utcoffset() == timedelta(0)
    assert record.last_seen_at == instant
    assert record.hold == Decimal("1.5") and record.tags == "a;b"


def _call_row(call_id: int, client_id: int, at: datetime) -> dict[str, Any]:
    return {
        "id": call_id,
        "client_id": client_id,
        "account_id": None,
        "nas_key": "nas",
        "acct_session_id": "s1",
        "conf_id": "c1",
        "origin": "",
        "called": "1555",
        "state": "active",
        "hold": Decimal("1.5"),
        "granted_seconds": 60,
        "authorized_at": None,
        "started_at": at,
        "last_seen_at": at,
        "hold_expires_at": None,
        "max_session_time": 0,
        "charged": False,
        "epoch": 0,
        "live_uid": "",
        "accounted": True,
        "tags": "a;b",
    }


def _revision(engine: Any, revision: str, *, down: bool) -> None:
    from alembic import command

    from billing_core.adapters.sql.db import _alembic_config

    cfg = _alembic_config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_migrations_0010_and_0011_keep_the_rows_and_drop_the_keys_and_index(db_url: str) -> None:
    """A database with calls in progress, CDRs and ledger rows written at 0009 (foreign keys
    and the partial index in place) upgrades to the head with every row kept (on SQLite the
    tables are copied), the keys and the index gone, and accounting goes on."""
    from sqlalchemy import inspect

    engine = make_engine(db_url)
    _revision(engine, "0009", down=True)  # 0011's and 0010's downgrades, on an empty database
    assert {fk["name"] for fk in inspect(engine).get_foreign_keys("cdrs")} == {
        "fk_cdrs_client_id_clients"
    }
    load.apply_provisioning(engine, spec("5.00"))
    store, _authz, acct = services(db_url)
    assert [o.result for o in acct.record_many([leg("a", 1), leg("b", 1)])] == ["recorded"] * 2
    assert [o.result for o in acct.record_many([leg("b", 2, 61)])] == ["charged"]

    def counts() -> dict[str, int]:
        with engine.connect() as conn:
            return {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (calls_t, call_keys_t, transactions_t, clients_t)
            }

    before = counts()
    assert before["calls"] == 1 and before["call_keys"] >= 2
    engine.dispose()
    _revision(engine, "head", down=False)
    assert counts() == before
    inspector = inspect(engine)
    for table in ("calls", "call_keys", "cdrs", "transactions"):
        assert inspector.get_foreign_keys(table) == [], table
    assert "ix_live_balances_unapplied" not in {
        i["name"] for i in inspector.get_indexes("live_balances")
    }
    # the call open at the upgrade is found and charged by its Stop, its identifiers gone
    assert [o.result for o in acct.record_many([leg("a", 2, 60)])] == ["charged"]
    assert counts()["calls"] == 0 and counts()["call_keys"] == 0
    assert store.ledger_balances() == {1: Decimal("4.70")}
