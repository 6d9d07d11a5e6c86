"""The RADIUS dictionaries shipped in ``dictionaries/`` load cleanly with pyrad 2.6.0."""

from __future__ import annotations

import logging
import pathlib
import struct

import pytest
from pyrad import packet
from pyrad.dictionary import Dictionary

DICTIONARY = pathlib.Path(__file__).resolve().parents[2] / "dictionaries" / "dictionary"

# Every attribute name used in the exchanges of shared/reference/dialects.json, in order of
# first use. Copied here because the test must not depend on where ../shared is.
DIALECT_ATTRIBUTES = (
    "User-Name",
    "User-Password",
    "Calling-Station-Id",
    "Called-Station-Id",
    "h323-conf-id",
    "Cisco-NAS-Port",
    "NAS-Port",
    "NAS-IP-Address",
    "NAS-Port-Type",
    "Acct-Session-Id",
    "h323-setup-time",
    "h323-gw-id",
    "h323-call-origin",
    "h323-call-type",
    "Cisco-AVPair",
    "Acct-Status-Type",
    "Service-Type",
    "Event-Timestamp",
    "Acct-Delay-Time",
    "h323-remote-address",
    "h323-connect-time",
    "h323-disconnect-time",
    "h323-disconnect-cause",
    "h323-voice-quality",
    "Acct-Session-Time",
    "Acct-Input-Octets",
    "Acct-Output-Octets",
    "Acct-Input-Packets",
    "Acct-Output-Packets",
    "Acct-Terminate-Cause",
    "Digest-Realm",
    "Digest-Nonce",
    "Digest-Method",
    "Digest-URI",
    "Digest-Algorithm",
    "Digest-User-Name",
    "Digest-Response",
    "Quintum-h323-conf-id",
    "Quintum-AVPair",
    "Quintum-NAS-Port",
    "Quintum-h323-gw-id",
    "Quintum-h323-call-origin",
    "Quintum-h323-call-type",
    "Quintum-h323-setup-time",
    "Quintum-h323-connect-time",
    "Quintum-h323-disconnect-time",
    "Quintum-h323-disconnect-cause",
    "Digest-QOP",
    "Digest-Nonce-Count",
    "Digest-CNonce",
    "Sip-Uri-User",
    "Sip-Response-Code",
    "Sip-Method",
    "Sip-From-Tag",
    "Sip-To-Tag",
    "Freeswitch-Src",
    "Freeswitch-CLID",
    "Freeswitch-Dst",
    "Freeswitch-Dialplan",
    "Framed-IP-Address",
    "Freeswitch-Context",
    "Freeswitch-Ani",
    "Freeswitch-Source",
    "Freeswitch-Callstartdate",
    "Freeswitch-Hangupcause",
    "Freeswitch-Lastapp",
    "Freeswitch-Billusec",
    "Freeswitch-Callanswerdate",
    "Freeswitch-Callenddate",
)

# Attributes of the dialects that are deliberately not in our dictionary: Quintum vendor 6618,
# FreeSWITCH vendor 27880, Kamailio/OpenSER Sip-* and draft-sterman Digest-*.
NOT_IN_DICTIONARY_PREFIXES = ("Quintum-", "Freeswitch-", "Sip-", "Digest-")

REQUIRED_ATTRIBUTES = tuple(
    name for name in DIALECT_ATTRIBUTES if not name.startswith(NOT_IN_DICTIONARY_PREFIXES)
)

# Enumerated values the dialects send by name. Kamailio's Service-Type "Sip-Session" comes from
# its own dictionary, not from an RFC, and is left out.
DIALECT_VALUES = (
    ("NAS-Port-Type", "Async", 0),
    ("Acct-Status-Type", "Start", 1),
    ("Acct-Status-Type", "Stop", 2),
    ("Acct-Status-Type", "Failed", 15),
    ("Service-Type", "Login-User", 1),
    ("Acct-Terminate-Cause", "User-Request", 1),
)

# (name, code, type, vendor) of attributes the server relies on.
DEFINITIONS = (
    ("User-Name", 1, "string", ""),
    ("User-Password", 2, "string", ""),
    ("CHAP-Password", 3, "octets", ""),
    ("NAS-IP-Address", 4, "ipaddr", ""),
    ("Framed-IP-Address", 8, "ipaddr", ""),
    ("Class", 25, "octets", ""),
    ("Proxy-State", 33, "octets", ""),
    ("Acct-Status-Type", 40, "integer", ""),
    ("Acct-Delay-Time", 41, "integer", ""),
    ("Acct-Session-Id", 44, "string", ""),
    ("Acct-Session-Time", 46, "integer", ""),
    ("Acct-Terminate-Cause", 49, "integer", ""),
    ("Event-Timestamp", 55, "date", ""),
    ("Message-Authenticator", 80, "octets", ""),
    ("NAS-IPv6-Address", 95, "ipv6addr", ""),
    ("Framed-IPv6-Prefix", 97, "ipv6prefix", ""),
    ("Error-Cause", 101, "integer", ""),
    ("Cisco-AVPair", 1, "string", "Cisco"),
    ("Cisco-NAS-Port", 2, "string", "Cisco"),
    ("h323-remote-address", 23, "string", "Cisco"),
    ("h323-conf-id", 24, "string", "Cisco"),
    ("h323-setup-time", 25, "string", "Cisco"),
    ("h323-call-origin", 26, "string", "Cisco"),
    ("h323-call-type", 27, "string", "Cisco"),
    ("h323-connect-time", 28, "string", "Cisco"),
    ("h323-disconnect-time", 29, "string", "Cisco"),
    ("h323-disconnect-cause", 30, "string", "Cisco"),
    ("h323-voice-quality", 31, "string", "Cisco"),
    ("h323-gw-id", 33, "string", "Cisco"),
    ("h323-incoming-conf-id", 35, "string", "Cisco"),
    ("h323-credit-amount", 101, "string", "Cisco"),
    ("h323-credit-time", 102, "string", "Cisco"),
    ("h323-return-code", 103, "string", "Cisco"),
    ("h323-prompt-id", 104, "string", "Cisco"),
    ("h323-time-and-day", 105, "string", "Cisco"),
    ("h323-redirect-number", 106, "string", "Cisco"),
    ("h323-preferred-lang", 107, "string", "Cisco"),
    ("h323-redirect-ip-address", 108, "string", "Cisco"),
    ("h323-billing-model", 109, "string", "Cisco"),
    ("h323-currency", 110, "string", "Cisco"),
    ("subscriber", 111, "string", "Cisco"),
    ("gw-rxd-cdn", 112, "string", "Cisco"),
    ("gw-final-xlated-cdn", 113, "string", "Cisco"),
    ("remote-media-address", 114, "string", "Cisco"),
    ("release-source", 115, "string", "Cisco"),
    ("gw-rxd-cgn", 116, "string", "Cisco"),
    ("gw-final-xlated-cgn", 117, "string", "Cisco"),
    ("call-id", 141, "string", "Cisco"),
    ("session-protocol", 142, "string", "Cisco"),
    ("method", 143, "string", "Cisco"),
    ("prev-hop-via", 144, "string", "Cisco"),
    ("prev-hop-ip", 145, "string", "Cisco"),
    ("incoming-req-uri", 146, "string", "Cisco"),
    ("outgoing-req-uri", 147, "string", "Cisco"),
    ("next-hop-ip", 148, "string", "Cisco"),
    ("next-hop-dn", 149, "string", "Cisco"),
    ("sip-hdr", 150, "string", "Cisco"),
)


@pytest.fixture(scope="module")
def radius_dict() -> Dictionary:
    return Dictionary(str(DICTIONARY))


def _int_value(value: int) -> bytes:
    return struct.pack("!I", value)


def test_loads_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    # the handler goes on the pyrad logger itself, so that records are seen even if the
    # application's logging setup stops pyrad's records from propagating to the root logger
    pyrad_logger = logging.getLogger("pyrad")
    pyrad_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.DEBUG, logger="pyrad"):
            loaded = Dictionary(str(DICTIONARY))
    finally:
        pyrad_logger.removeHandler(caplog.handler)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []
    assert loaded.skipped_attributes == set()
    assert loaded.vendors.GetForward("Cisco") == 9


def test_dialect_attributes_resolve(radius_dict: Dictionary) -> None:
    missing = [name for name in REQUIRED_ATTRIBUTES if name not in radius_dict]
    assert missing == []


@pytest.mark.parametrize(("attribute", "name", "value"), DIALECT_VALUES)
def test_dialect_values_resolve(
    radius_dict: Dictionary, attribute: str, name: str, value: int
) -> None:
    assert radius_dict[attribute].values.GetForward(name) == _int_value(value)


@pytest.mark.parametrize(("name", "code", "datatype", "vendor"), DEFINITIONS)
def test_definitions(
    radius_dict: Dictionary, name: str, code: int, datatype: str, vendor: str
) -> None:
    attr = radius_dict[name]
    assert (attr.code, attr.type, attr.vendor) == (code, datatype, vendor)


def test_user_password_is_encrypted(radius_dict: Dictionary) -> None:
    assert radius_dict["User-Password"].encrypt == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Start", 1),
        ("Stop", 2),
        ("Interim-Update", 3),
        ("Accounting-On", 7),
        ("Accounting-Off", 8),
        ("Failed", 15),
    ],
)
def test_acct_status_type_values(radius_dict: Dictionary, name: str, value: int) -> None:
    values = radius_dict["Acct-Status-Type"].values
    assert values.GetForward(name) == _int_value(value)
    # a received value decodes to this name (the alias "Alive" must not win for 3)
    assert values.GetBackward(_int_value(value)) == name


def test_accounting_request_round_trip(radius_dict: Dictionary) -> None:
    request = packet.AcctPacket(dict=radius_dict, secret=b"s")
    request["h323-conf-id"] = "h323-conf-id=ABC"
    request["Acct-Status-Type"] = "Stop"
    request["NAS-IP-Address"] = "198.51.100.21"
    request["Event-Timestamp"] = 1795615387
    raw = request.RequestPacket()

    # Vendor-Specific(26), length, vendor 9, h323-conf-id(24), length, value
    vsa = b"h323-conf-id=ABC"
    assert struct.pack("!BBIBB", 26, len(vsa) + 8, 9, 24, len(vsa) + 2) + vsa in raw

    decoded = packet.AcctPacket(packet=raw, dict=radius_dict, secret=b"s")
    assert decoded.code == packet.AccountingRequest
    assert decoded.VerifyAcctRequest()
    assert decoded["h323-conf-id"] == ["h323-conf-id=ABC"]
    assert decoded["Acct-Status-Type"] == ["Stop"]
    assert decoded["NAS-IP-Address"] == ["198.51.100.21"]
    assert decoded["Event-Timestamp"] == [1795615387]
    assert decoded[(9, 24)] == [vsa]
    assert decoded[40] == [_int_value(2)]


def test_tampered_accounting_request_fails_verification(radius_dict: Dictionary) -> None:
    request = packet.AcctPacket(dict=radius_dict, secret=b"s")
    request["Acct-Status-Type"] = "Start"
    raw = bytearray(request.RequestPacket())
    raw[-1] ^= 0x01  # Acct-Status-Type 1 becomes 0 after the authenticator was computed
    decoded = packet.AcctPacket(packet=bytes(raw), dict=radius_dict, secret=b"s")
    assert not decoded.VerifyAcctRequest()
