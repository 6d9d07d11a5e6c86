"""Who is calling: account identification by login, ip or ani, with tech prefixes (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from billing_core.domain.dialled import normalize_number
from billing_core.domain.model import Account, Ident


@dataclass(frozen=True, slots=True)
class CallerFacts:
    """What a request says about its caller, already read from the switch's dialect."""

    user_name: str | None = None
    framed_ip: str | None = None
    remote_address: str | None = None  # h323-remote-address
    calling: str | None = None  # Calling-Station-Id, raw
    called: str | None = None  # Called-Station-Id, raw; None means authentication only


@dataclass(frozen=True, slots=True)
class Identified:
    account: Account
    number: str | None  # the called number, normalized, tech prefix stripped; None if absent


def canonical_ip(text: str) -> str | None:
    stripped = text.strip()
    if _plain_ipv4(stripped):  # the common case, without ipaddress's objects (start-up)
        return stripped
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _plain_ipv4(text: str) -> bool:
    """Four decimal octets without leading zeros: an IPv4 address written as ``ipaddress``
    writes it."""
    parts = text.split(".")
    return len(parts) == 4 and all(
        part.isascii()
        and part.isdigit()
        and len(part) <= 3
        and (part[0] != "0" or part == "0")
        and int(part) <= 255
        for part in parts
    )


class AccountIndex:
    """Accounts by (ident, value); enabled accounts only."""

    __slots__ = ("_index",)

    def __init__(self, accounts: Iterable[Account]) -> None:
        index: dict[tuple[Ident, str], list[Account]] = {}
        for account in accounts:
            if not account.enabled:
                continue
            value = account.value
            if account.ident == "ip":
                value = canonical_ip(value) or value
            elif account.ident == "ani":
                value = normalize_number(value)
            index.setdefault((account.ident, value), []).append(account)
        # longest tech prefix first; accounts without one last
        self._index = {
            key: (items[0],)
            if len(items) == 1
            else tuple(sorted(items, key=lambda a: -len(a.tech_prefix or "")))
            for key, items in index.items()
        }

    def _match(self, ident: Ident, value: str, number: str | None) -> Identified | None:
        for account in self._index.get((ident, value), ()):
            prefix = account.tech_prefix
            if prefix:
                if number is not None and number.startswith(prefix):
                    return Identified(account, number[len(prefix) :])
            else:
                return Identified(account, number)
        return None

    def identify(
        self, facts: CallerFacts, *, allow_remote_address: bool = True
    ) -> Identified | None:
        """login, then ip, then ani (CONTRACT §3, Who is calling)."""
        number = normalize_number(facts.called) if facts.called is not None else None
        if facts.user_name:
            found = self._match("login", facts.user_name, number)
            if found:
                return found
        ip = None
        if facts.user_name:
            ip = canonical_ip(facts.user_name)
        if ip is None and facts.framed_ip:
            ip = canonical_ip(facts.framed_ip)
        if ip is None and facts.remote_address and allow_remote_address:
            ip = canonical_ip(facts.remote_address)
        if ip is not None:
            found = self._match("ip", ip, number)
            if found:
                return found
        if facts.calling:
            found = self._match("ani", normalize_number(facts.calling), number)
            if found:
                return found
        return None
