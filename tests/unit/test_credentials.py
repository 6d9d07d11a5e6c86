"""Credentials: CHAP (RFC 2865 §5.3) and SIP Digest (RFC 2069/2617 vectors as draft-sterman and
RFC 5090 carry them), the secret store, the [security] key and the lockout outcome (pure)."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyrad import packet as rp

from billing_core.adapters.secretbox import (
    AesGcmCipher,
    KeySettingError,
    NoKeyCipher,
    load_key,
    parse_key,
)
from billing_core.config import ConfigError, parse_config, render_effective
from billing_core.domain.credentials import (
    Chap,
    Digest,
    chap_ok,
    chap_response,
    digest_ok,
    digest_response,
    parse_auth_methods,
    strip_realm,
)
from billing_core.domain.identification import AccountIndex
from billing_core.domain.model import Account, Client, RejectReason, hash_password
from billing_core.domain.money import ZERO
from billing_core.domain.policy import Accept, Decision, Reject
from billing_core.ports import Catalog, HoldRequest, LockoutProbe, SecretUnavailable
from billing_core.services.authorization import AuthorizationService, AuthOutcome, SecretCache
from radiusd import attributes
from radiusd.codec import Codec, load_dictionary

from ..authorize import decide

D: Any = load_dictionary()
CODEC = Codec(D)
SECRET = b"testing123"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def md5hex(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


# --- CHAP -----------------------------------------------------------------------------------


@pytest.mark.parametrize("with_challenge", [False, True])
def test_chap_matches_pyrads_verifier(with_challenge: bool) -> None:
    """RFC 2865 §5.3: MD5(ident + secret + challenge), the challenge being CHAP-Challenge or
    else the Request Authenticator; checked against pyrad's own VerifyChapPasswd."""
    pkt = rp.AuthPacket(dict=D, secret=SECRET, id=9)
    pkt.authenticator = bytes(range(40, 56))
    challenge = b"0123456789abcdef-chal" if with_challenge else pkt.authenticator
    ident = 0x2A
    response = chap_response(ident, b"s3cret", challenge)
    pkt.AddAttribute("User-Name", "acme")
    pkt.AddAttribute("CHAP-Password", bytes([ident]) + response)
    if with_challenge:
        pkt.AddAttribute("CHAP-Challenge", challenge)
    assert pkt.VerifyChapPasswd(b"s3cret")  # the independent twin
    request = CODEC.decode(pkt.RequestPacket(), SECRET)
    command = attributes.authorize_command(request, "nas|x", datetime.now(UTC))
    assert command.chap == Chap(ident, response, challenge)
    assert chap_ok(b"s3cret", command.chap)
    assert not chap_ok(b"s3cret!", command.chap)
    assert not chap_ok(b"s3cret", Chap(ident + 1, response, challenge))


# --- Digest: published vectors ---------------------------------------------------------------

VECTORS = [
    # RFC 2069 §2.4: no qop
    (
        b"CircleOfLife",
        Digest(
            response="1949323746fe6a43ef61f9606e7febea",
            username="Mufasa",
            realm="testrealm@host.com",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            method="GET",
            uri="/dir/index.html",
        ),
    ),
    # RFC 2617 §3.5: qop=auth
    (
        b"Circle Of Life",
        Digest(
            response="6629fae49393a05397450978507c4ef1",
            username="Mufasa",
            realm="testrealm@host.com",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            method="GET",
            uri="/dir/index.html",
            qop="auth",
            cnonce="0a4f113b",
            nonce_count="00000001",
        ),
    ),
    # draft-smith-sipping-auth-examples §3.2 (FreeRADIUS's Digest test), a SIP INVITE
    (
        b"zanzibar",
        Digest(
            response="89eb0059246c02b2f6ee02c7961d5ea3",
            username="bob",
            realm="biloxi.com",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            method="INVITE",
            uri="sip:bob@biloxi.com",
            qop="auth",
            cnonce="0a4f113b",
            nonce_count="00000001",
            algorithm="MD5",
        ),
    ),
]


@pytest.mark.parametrize(("password", "digest"), VECTORS)
def test_digest_published_vectors(password: bytes, digest: Digest) -> None:
    assert digest_response(password, digest) == digest.response
    assert digest_ok(password, digest)
    assert digest_ok(password, Digest(**{**_fields(digest), "response": digest.response.upper()}))
    assert not digest_ok(password + b"x", digest)
    assert not digest_ok(password, Digest(**{**_fields(digest), "nonce": "0" + digest.nonce}))


def _fields(digest: Digest) -> dict[str, str]:
    return {name: getattr(digest, name) for name in Digest.__slots__}


@pytest.mark.parametrize("algorithm", ["MD5-sess", "md5-sess"])
@pytest.mark.parametrize("qop", ["auth", "auth-int"])
def test_digest_md5_sess_and_auth_int_follow_rfc_2617(algorithm: str, qop: str) -> None:
    """RFC 2617 §3.2.2.2-3 written out literally: A1 for MD5-sess, A2 with H(entity-body)."""
    body_hash = md5hex("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n")
    base = Digest(
        response="",
        username="4420771234",
        realm="sip.example.net",
        nonce="5f1e0b7a000000013b9e1c5d2a7f4e60",
        method="INVITE",
        uri="sip:4420794600123@sip.example.net",
        qop=qop,
        algorithm=algorithm,
        cnonce="0a4f113b",
        nonce_count="00000002",
        body_digest=body_hash if qop == "auth-int" else "",
    )
    ha1 = md5hex(f"{md5hex('4420771234:sip.example.net:secret')}:{base.nonce}:0a4f113b")
    a2 = f"INVITE:{base.uri}" + (f":{body_hash}" if qop == "auth-int" else "")
    expected = md5hex(f"{ha1}:{base.nonce}:00000002:0a4f113b:{qop}:{md5hex(a2)}")
    assert digest_response(b"secret", base) == expected


@pytest.mark.parametrize(
    "changes",
    [
        {"algorithm": "SHA-256"},  # not offered
        {"qop": "auth-conf"},
        {"qop": "auth-int"},  # without the body's hash
        {"qop": "auth", "cnonce": ""},
        {"algorithm": "MD5-sess", "cnonce": "", "qop": ""},
    ],
)
def test_digest_that_cannot_be_computed_never_verifies(changes: dict[str, str]) -> None:
    password, digest = VECTORS[2]
    broken = Digest(**{**_fields(digest), **changes})
    assert digest_response(password, broken) is None
    assert not digest_ok(password, broken)


# --- Digest on the wire ------------------------------------------------------------------------


def attr(code: int, value: bytes) -> bytes:
    return bytes([code, len(value) + 2]) + value


def access_request(attrs: bytes, ident: int = 3) -> bytes:
    return struct.pack("!BBH", 1, ident, 20 + len(attrs)) + bytes(range(16)) + attrs


def sterman(digest: Digest, user_name: str) -> bytes:
    """As Kamailio's auth_radius (radcli) sends it: Digest-Response (206), then one
    Digest-Attributes (207) per sub-attribute."""
    subs = [
        (1, digest.realm),
        (2, digest.nonce),
        (3, digest.method),
        (4, digest.uri),
        (5, digest.qop),
        (6, digest.algorithm),
        (8, digest.cnonce),
        (9, digest.nonce_count),
        (10, digest.username),
    ]
    out = attr(1, user_name.encode()) + attr(206, digest.response.encode())
    for kind, value in subs:
        if value:
            out += attr(207, bytes([kind, len(value) + 2]) + value.encode())
    return out


def rfc5090(digest: Digest, user_name: str) -> bytes:
    pairs = [
        (104, digest.realm),
        (105, digest.nonce),
        (108, digest.method),
        (109, digest.uri),
        (110, digest.qop),
        (111, digest.algorithm),
        (113, digest.cnonce),
        (114, digest.nonce_count),
        (115, digest.username),
    ]
    out = attr(1, user_name.encode()) + attr(103, digest.response.encode())
    for kind, value in pairs:
        if value:
            out += attr(kind, value.encode())
    return out


@pytest.mark.parametrize("encode", [sterman, rfc5090])
def test_digest_attributes_decode_to_the_digest(encode: Any) -> None:
    password, digest = VECTORS[2]
    raw = access_request(encode(digest, "bob@biloxi.com"))
    request = CODEC.decode(raw, SECRET)
    command = attributes.authorize_command(request, "nas|x", datetime.now(UTC))
    assert command.digest == digest
    assert digest_ok(password, command.digest)
    # the digest user name, not User-Name (which carries @realm), identifies the account
    assert command.caller.user_name == "bob"
    assert "Digest-Response" not in request.dump()


def test_rfc5090_is_ignored_where_the_dialect_does_not_use_it() -> None:
    _password, digest = VECTORS[2]
    request = CODEC.decode(access_request(rfc5090(digest, "bob")), SECRET)
    assert attributes.digest_credentials(request, rfc5090=False) is None


def test_strip_realm_applies_to_the_digest_user_name() -> None:
    digest = Digest(**{**_fields(VECTORS[2][1]), "username": "bob@biloxi.com"})
    request = CODEC.decode(access_request(sterman(digest, "someone-else")), SECRET)
    stripped = attributes.authorize_command(request, "n", datetime.now(UTC), realm=True)
    kept = attributes.authorize_command(request, "n", datetime.now(UTC))
    assert stripped.caller.user_name == "bob"
    assert kept.caller.user_name == "bob@biloxi.com"
    assert strip_realm("alice") == "alice"
    assert strip_realm("@x") == "@x"


def test_broken_sub_attributes_are_skipped_not_fatal() -> None:
    attrs = attr(1, b"bob") + attr(206, b"00" * 16) + attr(207, b"\x01\x09short") + attr(207, b"")
    request = CODEC.decode(access_request(attrs), SECRET)
    digest = attributes.digest_credentials(request)
    assert digest is not None and digest.realm == "" and digest.response == "00" * 16


# --- methods ---------------------------------------------------------------------------------


def test_parse_auth_methods() -> None:
    assert parse_auth_methods("pap, CHAP") == {"pap", "chap"}
    assert parse_auth_methods(["digest"]) == {"digest"}
    for bad in ("", "pap,mschap", ["pap", 3], 7):
        with pytest.raises(ValueError, match="pap"):
            parse_auth_methods(bad)


# --- secrets at rest ---------------------------------------------------------------------------


def test_aes_gcm_round_trip_with_a_random_nonce_per_secret() -> None:
    cipher = AesGcmCipher(KEY)
    first, second = cipher.encrypt(b"s3cret"), cipher.encrypt(b"s3cret")
    assert first != second  # a fresh nonce each time
    assert "s3cret" not in first and b"s3cret".hex() not in first
    assert cipher.decrypt(first) == cipher.decrypt(second) == b"s3cret"
    with pytest.raises(SecretUnavailable):
        AesGcmCipher(OTHER_KEY).decrypt(first)
    tampered = first[:-2] + ("00" if first[-2:] != "00" else "11")
    with pytest.raises(SecretUnavailable):
        cipher.decrypt(tampered)
    for junk in ("", "v1$zz$00", "v2$" + first[3:]):
        with pytest.raises(SecretUnavailable):
            cipher.decrypt(junk)
    with pytest.raises(SecretUnavailable):
        NoKeyCipher().decrypt(first)


def test_key_parsing_and_loading(tmp_path: Path) -> None:
    text = KEY.hex()
    assert parse_key(f"  {text.upper()}\n", "k") == KEY
    for bad in ("", text[:-1], text + "0", "g" * 64, text[:32]):
        with pytest.raises(KeySettingError, match="64 hex digits"):
            parse_key(bad, "k")
    path = tmp_path / "key"
    path.write_text(text + "\n")
    path.chmod(0o600)
    assert load_key(str(path), "") == KEY
    path.chmod(0o640)
    with pytest.raises(KeySettingError, match="mode 0600"):
        load_key(str(path), "")
    assert load_key("", "MY_KEY", {"MY_KEY": text}) == KEY
    with pytest.raises(KeySettingError, match="not set"):
        load_key("", "MY_KEY", {})
    with pytest.raises(KeySettingError, match="only one"):
        load_key(str(path), "MY_KEY", {"MY_KEY": text})
    assert load_key("", "", {}) is None


def test_security_config_is_one_line_errors_and_a_masked_key(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("not a key")
    path.chmod(0o600)
    document = f'[security]\nsecrets_key_file = "{path}"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(document, "t.toml", {})
    assert str(info.value).startswith("security.secrets_key_file:")
    assert "\n" not in str(info.value) and "not a key" not in str(info.value)
    config = parse_config(
        '[security]\nsecrets_key_env = "K"\nmax_auth_failures = 3\n', "t", {"K": KEY.hex()}
    )
    assert config.security.secrets_key is not None
    assert config.security.secrets_key.reveal() == KEY
    assert KEY.hex() not in repr(config)
    shown = render_effective(config)  # check-config
    assert KEY.hex() not in shown and 'secrets_key_env = "K"' in shown
    assert config.security.max_auth_failures == 3
    assert config.security.auth_lockout_seconds == 60
    with pytest.raises(ConfigError, match=r"security\.max_auth_failures"):
        parse_config("[security]\nmax_auth_failures = 0\n", "t", {})
    with pytest.raises(ConfigError, match=r"security\.nope: unknown key"):
        parse_config("[security]\nnope = 1\n", "t", {})


# --- the service: methods, storage, lockout ---------------------------------------------------

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
CLIENT = Client(
    id=1,
    name="Acme",
    status="active",
    currency="USD",
    locale=None,
    postpaid=True,
    credit=Decimal(0),
    rate_table_id=None,
    capacity=None,
    low_balance_threshold=None,
    low_balance_capacity=None,
    bill_events_by="disconnect",
)


class FakeLive:
    """The live state's two answers that matter here: the lock and the authorization."""

    def __init__(self) -> None:
        self.locked: set[int] = set()
        self.failures: dict[int, int] = {}
        self.probes: list[LockoutProbe] = []
        self.holds: list[HoldRequest] = []

    def authorize(self, request: HoldRequest) -> Decision:
        self.holds.append(request)
        if request.lock_check and request.account_id in self.locked:
            return Reject(RejectReason.LOCKED_OUT)
        return Accept(None, ZERO, None)

    def auth_lockout(self, probe: LockoutProbe) -> bool:
        self.probes.append(probe)
        if probe.account_id in self.locked:
            return True
        if probe.failed:
            count = self.failures[probe.account_id] = self.failures.get(probe.account_id, 0) + 1
            if count >= probe.max_failures:
                self.locked.add(probe.account_id)
        return False

    def find_holds(self, keys: Sequence[Any]) -> list[Any]:
        return [None] * len(keys)

    def apply(self, effects: Sequence[Any], seqs: Any = None) -> None:
        pass

    def view(self, client_ids: Sequence[int], now: datetime) -> dict[int, Any]:
        return {}

    def reachable(self) -> bool:
        return True


def login(account_id: int, name: str, **fields: Any) -> Account:
    return Account(
        id=account_id,
        client_id=1,
        name=name,
        ident="login",
        value=name,
        tech_prefix=None,
        password_hash=fields.pop("password_hash", None),
        **fields,
    )


CIPHER = AesGcmCipher(KEY)
ACCOUNTS = [
    login(1, "pap-hash", password_hash=hash_password("pw")),
    login(2, "chap", auth_methods=frozenset({"chap"}), secret_enc=CIPHER.encrypt(b"pw")),
    login(
        3,
        "all",
        auth_methods=frozenset({"pap", "chap", "digest"}),
        secret_enc=CIPHER.encrypt(b"pw"),
    ),
    login(4, "open"),
    login(5, "pap-enc", secret_enc=CIPHER.encrypt(b"pw")),
]


def service(cipher: Any = CIPHER, live: FakeLive | None = None) -> AuthorizationService:
    catalog = Catalog(1, {1: CLIENT}, AccountIndex(ACCOUNTS), {}, None)
    return AuthorizationService(
        lambda: catalog,
        live or FakeLive(),
        max_call_length=3600,
        auth_hold_seconds=60,
        secrets=SecretCache(cipher),
        max_auth_failures=3,
        auth_lockout_seconds=60,
    )


def call(user: str, **credentials: Any) -> Any:
    from billing_core.domain.identification import CallerFacts
    from billing_core.services.authorization import AuthorizeCall

    return AuthorizeCall(
        nas_key="nas|1",
        caller=CallerFacts(user_name=user),
        password=credentials.get("password"),
        chap=credentials.get("chap"),
        identifiers=(),
        arrived=NOW,
        digest=credentials.get("digest"),
    )


def digest_for(user: str, password: bytes) -> Digest:
    base = Digest(
        response="",
        username=user,
        realm="sip.example.net",
        nonce="abc",
        method="INVITE",
        uri="sip:1@sip.example.net",
    )
    return Digest(**{**_fields(base), "response": digest_response(password, base) or ""})


CHALLENGE = bytes(16)
GOOD_CHAP = Chap(1, chap_response(1, b"pw", CHALLENGE), CHALLENGE)


@pytest.mark.parametrize(
    ("user", "credentials", "failure"),
    [
        ("pap-hash", {"password": b"pw"}, None),
        ("pap-hash", {"password": b"nope"}, ("pap", "wrong")),
        ("pap-hash", {"chap": GOOD_CHAP}, ("chap", "not_allowed")),
        ("pap-hash", {}, ("none", "missing")),
        ("chap", {"chap": GOOD_CHAP}, None),
        ("chap", {"password": b"pw"}, ("pap", "not_allowed")),
        ("chap", {"chap": Chap(1, GOOD_CHAP.response, bytes(range(16)))}, ("chap", "wrong")),
        ("all", {"password": b"pw"}, None),
        ("all", {"chap": GOOD_CHAP}, None),
        ("all", {"digest": digest_for("all", b"pw")}, None),
        ("all", {"digest": digest_for("all", b"pw2")}, ("digest", "wrong")),
        ("pap-enc", {"password": b"pw"}, None),
        ("open", {}, None),  # no password: identified by name alone
        ("open", {"password": b"anything"}, None),
    ],
)
def test_each_request_is_checked_by_the_method_its_credentials_use(
    user: str, credentials: dict[str, Any], failure: tuple[str, str] | None
) -> None:
    outcome = decide(service(), call(user, **credentials))
    if failure is None:
        assert isinstance(outcome.decision, Accept), outcome
        assert outcome.failure is None
    else:
        assert outcome.decision == Reject(RejectReason.BAD_PASSWORD)
        assert outcome.failure is not None
        assert (outcome.failure.method, outcome.failure.reason) == failure


def test_a_secret_the_server_cannot_decrypt_is_refused_and_a_new_key_heals_it() -> None:
    auth = service(cipher=AesGcmCipher(OTHER_KEY))
    outcome = decide(auth, call("chap", chap=GOOD_CHAP))
    assert outcome.failure is not None and outcome.failure.reason == "unusable"
    assert decide(service(cipher=NoKeyCipher()), call("chap", chap=GOOD_CHAP)).failure
    auth.secrets.set_cipher(CIPHER)  # SIGHUP with the right key
    assert isinstance(decide(auth, call("chap", chap=GOOD_CHAP)).decision, Accept)


def test_the_decrypted_secret_outlives_a_rotation_until_the_secret_changes() -> None:
    """After ``rotate-key`` the catalog carries tokens under a key the daemon has not got yet:
    the secret in memory (same version) still verifies; a changed secret needs the key."""
    cache = SecretCache(CIPHER)
    before = ACCOUNTS[1]
    assert cache.secret(before) == b"pw"
    new = AesGcmCipher(OTHER_KEY)
    rotated = Account(**{**_account_fields(before), "secret_enc": new.encrypt(b"pw")})
    assert cache.secret(rotated) == b"pw"
    changed = Account(
        **{**_account_fields(before), "secret_enc": new.encrypt(b"pw2"), "secret_version": 1}
    )
    assert cache.secret(changed) is None
    cache.set_cipher(new)
    assert cache.secret(changed) == b"pw2"


def _account_fields(account: Account) -> dict[str, Any]:
    return {name: getattr(account, name) for name in Account.__slots__}


def test_guessing_locks_the_account_and_only_that_account() -> None:
    live = FakeLive()
    auth = service(live=live)
    for _ in range(3):
        outcome = decide(auth, call("pap-hash", password=b"guess"))
        assert outcome.failure is not None and outcome.failure.reason == "wrong"
    assert all(p.failed and p.account_id == 1 for p in live.probes)
    # locked: refused as such, even with the right password, without a check
    right = decide(auth, call("pap-hash", password=b"pw"))
    assert right.decision == Reject(RejectReason.LOCKED_OUT)
    assert right.failure is not None and right.failure.reason == "locked_out"
    wrong = decide(auth, call("pap-hash", password=b"guess"))
    assert wrong.decision == Reject(RejectReason.LOCKED_OUT)
    # other accounts are unaffected, and a correct caller costs no lockout question
    probes = len(live.probes)
    assert isinstance(decide(auth, call("all", password=b"pw")).decision, Accept)
    assert len(live.probes) == probes
    assert live.holds[-1].lock_check


def test_a_verified_reject_before_the_live_state_still_says_locked() -> None:
    live = FakeLive()
    auth = service(live=live)
    routed = call("pap-hash", password=b"pw")
    routed = type(routed)(**{**_call_fields(routed), "caller": _called(routed.caller)})
    prepared = auth.prepare(routed)
    assert isinstance(prepared, AuthOutcome)
    assert prepared.decision == Reject(RejectReason.NO_RATE)  # the client has no rate table
    assert prepared.lockout is not None and not prepared.lockout.failed
    assert decide(auth, routed).decision == Reject(RejectReason.NO_RATE)
    live.locked.add(1)
    assert decide(auth, routed).decision == Reject(RejectReason.LOCKED_OUT)
    # an account without a password is never asked about
    open_call = type(routed)(**{**_call_fields(routed), "caller": _called(call("open").caller)})
    prepared = auth.prepare(open_call)
    assert isinstance(prepared, AuthOutcome) and prepared.lockout is None


def _called(caller: Any) -> Any:
    from dataclasses import replace

    return replace(caller, called="15550001111")


def _call_fields(request: Any) -> dict[str, Any]:
    return {name: getattr(request, name) for name in type(request).__slots__}
