"""Credentials through the real daemon: PAP and CHAP from radclient, SIP Digest as Kamailio
(draft-sterman) and RFC 5090 NASes send it, the lockout, a wrong key, and a key rotation
under load with no request lost."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_core.domain.credentials import Digest, digest_response

from .conftest import SECRET, Daemon, make_daemon

KEY = bytes(range(32))
NEW_KEY = bytes(range(50, 82))

PROVISIONING = """
clients:
  - name: Acme
    postpaid: true
    accounts:
      - {name: acme, ident: login, value: acme, password: s3cret}
      - {name: chapper, ident: login, value: chapper, password: ch4p, auth_methods: [pap, chap]}
      - {name: sip, ident: login, value: "4420771234", password: secret, auth_methods: [digest]}
      - {name: victim, ident: login, value: victim, password: right}
      - {name: open, ident: login, value: open}
"""


def key_file(path: Path, key: bytes) -> Path:
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    return path


def security(key_path: Path) -> str:
    return (
        f'\n[security]\nsecrets_key_file = "{key_path}"\nmax_auth_failures = 3\n'
        "auth_lockout_seconds = 60\n"
    )


@pytest.fixture(params=["sqlite", "postgresql+redis"])
def keyed(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """A daemon with a server key, provisioned, on the embedded default and on Redis (the
    two homes of the lockout counts)."""
    if request.param == "sqlite":
        backend = (str(request.getfixturevalue("sqlite_url")), "")
    else:
        backend = (
            str(request.getfixturevalue("pg_url")),
            str(request.getfixturevalue("redis_url")),
        )
    daemon = make_daemon(tmp_path, backend, extra=security(key_file(tmp_path / "k", KEY)))
    daemon.billingctl("db", "upgrade")
    (tmp_path / "p.yaml").write_text(PROVISIONING)
    daemon.billingctl("load", str(tmp_path / "p.yaml"))
    yield daemon
    if daemon.process is not None:
        daemon.process.kill()
        daemon.process.wait()


# --- a raw RADIUS client (Digest attributes are not in radclient's dictionaries) ------------


def attr(code: int, value: bytes) -> bytes:
    return bytes([code, len(value) + 2]) + value


class Nas:
    def __init__(self, daemon: Daemon) -> None:
        self.port = daemon.auth_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.ident = 0

    def ask(
        self, attrs: bytes, authenticator: bytes, *, timeout: float = 2.0, tries: int = 3
    ) -> tuple[int, int | None, str] | None:
        """(reply code, h323-return-code, Reply-Message) or None when never answered."""
        self.ident = (self.ident + 1) % 256
        packet = struct.pack("!BBH", 1, self.ident, 20 + len(attrs)) + authenticator + attrs
        for _ in range(tries):
            self.sock.sendto(packet, ("127.0.0.1", self.port))
            self.sock.settimeout(timeout)
            try:
                while True:
                    data = self.sock.recv(4096)
                    if data[1] == self.ident:
                        break
            except TimeoutError:
                continue
            expected = hashlib.md5(  # noqa: S324 - the RADIUS Response Authenticator
                data[:4] + authenticator + data[20:] + SECRET.encode()
            ).digest()
            assert data[4:20] == expected
            return (data[0], *_reply_fields(data))
        return None

    def close(self) -> None:
        self.sock.close()


def _reply_fields(data: bytes) -> tuple[int | None, str]:
    code, message, pos = None, "", 20
    while pos < len(data):
        kind, size = data[pos], data[pos + 1]
        value = data[pos + 2 : pos + size]
        if kind == 18:
            message = value.decode()
        elif kind == 26 and value[:4] == b"\x00\x00\x00\x09" and value[4] == 103:
            code = int(value[6:].decode().split("=")[1])
        pos += size
    return code, message


def chap_attrs(user: str, password: bytes, authenticator: bytes, ident: int = 7) -> bytes:
    response = hashlib.md5(bytes([ident]) + password + authenticator).digest()  # noqa: S324
    return attr(1, user.encode()) + attr(3, bytes([ident]) + response)


def sip_digest(password: bytes, *, qop: str = "auth") -> Digest:
    base = Digest(
        response="",
        username="4420771234",
        realm="sip.example.net",
        nonce=os.urandom(8).hex(),
        method="INVITE",
        uri="sip:4420794600123@sip.example.net",
        qop=qop,
        algorithm="MD5",
        cnonce="0a4f113b" if qop else "",
        nonce_count="00000001" if qop else "",
    )
    return Digest(**{**{n: getattr(base, n) for n in Digest.__slots__},
                     "response": digest_response(password, base) or ""})  # fmt: skip


def sterman_attrs(digest: Digest) -> bytes:
    """As Kamailio auth_radius sends it: User-Name with @realm, 206 and one 207 each."""
    subs = [(1, digest.realm), (2, digest.nonce), (3, digest.method), (4, digest.uri),
            (5, digest.qop), (6, digest.algorithm), (8, digest.cnonce),
            (9, digest.nonce_count), (10, digest.username)]  # fmt: skip
    out = attr(1, f"{digest.username}@{digest.realm}".encode())
    out += attr(206, digest.response.encode())
    for kind, value in subs:
        if value:
            out += attr(207, bytes([kind, len(value) + 2]) + value.encode())
    return out + attr(6, struct.pack("!I", 15))  # Service-Type = SIP-Session


def rfc5090_attrs(digest: Digest) -> bytes:
    pairs = [(104, digest.realm), (105, digest.nonce), (108, digest.method), (109, digest.uri),
             (110, digest.qop), (111, digest.algorithm), (113, digest.cnonce),
             (114, digest.nonce_count), (115, digest.username)]  # fmt: skip
    out = attr(1, digest.username.encode()) + attr(103, digest.response.encode())
    for kind, value in pairs:
        if value:
            out += attr(kind, value.encode())
    return out


def metric(daemon: Daemon, method: str, reason: str) -> float:
    _status, body = daemon.http("/metrics")
    label = f'radiusd_auth_failures_total{{method="{method}",reason="{reason}"}}'
    for line in body.splitlines():
        if line.startswith(label):
            return float(line.split()[-1])
    return 0.0


# --- the tests ---------------------------------------------------------------------------------


def test_pap_chap_digest_and_lockout(keyed: Daemon) -> None:
    daemon = keyed
    daemon.start()

    def radclient(user: str, **creds: str) -> tuple[str, str, str]:
        attributes = {"User-Name": f'"{user}"'}
        attributes.update({k.replace("_", "-"): f'"{v}"' for k, v in creds.items()})
        reply = daemon.radclient("auth", attributes)
        assert reply is not None
        code = reply.cisco("h323-return-code") if "h323-return-code" in reply.attributes else ""
        message = reply.one("Reply-Message") if "Reply-Message" in reply.attributes else ""
        return reply.code, code, message

    # PAP on a hash; CHAP refused for it (PAP only); PAP and CHAP on an encrypted secret
    assert radclient("acme", User_Password="s3cret")[:2] == ("Access-Accept", "0")
    assert radclient("acme", User_Password="wrong")[:2] == ("Access-Reject", "2")
    assert radclient("acme", CHAP_Password="s3cret")[:2] == ("Access-Reject", "2")
    assert radclient("chapper", CHAP_Password="ch4p")[:2] == ("Access-Accept", "0")
    assert radclient("chapper", CHAP_Password="nope")[:2] == ("Access-Reject", "2")
    assert radclient("chapper", User_Password="ch4p")[:2] == ("Access-Accept", "0")
    assert radclient("sip", User_Password="secret")[:2] == ("Access-Reject", "1")  # by name
    assert radclient("4420771234", User_Password="secret")[:2] == ("Access-Reject", "2")
    # no password: identified by name alone, as before
    assert radclient("open")[:2] == ("Access-Accept", "0")

    # SIP Digest, raw: draft-sterman (Kamailio) and RFC 5090; auth and no qop
    nas = Nas(daemon)
    try:
        for digest in (sip_digest(b"secret"), sip_digest(b"secret", qop="")):
            reply = nas.ask(sterman_attrs(digest), os.urandom(16))
            assert reply is not None and reply[:2] == (2, 0), reply
        assert nas.ask(rfc5090_attrs(sip_digest(b"secret")), os.urandom(16)) == (2, 0, "")
        reply = nas.ask(sterman_attrs(sip_digest(b"Secret")), os.urandom(16))
        assert reply is not None and reply[:2] == (3, 2)
        # CHAP with a CHAP-Challenge attribute, raw
        challenge = os.urandom(16)
        response = hashlib.md5(b"\x09" + b"ch4p" + challenge).digest()  # noqa: S324
        attrs = attr(1, b"chapper") + attr(3, b"\x09" + response) + attr(60, challenge)
        assert nas.ask(attrs, os.urandom(16)) == (2, 0, "")
    finally:
        nas.close()

    # guessing: 3 wrong passwords lock the account; the right one is then refused as locked
    for _ in range(3):
        assert radclient("victim", User_Password="guess")[:2] == ("Access-Reject", "2")
    code, return_code, message = radclient("victim", User_Password="right")
    assert (code, return_code) == ("Access-Reject", "2")
    assert "locked" in message
    assert radclient("acme", User_Password="s3cret")[:2] == ("Access-Accept", "0")
    assert metric(daemon, "pap", "wrong") == 4
    assert metric(daemon, "pap", "locked_out") == 1
    assert metric(daemon, "chap", "not_allowed") == 1
    assert metric(daemon, "digest", "wrong") == 1
    # no password or secret anywhere in the log
    log = daemon.log()
    for secret in ("s3cret", "ch4p", "right", KEY.hex()):
        assert secret not in log
    assert daemon.stop() == 0


@pytest.fixture
def reaper() -> Iterator[list[Daemon]]:
    """Daemons a test made itself, killed if it failed before stopping them."""
    made: list[Daemon] = []
    yield made
    for daemon in made:
        if daemon.process is not None:
            daemon.process.kill()
            daemon.process.wait()


def test_a_wrong_key_rejects_code_2_logs_and_the_daemon_still_starts(
    tmp_path: Path, sqlite_url: str, reaper: list[Daemon]
) -> None:
    right = key_file(tmp_path / "right", KEY)
    daemon = make_daemon(tmp_path, (sqlite_url, ""), extra=security(right))
    reaper.append(daemon)
    daemon.billingctl("db", "upgrade")
    (tmp_path / "p.yaml").write_text(PROVISIONING)
    daemon.billingctl("load", str(tmp_path / "p.yaml"))
    key_file(right, NEW_KEY)  # the file now holds another key
    daemon.start()
    try:
        reply = daemon.radclient("auth", {"User-Name": '"chapper"', "CHAP-Password": '"ch4p"'})
        assert reply is not None and reply.code == "Access-Reject"
        assert reply.cisco("h323-return-code") == "2"
        [logged] = daemon.log_events("account_secret_unusable")
        assert logged["account"] == "chapper"
        assert metric(daemon, "chap", "unusable") == 1
        # accounts that need no key are served as usual
        reply = daemon.radclient("auth", {"User-Name": '"acme"', "User-Password": '"s3cret"'})
        assert reply is not None and reply.code == "Access-Accept"
    finally:
        assert daemon.stop() == 0


def test_key_rotation_under_load_loses_no_request(
    tmp_path: Path, sqlite_url: str, reaper: list[Daemon]
) -> None:
    configured = key_file(tmp_path / "server.key", KEY)
    daemon = make_daemon(tmp_path, (sqlite_url, ""), extra=security(configured))
    reaper.append(daemon)
    daemon.billingctl("db", "upgrade")
    (tmp_path / "p.yaml").write_text(PROVISIONING)
    daemon.billingctl("load", str(tmp_path / "p.yaml"))
    daemon.start()
    assert daemon.process is not None

    over = threading.Event()
    results: list[tuple[int, int | None, str] | None] = []

    def stream() -> None:
        nas = Nas(daemon)
        try:
            while not over.is_set():
                authenticator = os.urandom(16)
                if len(results) % 2:
                    attrs = chap_attrs("chapper", b"ch4p", authenticator)
                else:
                    attrs = sterman_attrs(sip_digest(b"secret"))
                results.append(nas.ask(attrs, authenticator, timeout=1.0))
                time.sleep(0.003)
        finally:
            nas.close()

    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        time.sleep(0.5)
        new = key_file(tmp_path / "new.key", NEW_KEY)
        out = daemon.billingctl("security", "rotate-key", "--new-key-file", str(new)).stdout
        assert out.startswith("2 account secrets re-encrypted")
        time.sleep(1.5)  # the daemon reloads its catalog (new tokens) before it has the key
        os.replace(new, configured)  # the configured file now holds the new key
        reloads = len(daemon.log_events("nas_reloaded"))
        daemon.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while len(daemon.log_events("nas_reloaded")) == reloads and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(daemon.log_events("nas_reloaded")) > reloads
        # a secret set under the new key is verified with it
        daemon.billingctl("accounts", "edit", "victim", "--auth-methods", "chap", "--password",
                          "n3w")  # fmt: skip
        time.sleep(1.5)
        reply = daemon.radclient("auth", {"User-Name": '"victim"', "CHAP-Password": '"n3w"'})
        assert reply is not None and reply.code == "Access-Accept"
        time.sleep(0.3)
    finally:
        over.set()
        streamer.join()
    answered = [r for r in results if r is not None]
    assert len(results) > 50
    assert len(answered) == len(results)  # none lost
    # every Digest and every CHAP was accepted, before, during and after the rotation
    assert all(r is not None and r[:2] == (2, 0) for r in results), results
    assert daemon.log_events("account_secret_unusable") == []
    assert daemon.stop() == 0
