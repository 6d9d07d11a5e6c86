"""How long a start takes: from ``radiusd serve``'s launch to its first correct Access-Accept.

``first_accept`` asks the daemon every ``every`` seconds, each time a new call (its own
Identifier and call identifiers, so never a retransmission) of one prepaid login of the data
set, and returns when an Access-Accept arrives whose authenticators check and which grants
seconds (``Session-Timeout``): the catalog is loaded and the client's live state decided.
A daemon that is still starting does not answer (its ports are not bound yet, or a request
is dropped), as a switch would see it.

``python -m bench.startup CONFIG MANIFEST [--radiusd PATH]`` starts ``radiusd serve`` once
and prints the seconds to its first Access-Accept (the figure of BENCHMARKS.md's "start s").
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import packets
from .datagen import Login, Manifest


class NoAccept(Exception):
    """No correct Access-Accept within the time allowed."""


def start_call(manifest: Manifest) -> packets.Call:
    """A call the data set grants: a prepaid PAP login and a number its rate table rates."""
    login: Login = next(x for x in manifest.logins if not x.postpaid and x.methods == "pap")
    return packets.Call(
        username=login.username,
        password=login.password,
        calling="15550000000",
        called=manifest.numbers[login.table][0],
        session_id="",
        conf_id="",
        duration=60,
    )


def first_accept(
    address: tuple[str, int],
    secret: bytes,
    call: packets.Call,
    *,
    timeout: float,
    every: float = 0.05,
    alive: object = None,
    workers: int = 1,
) -> tuple[float, float]:
    """The monotonic times of the first correct Access-Accept and of the first by which
    each of ``workers`` worker processes answered one (a request goes to the worker its
    Identifier picks: Identifier mod workers); ``NoAccept`` after ``timeout``. ``alive``: a
    ``subprocess.Popen`` whose exit ends the wait early."""
    dict_ = packets.dictionary()
    checker = packets.ReplyChecker(secret)
    deadline = time.monotonic() + timeout
    sent: dict[int, bytes] = {}
    answered: dict[int, float] = {}  # worker -> its first Access-Accept
    ident = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        while time.monotonic() < deadline:
            if alive is not None and getattr(alive, "poll")() is not None:  # noqa: B009
                raise NoAccept("the daemon exited")
            ident = (ident + 1) % 256
            request = _request(dict_, secret, ident, call)
            sent[ident] = request[4:20]
            sock.sendto(request, address)
            pause_until = time.monotonic() + every
            while (left := pause_until - time.monotonic()) > 0:
                found = _read_accept(sock, checker, sent, dict_, left)
                if found is not None:
                    answered.setdefault(found[1] % workers, found[0])
                if len(answered) == workers:
                    return min(answered.values()), max(answered.values())
    raise NoAccept(f"no Access-Accept within {timeout:.0f} s")


def _request(dict_: object, secret: bytes, ident: int, call: packets.Call) -> bytes:
    conf = secrets.token_hex(16).upper()
    fresh = packets.Call(
        call.username, call.password, call.calling, call.called, f"start-{conf}", conf, 60
    )
    return packets.access_request(dict_, secret, ident, secrets.token_bytes(16), fresh)


def _read_accept(
    sock: socket.socket,
    checker: packets.ReplyChecker,
    sent: dict[int, bytes],
    dict_: object,
    wait: float,
) -> tuple[float, int] | None:
    """(when, its Identifier) of a correct Access-Accept that grants seconds, if one came."""
    import select

    ready, _, _ = select.select([sock], [], [], wait)
    if not ready:
        return None
    try:
        data = sock.recv(4096)
    except (BlockingIOError, ConnectionRefusedError):  # the port not bound yet: ICMP
        return None
    when = time.monotonic()
    if len(data) < 20 or data[1] not in sent:
        return None
    if checker.check(data, sent[data[1]], data[1]) != packets.ACCESS_ACCEPT:
        return None
    attrs = packets.reply_attributes(dict_, checker.secret, data)
    granted = attrs.get("Session-Timeout", [0])
    return (when, data[1]) if granted and int(granted[0]) > 0 else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("config", type=Path)
    parser.add_argument("manifest", type=Path, help="a data set's manifest.json")
    parser.add_argument("--radiusd", default=str(Path(sys.executable).parent / "radiusd"))
    parser.add_argument("--auth", default="127.0.0.1:0", help="host:port the config listens on")
    parser.add_argument("--secret", default="testing123")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--workers", type=int, default=1, help="the config's server.workers")
    args = parser.parse_args(argv)
    host, port = args.auth.rsplit(":", 1)
    call = start_call(Manifest.from_json(args.manifest.read_text()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADIUSD_")}
    launched = time.monotonic()
    process = subprocess.Popen(
        [args.radiusd, "serve", "--config", str(args.config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        first, every = first_accept(
            (host, int(port)),
            args.secret.encode(),
            call,
            timeout=args.timeout,
            alive=process,
            workers=args.workers,
        )
        print(
            f"first Access-Accept {first - launched:.2f} s after the launch, "
            f"from every worker {every - launched:.2f} s"
        )
        return 0
    except NoAccept as exc:
        print(f"bench.startup: {exc}", file=sys.stderr)
        return 1
    finally:
        process.terminate()
        process.wait(30)


if __name__ == "__main__":
    raise SystemExit(main())
