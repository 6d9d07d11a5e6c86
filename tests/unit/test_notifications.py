"""The pure parts: when a notification fires or re-arms, its message, the Disconnect-Request
packet and its answers, the [smtp] and coa_port settings."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from decimal import Decimal
from pathlib import Path

import pytest

from billing_core.config import ConfigError, NasConfig, Secret, parse_config
from billing_core.domain.notifications import (
    LowBalance,
    NotifyState,
    Transition,
    message,
    transition,
)
from billing_core.ports import WantedDisconnect
from radiusd.disconnect import (
    DisconnectCall,
    build_request,
    call_of,
    destination,
    parse_answer,
)

D = Decimal
ARMED = NotifyState(True, None)


@pytest.mark.parametrize(
    ("state", "available", "funds", "expected"),
    [
        (ARMED, "10", "10", Transition.NONE),
        (ARMED, "10", "5", Transition.NONE),  # at the threshold is not below it
        (ARMED, "10", "4.99", Transition.FIRE),  # a hold took the funds below
        (ARMED, "3", "3", Transition.FIRE),
        (NotifyState(False, D("10")), "10", "10", Transition.NONE),  # a hold released
        (NotifyState(False, D("10")), "9", "9", Transition.LOWER),  # charged while fired
        (NotifyState(False, D("3")), "4", "4", Transition.NONE),  # risen, still below
        (NotifyState(False, D("3")), "5", "1", Transition.REARM),  # money came in
        (NotifyState(False, D("9")), "9", "9", Transition.NONE),
        (NotifyState(False, None), "6", "6", Transition.REARM),
        (NotifyState(False, None), "1", "1", Transition.LOWER),
    ],
)
def test_transition(state: NotifyState, available: str, funds: str, expected: Transition) -> None:
    assert transition(state, D("5"), D(available), D(funds)) is expected


def test_message_names_the_figures() -> None:
    low = LowBalance("Acme", "EUR", D("1.5"), D("2"), D("0.25"), D("5"))
    subject, body = message(low)
    assert subject == "Low balance: Acme (3.25 EUR)"
    for line in ("Balance:            1.50 EUR", "Credit:             2.00 EUR"):
        assert line in body
    assert "Notification below: 5.00 EUR" in body


SECRET = b"s3cret"
CALL = DisconnectCall("leg-1", "acme", "10.0.0.9", "h323-conf-id=ABC DEF", "xyz@10.0.0.9")


def _answer(request: bytes, code: int, body: bytes = b"", secret: bytes = SECRET) -> bytes:
    header = struct.pack("!BBH", code, request[1], 20 + len(body))
    auth = hashlib.md5(header + request[4:20] + body + secret, usedforsecurity=False).digest()
    return header + auth + body


def test_request_authenticators_and_attributes() -> None:
    packet = build_request(CALL, 7, SECRET)
    assert packet[:2] == bytes([40, 7]) and struct.unpack("!H", packet[2:4])[0] == len(packet)
    zero = packet[:4] + bytes(16) + packet[20:]
    assert hashlib.md5(zero + SECRET, usedforsecurity=False).digest() == packet[4:20]
    ma = packet.index(bytes([80, 18])) + 2
    blank = zero[:ma] + bytes(16) + zero[ma + 16 :]
    assert hmac.new(SECRET, blank, hashlib.md5).digest() == packet[ma : ma + 16]
    assert b"\x01\x06acme" in packet
    assert bytes([44, 7]) + b"leg-1" in packet
    assert bytes([4, 6]) + ipaddress.IPv4Address("10.0.0.9").packed in packet
    assert b"h323-conf-id=ABC DEF" in packet and b"h323-conf-id=h323" not in packet
    assert b"call-id=xyz@10.0.0.9" in packet


def test_answers() -> None:
    request = build_request(CALL, 200, SECRET)
    ack = parse_answer(_answer(request, 41), request, SECRET)
    assert ack is not None and (ack.result, ack.error_cause) == ("ack", None)
    nak = parse_answer(_answer(request, 42, struct.pack("!BBI", 101, 6, 503)), request, SECRET)
    assert nak is not None and (nak.result, nak.error_cause) == ("nak", 503)
    assert parse_answer(_answer(request, 41, secret=b"other"), request, SECRET) is None
    wrong_id = bytearray(_answer(request, 41))
    wrong_id[1] ^= 1
    assert parse_answer(bytes(wrong_id), request, SECRET) is None
    assert parse_answer(_answer(request, 2), request, SECRET) is None  # not an answer code
    assert parse_answer(b"\x29", request, SECRET) is None
    broken = _answer(request, 41, b"\x65\x01")
    assert parse_answer(broken, request, SECRET) is None


def test_call_identifiers_come_from_its_last_accounting() -> None:
    wanted = WantedDisconnect(
        1,
        "client_stopped",
        5,
        3,
        "gw|10.0.0.9",
        "leg-1",
        "abc",
        {"User-Name": ["acme"], "Cisco-AVPair": ["x=1", "call-id=c1"]},
    )
    call = call_of(wanted)
    assert call == DisconnectCall("leg-1", "acme", "10.0.0.9", "abc", "c1")
    nas = NasConfig(ipaddress.ip_network("10.0.0.0/24"), Secret("x"), coa_port=3799)
    assert destination(nas, call) == "10.0.0.9"
    assert destination(nas, DisconnectCall("s", nas_ip="10.9.0.1")) is None
    one = NasConfig(ipaddress.ip_network("192.0.2.1/32"), Secret("x"), coa_port=3799)
    assert destination(one, call) == "192.0.2.1"


NAS = '[[nas]]\naddress = "127.0.0.1"\nsecret = "x"\n'


def test_smtp_and_coa_port_settings(tmp_path: Path) -> None:
    config = parse_config(
        NAS + 'coa_port = 3799\n[smtp]\nhost = "mx"\nfrom = "b@c.example"\nport = 587\n'
        'starttls = true\nusername = "u"\npassword_env = "PW"\n',
        "t",
        {"PW": "hunter2"},
    )
    assert config.nas[0].coa_port == 3799
    assert (config.smtp.host, config.smtp.port, config.smtp.starttls) == ("mx", 587, True)
    assert config.smtp.password.reveal() == "hunter2"
    assert "hunter2" not in repr(config)
    assert parse_config(NAS, "t", {}).smtp.host == ""
    for text, error in (
        ('[smtp]\nhost = "mx"\n', "smtp.from: required when smtp.host is set"),
        ("[smtp]\nport = 0\n", "smtp.port: must be at least 1"),
        ('[smtp]\nhost = "mx"\nfrom = "a@b"\nrelay = 1\n', "smtp.relay: unknown key"),
        ('[smtp]\npassword_env = "NOPE"\nusername = "u"\n', "smtp.password_env: environment"),
        (NAS + "coa_port = 70000\n", "nas[0].coa_port: must be at most 65535"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(text, "t", {})
        assert str(caught.value).startswith(error), caught.value
    secret = tmp_path / "pw"
    secret.write_text("pw\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="must not be readable by group or others"):
        parse_config(f'[smtp]\nusername = "u"\npassword_file = "{secret}"\n', "t", {})
    secret.chmod(0o600)
    read = parse_config(f'[smtp]\nusername = "u"\npassword_file = "{secret}"\n', "t", {})
    assert read.smtp.password.reveal() == "pw"
