"""`python -m bench.credcost`: CPU per Access-Request of each way of proving a password.

In one process, no network: the datagram decoded, the command built, the account found and
its credentials checked (``services.check_credentials``, as ``prepare`` does), for PAP on a
salted hash (what every login did before credentials had methods), PAP, CHAP and SIP Digest on
an encrypted secret (decrypted once, then kept in memory). The issue's budget: each at most
20 µs more than PAP on a hash. The load scenarios ``auth``, ``auth-chap`` and ``auth-digest``
measure the same through the whole server.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from bench import packets
from billing_core.adapters.secretbox import AesGcmCipher
from billing_core.domain.identification import AccountIndex
from billing_core.domain.model import Account, hash_password
from billing_core.services.authorization import SecretCache, check_credentials
from radiusd import attributes
from radiusd.codec import Codec

SECRET = b"testing123"


def _setup() -> tuple[AccountIndex, SecretCache]:
    cipher = AesGcmCipher(os.urandom(32))
    accounts = [
        Account(1, 1, "hashed", "login", "hashed", None, hash_password("pw0123456")),
        Account(
            2,
            1,
            "enc",
            "login",
            "enc",
            None,
            None,
            auth_methods=frozenset({"pap", "chap", "digest"}),
            secret_enc=cipher.encrypt(b"pw0123456"),
        ),
    ]
    return AccountIndex(accounts), SecretCache(cipher)


def _datagram(user: str, method: str) -> bytes:
    call = packets.Call(
        user, "pw0123456", "4420771234", "15550001111", "s1", "5A7C0F21" * 4, 60, method
    )
    return packets.access_request(packets.dictionary(), SECRET, 1, os.urandom(16), call)


def _interleaved(works: Sequence[Callable[[], Any]], rounds: int, repeats: int = 7) -> list[float]:
    """CPU seconds per call of each work: the best of ``repeats`` rounds, the works taking
    turns within each round so that a busy machine weighs on all of them alike."""
    for work in works:
        for _ in range(min(rounds, 2000)):
            work()
    best = [float("inf")] * len(works)
    for _ in range(repeats):
        for i, work in enumerate(works):
            started = time.process_time()
            for _ in range(rounds):
                work()
            best[i] = min(best[i], (time.process_time() - started) / rounds)
    return best


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    rounds = int(args[0]) if args else 20000
    codec = Codec(packets.dictionary())
    index, secrets = _setup()
    now = datetime.now(UTC)
    cases = [
        ("PAP on a salted hash (before)", "hashed", "pap"),
        ("PAP on an encrypted secret", "enc", "pap"),
        ("CHAP on an encrypted secret", "enc", "chap"),
        ("Digest on an encrypted secret", "enc", "digest"),
    ]
    works = []
    for _label, user, method in cases:
        data = _datagram(user, method)

        def work(data: bytes = data) -> None:
            request = codec.decode(data, SECRET)
            command = attributes.authorize_command(request, "nas|1", now)
            found = index.identify(command.caller)
            assert found is not None
            assert check_credentials(found.account, command, secrets)[1] is None

        works.append(work)
    results = list(zip([c[0] for c in cases], _interleaved(works, rounds), strict=True))
    base = results[0][1]
    for label, seconds in results:
        print(f"{label:32} {seconds * 1e6:7.1f} µs CPU  ({(seconds - base) * 1e6:+6.1f} µs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
