"""Credentials against the real stores: secrets provisioned encrypted and verified from the
catalog, the lockout in the database (SQLite, PostgreSQL) and in Redis (sync and the
daemon's pipelining client), shared by every node, and key rotation in one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from sqlalchemy import select

from billing_core.adapters.redis_live import AsyncAuthorizer, ResyncingLive
from billing_core.adapters.secretbox import AesGcmCipher
from billing_core.adapters.sql.db import make_engine
from billing_core.adapters.sql.store import SqlStore
from billing_core.adapters.sql.tables import accounts_t
from billing_core.domain.credentials import Chap, chap_response
from billing_core.domain.identification import CallerFacts
from billing_core.domain.model import RejectReason
from billing_core.domain.policy import Accept, Reject
from billing_core.errors import UserError
from billing_core.ports import LiveState, LockoutProbe
from billing_core.services.authorization import (
    AuthorizationService,
    AuthorizeCall,
    AuthOutcome,
    CatalogCache,
    SecretCache,
)
from billingctl.adapters.account_secrets import rotate_key
from billingctl.provisioning import parse_provisioning
from billingctl.services import load

from ..authorize import decide

KEY = bytes(range(32))
NEW_KEY = bytes(range(100, 132))
CHALLENGE = bytes(range(16))


def spec() -> Any:
    document = {
        "clients": [
            {
                "name": "Acme",
                "postpaid": True,
                "accounts": [
                    {"name": "hashed", "ident": "login", "value": "hashed", "password": "pw"},
                    {
                        "name": "sip",
                        "ident": "login",
                        "value": "sip",
                        "password": "s3cret",
                        "auth_methods": ["chap", "digest"],
                    },
                ],
            }
        ]
    }
    return parse_provisioning(document, lambda _path: iter(()))


def call(user: str, *, password: bytes | None = None, chap_secret: bytes | None = None) -> Any:
    chap = None
    if chap_secret is not None:
        chap = Chap(3, chap_response(3, chap_secret, CHALLENGE), CHALLENGE)
    return AuthorizeCall(
        nas_key="nas|1",
        caller=CallerFacts(user_name=user),
        password=password,
        chap=chap,
        identifiers=(),
        arrived=datetime.now(UTC),
    )


def service(store: SqlStore, live: LiveState, cipher: Any) -> AuthorizationService:
    catalog = CatalogCache(store, min_interval=0)
    return AuthorizationService(
        lambda: catalog.current,
        live,
        max_call_length=3600,
        auth_hold_seconds=60,
        secrets=SecretCache(cipher),
        max_auth_failures=3,
        auth_lockout_seconds=60,
    )


def check_lockout(authorize: Callable[[AuthorizeCall], AuthOutcome]) -> None:
    for _ in range(3):
        outcome = authorize(call("hashed", password=b"guess"))
        assert outcome.decision == Reject(RejectReason.BAD_PASSWORD)
    # locked out: the right password is refused without a check, a wrong one as locked
    assert authorize(call("hashed", password=b"pw")).decision == Reject(RejectReason.LOCKED_OUT)
    assert authorize(call("hashed", password=b"x")).decision == Reject(RejectReason.LOCKED_OUT)
    # another account of the same client is not slowed
    assert isinstance(authorize(call("sip", chap_secret=b"s3cret")).decision, Accept)


def test_provisioned_secrets_verify_and_guessing_locks_out_in_the_database(db_url: str) -> None:
    engine = make_engine(db_url)
    cipher = AesGcmCipher(KEY)
    load.apply_provisioning(engine, spec(), cipher=cipher)
    with engine.connect() as conn:
        rows = {r.name: r for r in conn.execute(select(accounts_t))}
    assert rows["hashed"].secret_enc is None and rows["hashed"].password_hash
    assert rows["sip"].password_hash is None and rows["sip"].secret_enc.startswith("v1$")
    assert b"s3cret".hex() not in rows["sip"].secret_enc
    # loading the same file again changes nothing (the same ciphertext stays)
    load.apply_provisioning(engine, spec(), cipher=cipher)
    with engine.connect() as conn:
        again = conn.execute(
            select(accounts_t.c.secret_enc).where(accounts_t.c.name == "sip")
        ).scalar_one()
    assert again == rows["sip"].secret_enc

    store = SqlStore(engine)
    auth = service(store, store, cipher)
    assert isinstance(decide(auth, call("sip", chap_secret=b"s3cret")).decision, Accept)
    assert decide(auth, call("sip", chap_secret=b"nope")).decision == Reject(
        RejectReason.BAD_PASSWORD
    )
    assert decide(auth, call("sip", password=b"s3cret")).failure is not None  # pap not allowed
    check_lockout(lambda request: decide(auth, request))
    # a second node on the same database sees the lockout
    other = service(SqlStore(make_engine(db_url)), store, cipher)
    assert decide(other, call("hashed", password=b"pw")).decision == Reject(RejectReason.LOCKED_OUT)


def test_no_key_refuses_chap_with_one_line_naming_the_setting(sqlite_url: str) -> None:
    with pytest.raises(UserError) as info:
        load.apply_provisioning(make_engine(sqlite_url), spec())
    assert "security.secrets_key_file" in str(info.value)
    assert "\n" not in str(info.value)


def test_rotate_key_reencrypts_in_one_transaction(db_url: str) -> None:
    engine = make_engine(db_url)
    old, new = AesGcmCipher(KEY), AesGcmCipher(NEW_KEY)
    load.apply_provisioning(engine, spec(), cipher=old)
    store = SqlStore(engine)
    auth = service(store, store, old)
    assert isinstance(decide(auth, call("sip", chap_secret=b"s3cret")).decision, Accept)
    assert rotate_key(engine, old, new) == 1
    with engine.connect() as conn:
        token = conn.execute(
            select(accounts_t.c.secret_enc).where(accounts_t.c.name == "sip")
        ).scalar_one()
    assert new.decrypt(token) == b"s3cret"
    # the running service has the old key still: the secret it decrypted keeps working
    assert isinstance(decide(auth, call("sip", chap_secret=b"s3cret")).decision, Accept)
    # a process that starts with the new key verifies too; with the old one it cannot
    assert isinstance(
        decide(service(store, store, new), call("sip", chap_secret=b"s3cret")).decision,
        Accept,
    )
    fresh_old = decide(service(store, store, old), call("sip", chap_secret=b"s3cret"))
    assert fresh_old.failure is not None and fresh_old.failure.reason == "unusable"
    # rotating from a key that does not decrypt the secrets changes nothing
    with pytest.raises(UserError, match="does not decrypt"):
        rotate_key(engine, old, AesGcmCipher(bytes(32)))
    with engine.connect() as conn:
        assert (
            conn.execute(
                select(accounts_t.c.secret_enc).where(accounts_t.c.name == "sip")
            ).scalar_one()
            == token
        )


@pytest.mark.redis
def test_lockout_in_redis_is_shared_and_folded_into_the_authorization(
    pg_url: str, redis_url: str
) -> None:
    engine = make_engine(pg_url)
    cipher = AesGcmCipher(KEY)
    load.apply_provisioning(engine, spec(), cipher=cipher)
    store = SqlStore(engine)
    catalog = CatalogCache(store, min_interval=0)

    def node() -> ResyncingLive:
        return ResyncingLive(
            redis.Redis.from_url(redis_url),
            store.live_client,
            clients=lambda: list(catalog.current.clients),
            marks=store,
        )

    first = node()
    first.rebuild()
    auth = service(store, first, cipher)
    check_lockout(lambda request: decide(auth, request))
    # the second node (its own connection) refuses the right password too
    second = service(store, node(), cipher)
    assert decide(second, call("hashed", password=b"pw")).decision == Reject(
        RejectReason.LOCKED_OUT
    )
    keys = redis.Redis.from_url(redis_url).keys("{c:*}:lock:*")
    assert len(keys) == 1

    # the daemon's pipelining client: the same script and the same keys
    async def daemon_side() -> tuple[bool, Any]:
        fast = AsyncAuthorizer(redis_url, lambda cid: first.load_client(cid, replace=False))
        try:
            prepared = auth.prepare(call("hashed", password=b"pw"))
            assert not isinstance(prepared, AuthOutcome)
            assert prepared.hold.lock_check
            decision = await fast.authorize(prepared.hold)
            client_id = prepared.client.id
            probe = LockoutProbe(client_id, prepared.account.id, datetime.now(UTC), False, 3, 60)
            return await fast.auth_lockout(probe), decision
        finally:
            await fast.close()

    locked, decision = asyncio.run(daemon_side())
    assert locked
    assert decision == Reject(RejectReason.LOCKED_OUT)
