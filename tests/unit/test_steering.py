"""Reuseport steering by RADIUS Identifier, on the real kernel (loopback sockets)."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from radiusd import steering


def test_the_program_is_load_identifier_modulo_workers_return() -> None:
    code = steering.program(3)
    assert [struct.unpack("=HBBI", code[i : i + 8]) for i in range(0, len(code), 8)] == [
        (0x30, 0, 0, 1),
        (0x94, 0, 0, 3),
        (0x16, 0, 0, 0),
    ]
    with pytest.raises(ValueError):
        steering.program(0)


def _group(count: int) -> list[socket.socket]:
    first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    first.bind(("127.0.0.1", 0))
    port = first.getsockname()[1]
    group = [first]
    for _ in range(count - 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        group.append(sock)
    for sock in group:
        sock.settimeout(0.5)
    return group


def _received(sock: socket.socket) -> list[int]:
    sock.setblocking(False)
    out: list[int] = []
    while True:
        try:
            data = sock.recv(64)
        except BlockingIOError:
            return out
        out.append(data[1])


@pytest.mark.parametrize("workers", [2, 3])
def test_one_source_is_spread_by_identifier_and_a_retransmission_follows_its_original(
    workers: int,
) -> None:
    group = _group(workers)
    steering.attach(group[-1], workers)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for identifier in [*range(12), 5, 5]:  # one source; 5 sent three times
            sender.sendto(bytes([4, identifier]) + b"\x00" * 18, group[0].getsockname())
        time.sleep(0.2)
        seen = [_received(sock) for sock in group]
        # each socket gets one residue class of Identifiers, whichever index it has
        assert sorted(i for ids in seen for i in ids) == sorted([*range(12), 5, 5])
        classes = [{i % workers for i in ids} for ids in seen]
        assert all(len(c) == 1 for c in classes) and len(set().union(*classes)) == workers
        assert [ids.count(5) for ids in seen if 5 in ids] == [3]
    finally:
        sender.close()
        for sock in group:
            sock.close()
