"""``load``'s set-based path (``billingctl.adapters.provision_bulk``) on SQLite and PostgreSQL:
a file of several batches written exactly as the per-client path writes it (its slow,
obviously-right twin: ``admin.upsert_client``, ``upsert_accounts``, ``post_payments``, one
client at a time), a second load that changes nothing, and nothing written on an error."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from billing_core.adapters.secretbox import AesGcmCipher
from billing_core.adapters.sql.catalog import bump_catalog_version
from billing_core.adapters.sql.db import make_engine
from billing_core.adapters.sql.tables import accounts_t, clients_t, events_t, live_t, transactions_t
from billing_core.errors import UserError
from billingctl.adapters import admin
from billingctl.adapters.audit import AuditContext, audit_t
from billingctl.adapters.client_queries import client_tags_t, tags_t
from billingctl.provisioning import ProvisioningError, ProvisioningSpec, parse_provisioning
from billingctl.provisioning_file import load_provisioning_file
from billingctl.services import load
from billingctl.services.clients import accounts_in_service, status_changed

KEY = bytes(range(32))
CLIENTS = 300  # more than one batch (load.BATCH_CLIENTS)


def document(clients: int = CLIENTS) -> dict[str, Any]:
    """``clients`` clients of 3 accounts (a hashed login, an encrypted one, an ip), tags,
    company fields, a low-balance rule and one or two payments each."""
    return {
        "rate_tables": [
            {"name": "usd", "currency": "USD", "rates": []},
            {"name": "eur", "currency": "EUR", "rates": []},
        ],
        "clients": [_client(i) for i in range(clients)],
    }


def _client(i: int) -> dict[str, Any]:
    eur = i % 7 == 0
    return {
        "name": f"c{i:04d}",
        "status": "stop" if i % 11 == 0 else "active",
        "currency": "EUR" if eur else "USD",
        "rate_table": "eur" if eur else "usd",
        "tags": [f"t{i % 5}", "all"] if i % 3 else [],
        "postpaid": i % 4 == 0,
        "credit": f"{i}.50",
        "capacity": None if i % 2 else i,
        "low_balance": {"threshold": "5.00", "capacity": 1} if i % 6 == 0 else None,
        "company": {"name": f"Company {i}", "main_email": f"noc{i}@example.com"},
        "payments": [{"id": f"p{i}", "amount": f"{i + 1}.00", "note": "opening"}]
        + ([{"id": f"q{i}", "amount": "-1.25"}] if i % 10 == 0 else []),
        "accounts": [
            {"name": f"a{i}-pap", "ident": "login", "value": f"u{i}", "password": f"pw{i}"},
            {
                "name": f"a{i}-chap",
                "ident": "login",
                "value": f"s{i}",
                "password": f"se{i}",
                "auth_methods": ["pap", "chap", "digest"],
            },
            {"name": f"a{i}-ip", "ident": "ip", "value": f"10.{i // 256}.{i % 256}.1"},
        ],
    }


def spec_of(doc: dict[str, Any]) -> ProvisioningSpec:
    return parse_provisioning(copy.deepcopy(doc), lambda _name: iter(()))


def one_by_one(engine: Engine, spec: ProvisioningSpec, cipher: AesGcmCipher) -> None:
    """The per-client path ``load`` took before it wrote in batches (the twin)."""
    audit = AuditContext("load", actor="test")
    with engine.begin() as conn:
        ids = {t.name: admin.upsert_rate_table(conn, t, audit) for t in spec.rate_tables}
        for index, client in enumerate(spec.clients):
            upserted = admin.upsert_client(conn, client, index, ids)
            changed = admin.upsert_accounts(
                conn,
                upserted.client_id,
                client,
                index,
                cipher=cipher,
                in_service=accounts_in_service(client.status),
            )
            if upserted.old_status is not None:
                status_changed(
                    conn, upserted.client_id, client.name, upserted.old_status, client.status
                )
            admin.record_client(
                conn, audit, upserted.client_id, client.name, upserted.before, changed
            )
            admin.post_payments(conn, audit, upserted.client_id, client)
        bump_catalog_version(conn)


def in_batches(engine: Engine, spec: ProvisioningSpec, cipher: AesGcmCipher) -> dict[str, int]:
    return load.apply_provisioning(engine, spec, AuditContext("load", actor="test"), cipher=cipher)


_SECRET = {"password_hash", "secret_enc"}  # salted / a random nonce: differ between twins


def contents(engine: Engine) -> dict[str, Any]:
    """Every row ``load`` writes, without ids' allocation order or the moments written;
    salted hashes and ciphertexts only as present or not."""
    with engine.connect() as conn:
        names = {r.id: r.name for r in conn.execute(select(clients_t.c.id, clients_t.c.name))}
        tag_names = {r.id: r.name for r in conn.execute(select(tags_t.c.id, tags_t.c.name))}

        def rows(table: Any, drop: set[str], key: str) -> list[dict[str, Any]]:
            out = []
            for row in conn.execute(select(table)):
                item = {k: v for k, v in row._mapping.items() if k not in drop}
                if "client_id" in item:
                    item["client_id"] = names.get(item["client_id"])
                for column in _SECRET & set(item):
                    item[column] = item[column] is not None
                out.append(item)
            return sorted(out, key=lambda item: str(item[key]))

        return {
            "clients": rows(clients_t, {"id"}, "name"),
            "accounts": rows(accounts_t, {"id"}, "name"),
            "tags": sorted(
                (names[c], tag_names[t]) for c, t in conn.execute(select(client_tags_t))
            ),
            "live": rows(live_t, set(), "client_id"),
            "transactions": rows(transactions_t, {"id", "created_at"}, "external_id"),
            "events": rows(events_t, {"id", "at"}, "client_id"),
            "audit": [
                (r.entity_type, r.entity_name, r.client_name, _json(r.before), _json(r.after))
                for r in conn.execute(select(audit_t).order_by(audit_t.c.id))
            ],
        }


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def changed(doc: dict[str, Any]) -> dict[str, Any]:
    """The same clients with changes of every kind a second load meets."""
    doc = copy.deepcopy(doc)
    clients = doc["clients"]
    clients[5]["credit"] = "99.00"  # a field
    clients[6]["tags"] = ["new-tag"]  # tags, one created
    clients[7]["status"] = "deleted"  # a status: accounts leave service, an event
    clients[11]["status"] = "active"  # back from stop
    clients[8]["accounts"][0]["password"] = "changed"  # a new hash
    clients[9]["accounts"][1]["password"] = "changed"  # a new ciphertext
    clients[10]["accounts"][2]["value"] = "192.0.2.10"  # an identity
    clients[299]["accounts"].append(clients[298]["accounts"].pop())  # an account moves
    clients[12]["payments"].append({"id": "late", "amount": "3.00"})  # a new payment
    clients.append({"name": "newcomer", "accounts": [{"name": "n", "ident": "ani", "value": "1"}]})
    return doc


def test_batches_write_what_the_per_client_path_writes(tmp_path: Path) -> None:
    """Both twins on SQLite files: the first load, then a load changing some of everything."""
    cipher = AesGcmCipher(KEY)
    engines = []
    for name in ("twin", "bulk"):
        url = f"sqlite:///{tmp_path / name}.db"
        from billing_core.adapters.sql.db import upgrade

        engine = make_engine(url)
        upgrade(engine)
        engines.append(engine)
    twin, bulk = engines
    for doc in (document(), changed(document())):
        one_by_one(twin, spec_of(doc), cipher)
        in_batches(bulk, spec_of(doc), cipher)
        expected, got = contents(twin), contents(bulk)
        for part in expected:
            assert got[part] == expected[part], part


def test_a_second_load_changes_nothing_and_a_change_is_written(db_url: str) -> None:
    engine = make_engine(db_url)
    cipher = AesGcmCipher(KEY)
    first = in_batches(engine, spec_of(document()), cipher)
    assert first == {
        "rate_tables": 2,
        "rates": 0,
        "clients": CLIENTS,
        "accounts": 3 * CLIENTS,
        "payments": CLIENTS + CLIENTS // 10,
    }
    before = contents(engine)
    assert len(before["audit"]) == 2 + CLIENTS + first["payments"]
    again = in_batches(engine, spec_of(document()), cipher)
    assert again["payments"] == 0
    assert contents(engine) == before  # not one row or audit entry more

    doc = document()
    doc["clients"][CLIENTS - 1]["credit"] = "12.34"
    in_batches(engine, spec_of(doc), cipher)
    after = contents(engine)
    assert len(after["audit"]) == len(before["audit"]) + 1
    entry = after["audit"][-1]
    assert entry[:3] == ("client", f"c{CLIENTS - 1:04d}", f"c{CLIENTS - 1:04d}")
    assert (entry[3]["credit"], entry[4]["credit"]) == (f"{CLIENTS - 1}.50", "12.34")
    credits = {c["name"]: c["credit"] for c in after["clients"]}
    assert str(credits[f"c{CLIENTS - 1:04d}"]).startswith("12.34")


def test_an_error_in_the_last_client_writes_nothing(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    # invalid: refused by validation, before the database is touched
    doc = document()
    doc["clients"][-1]["accounts"][2]["ident"] = "phone"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProvisioningError, match=rf"clients\[{CLIENTS - 1}\]\.accounts\[2\]\.ident"):
        load_provisioning_file(path)
    # refused by the database's state in the last batch: an unknown rate table, and a
    # password that needs the server key when there is none
    doc = document()
    doc["clients"][-1]["rate_table"] = "nowhere"
    with pytest.raises(UserError, match=rf"clients\[{CLIENTS - 1}\]\.rate_table: unknown"):
        in_batches(engine, spec_of(doc), AesGcmCipher(KEY))
    # only the last client keeps its password encrypted: refused in the last batch, after
    # the earlier batches were written (and rolled back)
    doc = document()
    for client in doc["clients"][:-1]:
        client["accounts"][1].pop("auth_methods")
    with pytest.raises(
        UserError, match=rf"clients\[{CLIENTS - 1}\]\.accounts: a{CLIENTS - 1}-chap"
    ):
        load.apply_provisioning(engine, spec_of(doc))
    empty = contents(engine)
    assert all(not rows for rows in empty.values()), empty
