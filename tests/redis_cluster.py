"""A real Redis Cluster on loopback for tests (and bench/): 3 masters and 3 replicas.

Each node is a ``redis-server --cluster-enabled yes`` in the foreground, in a directory of
its own under one temporary root, on a free port whose cluster bus port (+10000) is free
too; ``redis-cli --cluster create`` joins them and gives each master a replica. Readiness
is read from the nodes (``cluster_state:ok`` on every one, the same slot map everywhere),
never waited for by sleeping. ``destroy`` kills every node and removes the root.

The helpers drive what a test needs: the master and replica that serve a key's slot, a
SIGKILL of a node and the wait for its replica to take over, and a slot moved to another
master the way ``redis-cli --cluster reshard`` does it (SETSLOT IMPORTING / MIGRATING,
MIGRATE of its keys, SETSLOT NODE).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

NODE_TIMEOUT_MS = 2000


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    """The first port the kernel hands out for an outgoing connection or a bind to port 0."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_cluster_ports(count: int) -> list[int]:
    """``count`` ports free on loopback whose cluster bus ports (+10000) are free too, both
    below the ephemeral range: a port free when checked there could be taken by any
    outgoing connection of the test session before redis-server binds it (seen in CI: a
    node that never came up, its bus port taken)."""
    chosen: list[int] = []
    rng = random.Random()
    high = max(_ephemeral_low() - 10000, 11000)
    while len(chosen) < count:
        port = rng.randrange(10000, high)
        if port not in chosen and _free(port) and _free(port + 10000):
            chosen.append(port)
    return chosen


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns a true value (which is returned), up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            result = check()
            if result:
                return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def command(node: redis.Redis, *args: Any) -> Any:
    """A raw command (CLUSTER ..., MIGRATE) to one node."""
    return node.execute_command(*args)  # type: ignore[no-untyped-call]


class LocalCluster:
    """A Redis Cluster of ``masters`` masters, each with ``replicas`` replicas."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        for binary in ("redis-server", "redis-cli"):
            if shutil.which(binary) is None:
                raise AssertionError(f"{binary} is missing (Debian: apt-get install redis-server)")
        self.masters = masters
        self.replicas = replicas
        self.ports = free_cluster_ports(masters * (1 + replicas))
        self.root = Path(tempfile.mkdtemp(prefix="radiusd-cluster-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    # --- life ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The seed node's URL, as ``[redis] url`` names it with ``cluster = true``."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        create = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if create.returncode != 0:
            raise AssertionError(f"redis-cli --cluster create failed:\n{create.stdout.decode()}")
        self.wait_ok()
        for port in self.replica_ports():
            self._wait_synced(port, 30)

    def start_node(self, port: int) -> None:
        """Start (or start again, with its nodes.conf: it rejoins) the node on ``port``."""
        home = self.root / str(port)
        home.mkdir(exist_ok=True)
        log = (home / "redis.log").open("ab")
        self.processes[port] = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--save",
                "",
                "--appendonly",
                "no",
                "--repl-diskless-sync-delay",  # a replica syncs at once, not 5 s later
                "0",
                "--daemonize",
                "no",
                "--dir",
                str(home),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=home,
        )
        log.close()
        wait_for(lambda: self.node(port).ping(), 10, f"redis-server on {port}")

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (no shutdown, no goodbye to the cluster)."""
        process = self.processes.pop(port)
        process.kill()
        process.wait(timeout=10)

    def destroy(self) -> None:
        for port in list(self.processes):
            self.kill(port)
        shutil.rmtree(self.root, ignore_errors=True)

    # --- state -----------------------------------------------------------------------------
    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)

    def live_ports(self) -> list[int]:
        return [port for port in self.ports if port in self.processes]

    def client(self) -> RedisCluster:
        return RedisCluster(
            host="127.0.0.1",
            port=self.live_ports()[0],
            socket_timeout=2,
            socket_connect_timeout=2,
        )

    def _slot_map(self, port: int) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master port) as the node on ``port`` sees them."""
        slots = command(self.node(port), "CLUSTER", "SLOTS")
        return sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in slots)

    def _ok(self) -> bool:
        ports = self.live_ports()
        for port in ports:
            info = command(self.node(port), "CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
        maps = {tuple(self._slot_map(port)) for port in ports}
        if len(maps) != 1:
            return False
        [slot_map] = maps
        # every slot served, each by a live node
        covered = sum(last - first + 1 for first, last, _ in slot_map)
        return covered == 16384 and all(master in ports for _, _, master in slot_map)

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node says cluster_state:ok and all agree on the slot map."""
        wait_for(self._ok, timeout, "cluster_state:ok on every node")

    def _wait_synced(self, port: int, timeout: float) -> None:
        wait_for(lambda: self._synced(port), timeout, f"replica {port} in sync")

    def _synced(self, port: int) -> bool:
        info = self.node(port).info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def replica_ports(self) -> list[int]:
        return [
            port
            for port in self.live_ports()
            if self.node(port).info("replication")["role"] == "slave"
        ]

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        slot = key_slot(key.encode())
        for first, last, master in self._slot_map(self.live_ports()[0]):
            if first <= slot <= last:
                return master
        raise AssertionError(f"slot {slot} is served by no node")

    def replica_of(self, master: int) -> int:
        for port in self.replica_ports():
            info = self.node(port).info("replication")
            if int(info["master_port"]) == master:
                return port
        raise AssertionError(f"the master on {master} has no replica")

    def node_id(self, port: int) -> str:
        return str(command(self.node(port), "CLUSTER", "MYID").decode())

    def flush(self) -> None:
        """Empty every master (replicas follow)."""
        for port in self.live_ports():
            node = self.node(port)
            if node.info("replication")["role"] == "master":
                node.flushall()

    # --- events ---------------------------------------------------------------------------
    def fail_over_by_kill(self, master: int, timeout: float = 30) -> int:
        """SIGKILL ``master``; wait until its replica serves its slots; the new master's port."""
        replica = self.replica_of(master)
        wait_for(lambda: self._synced(replica), 10, f"replica {replica} in sync")
        self.kill(master)
        wait_for(
            lambda: self.node(replica).info("replication")["role"] == "master", timeout, "failover"
        )
        self.wait_ok(timeout)
        return replica

    def restore(self, port: int, timeout: float = 30) -> None:
        """Start the killed node on ``port`` again: it rejoins as a replica of the master that
        took its place, and the cluster has its replicas back."""
        self.start_node(port)
        wait_for(lambda: self._synced(port), timeout, f"node {port} back as a replica")
        self.wait_ok(timeout)

    def migrate_slot(
        self, key: str, target: int, *, between_keys: Callable[[], None] = lambda: None
    ) -> int:
        """Move ``key``'s slot from its master to the master ``target``, key by key
        (``between_keys`` runs after each MIGRATE), then give the slot to ``target`` on every
        master. The source's port."""
        slot = key_slot(key.encode())
        source = self.master_of(key)
        assert source != target, "the slot is already there"
        src, dst = self.node(source), self.node(target)
        src_id, dst_id = self.node_id(source), self.node_id(target)
        command(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        command(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := command(src, "CLUSTER", "GETKEYSINSLOT", slot, 10):
            for name in keys:
                command(src, "MIGRATE", "127.0.0.1", target, name, 0, 5000)
                between_keys()
        masters = [
            p for p in self.live_ports() if self.node(p).info("replication")["role"] == "master"
        ]
        # the target first, then the source, then the others (as redis-cli does)
        for port in [target, source, *(p for p in masters if p not in (source, target))]:
            command(self.node(port), "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        self.wait_ok()
        return source


@contextlib.contextmanager
def running_cluster(masters: int = 3, replicas: int = 1) -> Iterator[LocalCluster]:
    """A started cluster, destroyed on exit."""
    cluster = LocalCluster(masters, replicas)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
