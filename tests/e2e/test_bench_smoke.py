"""The benchmark's own machinery works: each scenario, briefly, against the real daemon.

No timing is asserted (timing belongs to `make bench`): only that replies came back, that
every one passed the generator's authenticator checks, and that each request got the reply
its kind calls for. The generator's hand-rolled checks are compared with pyrad's once.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from bench import datagen, loadgen, packets, scenarios
from bench.cli import check_ledger
from bench.procstat import Reading
from bench.results import Measurement
from bench.targets import BIN, Database, Log, OurNodes, Prepared, write_db_config
from tests.conftest import RedisTarget

from .conftest import SECRET, Daemon

pytestmark = pytest.mark.e2e

KEY = SECRET.encode()
CALL = packets.Call(
    username="u00000x0",
    password="pw",
    calling="4420771234",
    called="15550001111",
    session_id="0123456789abcdef01234567",
    conf_id="3A7C0F218B1D11EF9F2A005056A1B2C3",
    duration=61,
)


def test_restamped_requests_are_the_bytes_pyrad_encodes() -> None:
    dictionary = packets.dictionary()
    stamper = packets.Stamper(KEY)
    authenticator = os.urandom(16)
    for ident in (0, 1, 200, 255):
        auth = packets.access_request(dictionary, KEY, 0, authenticator, CALL)
        packets.check_stampable(auth)
        assert stamper.stamp(auth, ident) == packets.access_request(
            dictionary, KEY, ident, authenticator, CALL
        )
        for status in (packets.START, packets.STOP):
            acct = packets.accounting_request(dictionary, KEY, 0, CALL, status)
            assert stamper.stamp(acct, ident) == packets.accounting_request(
                dictionary, KEY, ident, CALL, status
            )


def test_the_generator_sends_to_loopback_only() -> None:
    loadgen.check_loopback("127.0.0.1")
    loadgen.check_loopback("::1")
    for address in ("10.0.0.1", "192.168.1.1", "8.8.8.8"):
        with pytest.raises(ValueError, match="loopback"):
            loadgen.check_loopback(address)


def _exchange(port: int, request: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(request, ("127.0.0.1", port))
        return sock.recv(4096)


def _check_like_pyrad(request: bytes, reply: bytes) -> None:
    dictionary = packets.dictionary()
    checker = packets.ReplyChecker(KEY)
    ident = request[1]
    code = checker.check(reply, request[4:20], ident)
    assert code == reply[0] and code > 0
    assert packets.pyrad_verify(dictionary, KEY, request, reply)
    # a flipped bit anywhere after the header: both reject it
    for position in (4, 19, len(reply) - 1):
        bad = bytearray(reply)
        bad[position] ^= 0x01
        assert checker.check(bytes(bad), request[4:20], ident) < 0
        assert not packets.pyrad_verify(dictionary, KEY, request, bytes(bad))
    # the wrong secret
    assert packets.ReplyChecker(b"wrong").check(reply, request[4:20], ident) < 0


def test_each_scenario_runs_against_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    data = datagen.generate(datagen.SMALL, out=tmp_path)
    key = tmp_path / "secrets.key"  # half the logins allow chap and digest: they need a key
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    daemon.config.write_text(
        daemon.config.read_text() + f'\n[security]\nsecrets_key_file = "{key}"\n'
    )
    daemon.billingctl("load", str(data.provisioning))
    daemon.start()
    dictionary = packets.dictionary()
    login = data.manifest.logins[0]
    call = packets.Call(
        login.username,
        login.password,
        "4420771234",
        data.manifest.numbers[login.table][0],
        "smoke-session-1",
        "5A7C0F218B1D11EF9F2A005056A1B2C3",
        61,
    )

    # the hand-rolled checks agree with pyrad's VerifyReply on real replies
    auth = packets.access_request(dictionary, KEY, 7, os.urandom(16), call)
    auth_reply = _exchange(daemon.auth_port, auth)
    assert auth_reply[0] == packets.ACCESS_ACCEPT
    _check_like_pyrad(auth, auth_reply)
    stop = packets.accounting_request(dictionary, KEY, 9, call, packets.STOP)
    acct_reply = _exchange(daemon.acct_port, stop)
    assert acct_reply[0] == packets.ACCOUNTING_RESPONSE
    _check_like_pyrad(stop, acct_reply)

    checker = packets.ReplyChecker(KEY)
    spec = loadgen.LoadSpec(duration=0.3, warmup=0.0, timeout=5.0, sockets=2, lanes=4)
    addresses = (("127.0.0.1", daemon.auth_port), ("127.0.0.1", daemon.acct_port))
    for number, name in enumerate(scenarios.SCENARIOS, start=1):
        pool_spec = scenarios.PoolSpec(name, 100, number, 0x5E0E, KEY)
        pool = scenarios.build_pool(pool_spec, data.manifest, workers=1)
        result = asyncio.run(loadgen.run(pool, addresses, checker, scenarios.EXPECT_OURS, spec))
        assert result.verified > 0, name
        assert result.requests > 0, name
        assert result.failed == 0, (name, result.failures)
        assert result.missing_message_authenticator == 0, name
        assert result.unexpected == 0, (name, result.outcomes)
        assert result.stray == 0, name


class _Loaded(Database):
    """The test's migrated database, with the small data set loaded by ``billingctl load``."""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def kind(self) -> str:
        return "postgresql"

    def prepare(self, data: datagen.DataSet, workdir: Path, log: Log) -> Prepared:
        config = workdir / "load.toml"
        write_db_config(config, self.url)  # with the benchmark's key, as the bench loads
        result = subprocess.run(
            [str(BIN / "billingctl"), "--config", str(config), "load", str(data.provisioning)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return Prepared(self.url, 0.0, False)


@pytest.mark.postgres
@pytest.mark.redis
def test_the_two_node_scenario_charges_every_stop_once(
    pg_url: str, live_redis: RedisTarget, tmp_path: Path
) -> None:
    """Two daemons on one PostgreSQL and one Redis (one server, and a Redis Cluster); calls
    alternate between them, some end on the other node, some Stops are answered by one node
    then re-sent to the other: the ledger check finds each answered Stop charged exactly
    once, and no live drift."""
    data = datagen.generate(datagen.SMALL, out=tmp_path / "data")
    nodes = OurNodes(
        "two-node",
        "two nodes",
        tmp_path / "nodes",
        lambda _line: None,
        _Loaded(pg_url),
        data,
        live_redis.url,
        nodes=2,
        workers=1,
        slots=scenarios.NODE_SLOTS,
        redis_cluster=live_redis.cluster,
    )
    try:
        nodes.start()
        spec = scenarios.PoolSpec(scenarios.TWO_NODE.name, 120, 1, 0x7E0, KEY)
        pool = scenarios.build_pool(spec, data.manifest, workers=1)
        assert {step[0] for job in pool for step in job} == {0, 1, 2, 3}  # both nodes' ports
        load = loadgen.LoadSpec(duration=1.0, warmup=0.0, timeout=5.0, sockets=2, lanes=4)
        load = replace(load, record=True)
        checker = packets.ReplyChecker(KEY)
        result = asyncio.run(
            loadgen.run(pool, nodes.addresses, checker, scenarios.EXPECT_OURS, load)
        )
        assert result.unexpected == 0, result.outcomes
        assert result.failed == 0, result.failures
        assert result.timeouts == 0
        assert nodes.running()
        measurement = Measurement(nodes.name, spec.scenario, result, Reading())
        check = check_ledger(nodes, spec, measurement)
    finally:
        nodes.stop()
    assert check.stops_answered > 20, check
    assert check.resent_answered > 0, check  # a Stop answered by both nodes
    assert check.charged == check.stops_answered, check
    assert check.cdrs == check.charged, check  # no timeouts: every CDR is an answered Stop's
    assert check.drifts == 0 and check.clients_verified > 0, check
    assert check.ok, check.summary()
