"""Which worker takes a datagram: by its RADIUS Identifier, not by its source's 4-tuple.

With ``workers = N`` every worker binds the same port (SO_REUSEPORT) and the kernel picks
one by a hash of the source address and port. A carrier's traffic comes from a few
switches, each from one source port, so a hash of a few 4-tuples can give one worker most
of the load (measured: two workers, eight sources, a 6:2 split was as likely as 4:4). A
classic BPF program attached to the group (SO_ATTACH_REUSEPORT_CBPF) picks socket
``Identifier mod N`` instead. A switch numbers its requests one after another, so they
spread evenly; a retransmission keeps its source and Identifier, so it reaches the same
worker and that worker's duplicate cache.

The kernel runs the program on the UDP payload; a datagram too short to hold an
Identifier ends the program with 0 (socket 0, which drops it as malformed), and an index
past the group's size (a worker being restarted) falls back to the kernel's hash.
"""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>

# <linux/filter.h>: classic BPF opcodes
_BPF_LD_B_ABS = 0x00 | 0x10 | 0x20  # BPF_LD | BPF_B | BPF_ABS: A = payload[k]
_BPF_ALU_MOD_K = 0x04 | 0x90 | 0x00  # BPF_ALU | BPF_MOD | BPF_K: A %= k
_BPF_RET_A = 0x06 | 0x10  # BPF_RET | BPF_A: return A

_IDENTIFIER_OFFSET = 1  # RFC 2865 §3: Code (1 octet), then Identifier


def program(workers: int) -> bytes:
    """The filter as the kernel's ``struct sock_filter`` array."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    instructions = (
        (_BPF_LD_B_ABS, 0, 0, _IDENTIFIER_OFFSET),
        (_BPF_ALU_MOD_K, 0, 0, workers),
        (_BPF_RET_A, 0, 0, 0),
    )
    return b"".join(struct.pack("=HBBI", *ins) for ins in instructions)


def attach(sock: socket.socket, workers: int) -> None:
    """Steer the reuseport group of ``sock`` by Identifier (any member may attach it; the
    last program attached serves the whole group)."""
    code = program(workers)
    buffer = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
