"""radiusd._walk (the codec's attribute walk in C) against its Python twin (Codec.walk_py and
check_framing): on random datagrams, well framed or not, of every dialect's dictionary, the
same values, the same raw octets and errors, the same Malformed reason and detail; and a
whole decode() the same either way."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radiusd import codec as codec_module
from radiusd.codec import (
    _RAW_MASK,
    ACCESS_REQUEST,
    ACCOUNTING_REQUEST,
    DIALECT_DICTIONARIES,
    Codec,
    Malformed,
    check_framing,
    load_dictionary,
)

CWALK: Any = getattr(codec_module, "_cwalk")  # noqa: B009 - a private name, on purpose
CODECS = {dialect: Codec(load_dictionary(dialect=dialect)) for dialect in DIALECT_DICTIONARIES}
SECRET = b"testing123"


def test_the_compiled_walk_is_built_and_used() -> None:
    """`pip install -e .` (make setup) builds it wherever the tests run (CI has a compiler);
    without one the package still installs and walks in Python (setup.py: optional)."""
    assert CWALK is not None
    assert CWALK.frame(struct.pack("!BBH", 4, 1, 20) + bytes(16), Malformed) == (4, 20)


def attr(kind: int, value: bytes) -> bytes:
    return bytes((kind, len(value) + 2)) + value


# values of the sizes the dictionary types take (4 octets: integer, date, ipaddr; 16:
# ipv6addr), of other sizes (kept raw, named as errors), text and invalid UTF-8
values = st.one_of(
    st.binary(min_size=4, max_size=4),
    st.binary(min_size=16, max_size=16),
    st.binary(max_size=30),
    st.text(max_size=20).map(str.encode),
    st.sampled_from([b"\xff\xfe", b"h323-conf-id=12 34", b"call-id=x@y", b"\x00\x00\x00\x01"]),
)


@st.composite
def vsa(draw: st.DrawFn) -> bytes:
    vendor = draw(st.sampled_from([9, 311, 0, 21848, 15, 8744, 429, 99999]))
    subs = draw(st.lists(st.tuples(st.integers(0, 255), values), max_size=3))
    body = struct.pack("!L", vendor) + b"".join(attr(t, v) for t, v in subs)
    if draw(st.booleans()) and len(body) > 6:  # a broken sub-attribute length, or a tail
        cut = draw(st.integers(4, len(body) - 1))
        body = body[:cut] + bytes((draw(st.integers(0, 255)),)) + body[cut + 1 :]
    return attr(26, body[:253])


standard = st.tuples(
    st.one_of(
        st.integers(1, 255).filter(lambda k: k != 26),
        st.sampled_from([1, 2, 3, 4, 5, 8, 30, 31, 32, 33, 40, 44, 46, 55, 60, 80, 95, 206, 207]),
    ),
    values,
).map(lambda kv: attr(kv[0], kv[1][:253]))


@st.composite
def datagrams(draw: st.DrawFn) -> bytes:
    body = b"".join(draw(st.lists(st.one_of(standard, vsa()), max_size=12)))
    code = draw(st.sampled_from([ACCESS_REQUEST, ACCOUNTING_REQUEST, 12, 2, 99]))
    length = 20 + len(body)
    if draw(st.integers(0, 4)) == 0:  # a wrong length field
        length = draw(st.integers(0, 0xFFFF))
    packet = struct.pack("!BBH", code, 7, length) + bytes(range(16)) + body
    mangle = draw(st.integers(0, 5))
    if mangle == 0 and len(packet) > 20:  # truncated anywhere
        packet = packet[: draw(st.integers(0, len(packet) - 1))]
    elif mangle == 1 and len(packet) > 21:  # one octet changed anywhere after the header
        at = draw(st.integers(20, len(packet) - 1))
        packet = packet[:at] + bytes((draw(st.integers(0, 255)),)) + packet[at + 1 :]
    elif mangle == 2:
        packet += draw(st.binary(max_size=8))  # padding after the length
    return packet


def outcome(call: Any, *args: Any) -> Any:
    try:
        return ("ok", call(*args))
    except Malformed as exc:
        return ("malformed", exc.reason, str(exc))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datagrams(), dialect=st.sampled_from(sorted(CODECS)))
def test_the_c_walk_gives_what_the_python_walk_gives(data: bytes, dialect: str) -> None:
    codec = CODECS[dialect]
    framed = outcome(CWALK.frame, data, Malformed)
    python_code = outcome(check_framing, data)
    if python_code[0] == "ok":
        assert framed == ("ok", (python_code[1], int.from_bytes(data[2:4], "big")))
    else:
        assert framed == python_code
        return
    packet = data[: framed[1][1]]
    walked = outcome(CWALK.walk, packet, codec._c_standard, codec._c_vendor, _RAW_MASK, Malformed)
    assert walked == outcome(codec.walk_py, packet)
    if walked[0] == "ok":  # the same types too: str against bytes, int against a name
        attributes, _raw, _errors, _ma = walked[1]
        expected = codec.walk_py(packet)[0]
        for name, got in attributes.items():
            assert [type(v) for v in got] == [type(v) for v in expected[name]]


def decoded(codec: Codec, data: bytes, monkeypatch: pytest.MonkeyPatch, *, c: bool) -> Any:
    with monkeypatch.context() as patch:
        if not c:
            patch.setattr(codec_module, "_cwalk", None)
        try:
            request = codec.decode(data, SECRET)
        except Malformed as exc:
            return ("malformed", exc.reason, str(exc))
    return (
        request.code,
        request.identifier,
        request.attributes,
        request.has_message_authenticator,
        request.has_proxy_state,
        request.password,
        request.chap,
        request.digest,
        request.proxy_states,
        request.attribute_errors,
    )


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=datagrams(), dialect=st.sampled_from(sorted(CODECS)))
def test_decode_is_the_same_with_either_walk(
    data: bytes, dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = CODECS[dialect]
    assert decoded(codec, data, monkeypatch, c=True) == decoded(codec, data, monkeypatch, c=False)


def test_the_tables_of_the_c_walk_name_every_attribute_the_python_walk_decodes() -> None:
    for codec in CODECS.values():
        for kind in range(256):
            python = codec._standard[kind]
            entry = codec._c_standard[kind]
            assert (python is None) == (entry is None)
            if python is not None and entry is not None:
                assert entry[0] == python[0]
        assert {(key >> 8, key & 0xFF) for key in codec._c_vendor} == set(codec._vendor)
