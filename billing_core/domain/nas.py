"""Which [[nas]] entry a packet comes from, and its NAS key (CONTRACT §3, The NAS): pure.

The daemon's transport and ``billingctl explain`` both match a source address here, so an
explanation names the entry the daemon would pick.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class NasEntry(Protocol):
    """What matching needs of a ``[[nas]]`` entry (radiusd's NasConfig is one)."""

    @property
    def address(self) -> IPNetwork: ...

    @property
    def name(self) -> str: ...


E = TypeVar("E", bound=NasEntry)


def longest_first(entries: Iterable[E]) -> list[E]:
    """The entries in matching order: the longest prefix first."""
    return sorted(entries, key=lambda n: -n.address.prefixlen)


def match_source(ordered: Sequence[E], source_ip: str) -> E | None:
    """The entry of ``source_ip`` among ``ordered`` (``longest_first``); ``::ffff:a.b.c.d``
    matches ``a.b.c.d``; a zone (``%eth0``) is ignored; None when none matches."""
    try:
        ip = ipaddress.ip_address(source_ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for nas in ordered:
        if ip.version == nas.address.version and ip in nas.address:
            return nas
    return None


def nas_key(nas_name: str, identities: Iterable[object], source_ip: str) -> str:
    """The entry's name plus the first present of NAS-IP-Address, NAS-IPv6-Address,
    NAS-Identifier (``identities``, in that order), else the source address."""
    for value in identities:
        if value:
            return f"{nas_name}|{value}"
    return f"{nas_name}|{source_ip}"
