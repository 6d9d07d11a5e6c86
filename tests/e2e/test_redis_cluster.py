"""The real daemon and billingctl on a real Redis Cluster (``[redis] cluster = true``):
calls end to end, a slot migrated while traffic runs, and a master killed while traffic
runs (its replica takes over).

The cluster is the session's (``tests/redis_cluster.py``: 3 masters, 3 replicas on
loopback), emptied before each test; a test that kills a node starts it again, as a
replica, before it ends. The switches and calls are those of the outage tests: UDP
sockets that re-send an unanswered request, and a rate of 0.01 a second so that every cost
is a whole number of cents.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from tests.redis_cluster import LocalCluster, wait_for

from .conftest import Daemon, make_daemon
from .test_outages import (
    ACCESS_ACCEPT,
    Call,
    Switch,
    acct_packet,
    auth_packet,
    cdrs,
    funds_of,
    money,
    place_call,
    provision,
    provisioning,
)

OPENING = Decimal("500.00")
MAX_CALL = 120


@dataclass
class OnCluster:
    daemon: Daemon
    cluster: LocalCluster


@pytest.fixture
def on_cluster(pg_url: str, redis_cluster: LocalCluster, tmp_path: Path) -> Iterator[OnCluster]:
    """A daemon (not started) on a migrated PostgreSQL database and the emptied cluster,
    with ``cluster = true`` in its config file (billingctl reads the same file)."""
    redis_cluster.wait_ok()
    redis_cluster.flush()
    daemon = make_daemon(tmp_path, (pg_url, redis_cluster.url))
    text = daemon.config.read_text()
    seed = f'url = "{redis_cluster.url}"'
    daemon.config.write_text(text.replace(seed, f"{seed}\ncluster = true", 1))
    yield OnCluster(daemon, redis_cluster)
    if daemon.process is not None:
        daemon.process.kill()
        daemon.process.wait()
    redis_cluster.flush()


def clients(daemon: Daemon) -> dict[str, dict[str, object]]:
    """``billingctl clients list``: every client by name, with its live money."""
    rows = json.loads(daemon.billingctl("clients", "list", "--format", "json").stdout)
    return {str(row["name"]): row for row in rows}


def live_verify_clean(daemon: Daemon) -> bool:
    result = daemon.billingctl("live", "verify", check=False)
    return result.returncode == 0 and "every live balance equals its ledger" in result.stdout


def test_calls_end_to_end_and_billingctl_on_a_cluster(
    on_cluster: OnCluster, tmp_path: Path
) -> None:
    daemon, cluster = on_cluster.daemon, on_cluster.cluster
    provision(
        daemon,
        tmp_path,
        provisioning(400, dict.fromkeys(["alpha", "bravo", "charlie", "delta"], "10.00")),
    )
    # billingctl load wrote the live balances in the cluster, each in its client's slot
    r = cluster.client()
    ids = {name: int(str(row["id"])) for name, row in clients(daemon).items()}
    assert {r.get(f"{{c:{i}}}:bal") for i in ids.values()} == {b"10000000"}
    # the clients' slots are spread over the masters (a SCAN must ask every one)
    assert len({cluster.master_of(f"{{c:{i}}}") for i in ids.values()}) >= 2
    daemon.start()
    switch = Switch(daemon, "10.0.2.1", timeout=0.5, tries=6)

    # every client: authorized with the grant its funds allow, started, stopped, charged once
    calls = [Call(name, f"e2e-{name}", duration=61 + n) for n, name in enumerate(ids)]
    for call in calls:
        place_call(switch, call)
        assert call.abandoned is None, call
        assert call.auth is not None and call.auth.grant == 400  # 10.00 covers the cap
        assert call.auth.credit == Decimal("10.00")
    first = calls[0]
    resent = switch.ask(  # the same Stop again, delayed: answered, not charged again
        lambda i, _d: acct_packet(
            i,
            status="Stop",
            user=first.client.lower(),
            session=first.session,
            nas_ip=switch.nas_ip,
            session_time=first.duration,
            delay=3,
        ),
        accounting=True,
    )
    assert resent.answered
    rated = Counter(str(c["acct_session_id"]) for c in cdrs(daemon))
    assert rated == {call.session: 1 for call in calls}
    listed = clients(daemon)
    for call in calls:
        row = listed[call.client]
        assert money(row["live_balance"]) == Decimal("10.00") - call.cost, row
        assert money(row["held"]) == 0 and row["active_calls"] == 0, row
        assert funds_of(switch, call.client.lower()).credit == Decimal("10.00") - call.cost
    shown = daemon.client(first.client)  # billingctl clients show, through the cluster
    assert money(shown["live_balance"]) == Decimal("10.00") - first.cost, shown

    # a hold without accounting lives only in the cluster: sessions list finds it by a
    # SCAN of every master
    held = switch.ask(
        lambda i, _d: auth_packet(i, user="delta", session="held-delta", nas_ip=switch.nas_ip),
        accounting=False,
    )
    assert held.code == ACCESS_ACCEPT
    sessions = json.loads(daemon.billingctl("sessions", "list", "--format", "json").stdout)
    assert [(s["client"], s["state"]) for s in sessions] == [("Delta", "held")]

    assert live_verify_clean(daemon)  # (a drift found and repaired: test_redis_live.py)
    switch.close()
    assert daemon.stop() == 0


# --------------------------------------------------------------------------- under traffic


class Traffic:
    """``senders`` switches placing whole calls (Access-Request, Start, Stop) for the
    clients in turn until stopped; each waits for a reply, re-sending up to 10 s."""

    def __init__(self, daemon: Daemon, clients: list[str], senders: int = 3) -> None:
        self.daemon = daemon
        self.clients = clients
        self.finish = threading.Event()
        self.calls: list[Call] = []
        self.failures: list[BaseException] = []
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._send, args=(i,), daemon=True) for i in range(senders)
        ]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.finish.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _send(self, index: int) -> None:
        switch = Switch(self.daemon, f"10.0.3.{index + 1}", delay_on_retry=index % 2 == 1)
        try:
            for n in itertools.count():
                if self.finish.is_set():
                    return
                name = self.clients[(index + n) % len(self.clients)]
                call = Call(name, f"t-{index}-{n}", duration=1 + (7 * n + 13 * index) % 90)
                with self._lock:
                    self.calls.append(call)
                place_call(switch, call)
                if call.abandoned:
                    return
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.failures.append(exc)
        finally:
            switch.close()

    def answered_between(self, since: float, until: float) -> int:
        return sum(
            1
            for call in self.calls
            for exchange in (call.auth, call.start, call.stop)
            if exchange is not None
            and exchange.answered_at is not None
            and since <= exchange.answered_at <= until
        )

    def check(
        self, daemon: Daemon, *, holds_lapse_within: float = 0, cluster: LocalCluster | None = None
    ) -> None:
        """Every request answered right, every call charged once, live = ledger; no funds
        held once the calls ended (or, with ``holds_lapse_within``, once holds stranded by
        the event have lapsed: at most that many seconds)."""
        assert not self.failures, self.failures
        assert not any(t.is_alive() for t in self.threads), "a switch still waits for a reply"
        abandoned = [(c.session, c.abandoned) for c in self.calls if c.abandoned]
        assert not abandoned, f"requests never answered: {abandoned}"
        for call in self.calls:
            assert call.auth is not None and call.auth.grant == MAX_CALL, call
        rated = cdrs(daemon)
        per_session = Counter(str(cdr["acct_session_id"]) for cdr in rated)
        assert not {s: n for s, n in per_session.items() if n > 1}, "charged twice"
        by_session = {str(cdr["acct_session_id"]): cdr for cdr in rated}
        assert set(by_session) == {c.session for c in self.calls}
        for call in self.calls:
            cdr = by_session[call.session]
            assert (cdr["client"], cdr["duration"]) == (call.client, call.duration), cdr
            assert money(cdr["cost"]) == call.cost, cdr
        # the live state heals within seconds if a write was lost (the heal job)
        wait_for(lambda: live_verify_clean(daemon), 15, "live balances equal to the ledger")
        probe = Switch(daemon, "10.0.3.99", timeout=0.5, tries=6)
        listed = clients(daemon)
        if any(money(listed[n]["held"]) for n in self.clients):
            print(f"holds stranded: { {n: listed[n]['held'] for n in self.clients} }")
            if cluster is not None:
                r = cluster.client()
                for name in self.clients:
                    calls = r.hgetall(f"{{c:{listed[name]['id']}}}:calls")
                    print(name, {str(k): json.loads(v) for k, v in calls.items()})
        if holds_lapse_within and any(money(listed[n]["held"]) for n in self.clients):
            wait_for(
                lambda: not any(money(row["held"]) for row in clients(daemon).values()),
                holds_lapse_within,
                "stranded holds to lapse",
            )
            listed = clients(daemon)
        for name in self.clients:
            charged = sum(
                (money(c["cost"]) for c in rated if c["client"] == name), start=Decimal(0)
            )
            shown = listed[name]
            assert money(shown["live_balance"]) == OPENING - charged, shown
            assert money(shown["held"]) == 0 and shown["active_calls"] == 0, shown
            seen = funds_of(probe, name.lower())
            assert seen.code == ACCESS_ACCEPT and seen.credit == OPENING - charged, seen
        probe.close()


HOLD_SECONDS = 5  # auth_hold_seconds of the failover test


def _start_traffic_daemon(
    on_cluster: OnCluster, tmp_path: Path, *, hold_seconds: int = 180
) -> tuple[Daemon, dict[str, int]]:
    daemon = on_cluster.daemon
    config = daemon.config.read_text()
    daemon.config.write_text(
        config.replace("auth_hold_seconds = 180", f"auth_hold_seconds = {hold_seconds}", 1)
    )
    provision(
        daemon, tmp_path, provisioning(MAX_CALL, {"alpha": str(OPENING), "bravo": str(OPENING)})
    )
    daemon.start()
    return daemon, {name: int(str(row["id"])) for name, row in clients(daemon).items()}


def redirections(cluster: LocalCluster, ports: list[int]) -> Counter[str]:
    """ASK, TRYAGAIN and MOVED answered so far by the nodes on ``ports`` (INFO errorstats)."""
    seen: Counter[str] = Counter()
    for port in ports:
        for name, stat in cluster.node(port).info("errorstats").items():
            kind = name.removeprefix("errorstat_")
            if kind in ("ASK", "TRYAGAIN", "MOVED"):
                seen[kind] += int(stat["count"])
    return seen


def test_a_slot_migrated_during_traffic(on_cluster: OnCluster, tmp_path: Path) -> None:
    daemon, ids = _start_traffic_daemon(on_cluster, tmp_path)
    cluster = on_cluster.cluster
    tag = f"{{c:{ids['Alpha']}}}"
    source = cluster.master_of(tag)
    target = next(
        p
        for p in cluster.live_ports()
        if p != source and cluster.node(p).info("replication")["role"] == "master"
    )
    before = redirections(cluster, [source, target])
    with Traffic(daemon, ["Alpha", "Bravo"]) as traffic:
        wait_for(lambda: traffic.answered_between(0, time.monotonic()) >= 15, 20, "traffic")
        began = time.monotonic()
        # key by key, a pause after each: requests meet ASK and TRYAGAIN meanwhile
        cluster.migrate_slot(tag, target, between_keys=lambda: time.sleep(0.3))
        ended = time.monotonic()
        wait_for(lambda: traffic.answered_between(ended, time.monotonic()) >= 15, 20, "traffic")
    assert cluster.master_of(tag) == target
    assert traffic.answered_between(began, ended) > 0, "no request during the migration"
    met = redirections(cluster, [source, target]) - before
    print(f"redirections answered during the migration: {dict(met)}")
    assert met["ASK"] + met["TRYAGAIN"] > 0, "the traffic never met the migration"
    assert met["MOVED"] > 0, "the slot's new owner was never learnt from a MOVED"
    traffic.check(daemon, cluster=cluster)
    assert daemon.stop() == 0


def test_a_master_killed_during_traffic_fails_over_to_its_replica(
    on_cluster: OnCluster, tmp_path: Path
) -> None:
    daemon, ids = _start_traffic_daemon(on_cluster, tmp_path, hold_seconds=HOLD_SECONDS)
    cluster = on_cluster.cluster
    tag = f"{{c:{ids['Alpha']}}}"
    master = cluster.master_of(tag)
    try:
        with Traffic(daemon, ["Alpha", "Bravo"]) as traffic:
            wait_for(lambda: traffic.answered_between(0, time.monotonic()) >= 15, 20, "traffic")
            killed = time.monotonic()
            promoted = cluster.fail_over_by_kill(master)
            took_over = time.monotonic()
            wait_for(
                lambda: traffic.answered_between(took_over, time.monotonic()) >= 15, 30, "traffic"
            )
        assert cluster.master_of(tag) == promoted
        assert any(
            call.client == "Alpha"
            and call.auth is not None
            and call.auth.answered_at
            and call.auth.answered_at > took_over
            for call in traffic.calls
        ), "no Alpha call after the failover"
    finally:
        if master not in cluster.processes:
            cluster.restore(master)  # back as a replica: the cluster is whole for what follows
    assert took_over > killed
    resent = [
        call.session
        for call in traffic.calls
        if any(ex is not None and ex.sends > 1 for ex in (call.auth, call.start, call.stop))
    ]
    assert resent, "nothing had to be re-sent: the failover was not in the traffic"
    # A Start whose look-up of its hold met the failover holds the call again under its
    # database id; the authorization's own hold is then released by nobody and lapses
    # after auth_hold_seconds (as after an outage of a single Redis).
    traffic.check(daemon, holds_lapse_within=HOLD_SECONDS + 10, cluster=cluster)
    assert daemon.stop() == 0
