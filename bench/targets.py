"""The servers under test: ours (SQLite, PostgreSQL, PostgreSQL + Redis) and FreeRADIUS.

Each target prepares its data, starts on free loopback ports, names the processes whose CPU
counts (``probe_groups``), and stops. Our server is driven only through its public surfaces:
``billingctl db upgrade`` and ``billingctl load`` (or ``rates import``) for data, a TOML
config and ``radiusd serve`` for the daemon. Loaded databases are cached (a SQLite file
under ``bench/out/db/``, a template database on PostgreSQL) keyed by the data set and the
code that shapes the stored data, because loading a million prefixes is the slow part.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from bench import freeradius, startup
from bench.datagen import OUT, DataSet, provisioning_without_rates
from bench.ports import free_port
from bench.procstat import PidList, all_pids, fixed, postgres_pids
from bench.scenarios import EXPECT_FR_SQL, EXPECT_FR_STATIC, EXPECT_OURS

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
SECRET = "testing123"  # noqa: S105 - the NAS secret of a throwaway loopback run
START_TIMEOUT = 600.0
Log = Callable[[str], None]


class TargetError(Exception):
    """A target could not be prepared or started (the report says why)."""


def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    parents: dict[int, list[int]] = {}
    for pid in all_pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _run(args: list[str], log: Log, *, cwd: Path, timeout: float = 1800) -> float:
    """Run a command; its duration in seconds; TargetError with its stderr on failure."""
    log("$ " + " ".join(str(a) for a in args))
    started = time.monotonic()
    result = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise TargetError(f"{' '.join(args[:4])}: {result.stderr.strip() or result.stdout}")
    seconds = time.monotonic() - started
    log(f"  done in {seconds:.1f} s")
    return seconds


# --- data: loaders and databases --------------------------------------------------------------


def data_code_key() -> str:
    """Changes when the schema (migrations, models) or the stored password hash changes.

    Not on every change of the loading code, which would mean a reload of a million
    prefixes after most commits; ``--no-cache`` forces one."""
    digest = hashlib.sha256()
    core = ROOT / "billing_core"
    files = sorted((core / "adapters" / "migrations" / "versions").glob("*.py"))
    files += [core / "adapters" / "sql" / "models.py", core / "domain" / "model.py"]
    for path in files:
        if path.exists():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Loader:
    """How data reaches the database: ``load`` (the YAML names each rates CSV) or
    ``rates-import`` (``load`` of the YAML with empty rate tables, then
    ``billingctl rates import TABLE FILE.csv`` per table)."""

    kind: str = "load"

    def load(self, config: Path, data: DataSet, workdir: Path, log: Log) -> float:
        billingctl = str(BIN / "billingctl")
        seconds = _run([billingctl, "--config", str(config), "db", "upgrade"], log, cwd=workdir)
        if self.kind == "load":
            return seconds + _run(
                [billingctl, "--config", str(config), "load", str(data.provisioning)],
                log,
                cwd=workdir,
            )
        if self.kind != "rates-import":
            raise TargetError(f"unknown loader {self.kind!r} (load or rates-import)")
        seconds += _run(
            [billingctl, "--config", str(config), "load", str(provisioning_without_rates(data))],
            log,
            cwd=workdir,
        )
        for table, csv_path in data.rate_files:
            seconds += _run(
                [billingctl, "--config", str(config), "rates", "import", table, str(csv_path)],
                log,
                cwd=workdir,
            )
        return seconds


# the benchmark's own server key (bench data only: never a production key)
BENCH_KEY = "6265" * 16


def _security(workdir: Path) -> str:
    """[security] with the benchmark's key file (mode 0600), for billingctl and radiusd."""
    path = workdir / "secrets.key"
    path.write_text(BENCH_KEY + "\n")
    path.chmod(0o600)
    return f'\n[security]\nsecrets_key_file = "{path}"\n'


def write_db_config(path: Path, url: str) -> None:
    path.write_text(f'[database]\nurl = "{url}"\n' + _security(path.parent))


@dataclass
class Prepared:
    url: str
    load_seconds: float  # how long billingctl took (when it ran: now or when cached)
    cached: bool


class Database:
    def prepare(self, data: DataSet, workdir: Path, log: Log) -> Prepared:
        raise NotImplementedError

    def drop(self) -> None:
        """Remove what ``prepare`` made for this run (never the cache)."""

    @property
    def kind(self) -> str:
        raise NotImplementedError


class SqliteDatabase(Database):
    def __init__(self, loader: Loader, *, cache: bool) -> None:
        self.loader = loader
        self.cache = cache
        self.path: Path | None = None

    @property
    def kind(self) -> str:
        return "sqlite"

    def prepare(self, data: DataSet, workdir: Path, log: Log) -> Prepared:
        self.path = workdir / f"billing-{data.spec.name}.db"
        url = f"sqlite:///{self.path}"
        key = f"{data.spec.name}-{data.spec.key()}-{data_code_key()}"
        cached = OUT / "db" / f"{key}.sqlite"
        meta = cached.with_suffix(".json")
        if self.cache and cached.exists() and meta.exists():
            shutil.copyfile(cached, self.path)
            return Prepared(url, float(json.loads(meta.read_text())["seconds"]), True)
        config = workdir / f"load-{data.spec.name}.toml"
        write_db_config(config, url)
        seconds = self.loader.load(config, data, workdir, log)
        if self.cache:
            cached.parent.mkdir(parents=True, exist_ok=True)
            for old in cached.parent.glob(f"{data.spec.name}-*.sqlite"):
                old.unlink()  # earlier data sets or schemas
                old.with_suffix(".json").unlink(missing_ok=True)
            shutil.copyfile(self.path, cached)
            meta.write_text(json.dumps({"seconds": seconds, "loader": self.loader.kind}))
        return Prepared(url, seconds, False)

    def drop(self) -> None:
        if self.path is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)


class PostgresServer:
    """The machine's PostgreSQL, reached with an admin URL whose role may CREATE DATABASE."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url)
        if self.admin_url.drivername == "postgresql":
            self.admin_url = self.admin_url.set(drivername="postgresql+psycopg")
        self._engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")

    def url(self, database: str) -> URL:
        return self.admin_url.set(database=database)

    def url_text(self, database: str) -> str:
        return self.url(database).render_as_string(hide_password=False)

    def execute(self, sql: str) -> list[Any]:
        with self._engine.connect() as conn:
            result = conn.execute(text(sql))
            return list(result) if result.returns_rows else []

    def setting(self, name: str) -> str:
        return str(self.execute(f"SHOW {name}")[0][0])

    def version(self) -> str:
        return self.setting("server_version")

    def exists(self, database: str) -> bool:
        return bool(self.execute(f"SELECT 1 FROM pg_database WHERE datname = '{database}'"))

    def create(self, database: str, template: str | None = None) -> None:
        clause = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
        self.execute(f'CREATE DATABASE "{database}"{clause}')

    def drop(self, database: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def close(self) -> None:
        self._engine.dispose()


class PostgresDatabase(Database):
    def __init__(self, server: PostgresServer, name: str, loader: Loader, *, cache: bool) -> None:
        self.server = server
        self.name = name
        self.loader = loader
        self.cache = cache

    @property
    def kind(self) -> str:
        return "postgresql"

    def prepare(self, data: DataSet, workdir: Path, log: Log) -> Prepared:
        key = f"{data.spec.name}_{data.spec.key()}_{data_code_key()}"
        template = f"bench_cache_{key}"
        url = self.server.url_text(self.name)
        self.server.drop(self.name)
        meta = OUT / "db" / f"pg-{key}.json"
        if self.cache and self.server.exists(template) and meta.exists():
            log(f"cloning the cached database {template}")
            self.server.create(self.name, template)
            return Prepared(url, float(json.loads(meta.read_text())["seconds"]), True)
        self.server.create(self.name)
        config = workdir / f"load-{self.name}.toml"
        write_db_config(config, url)
        seconds = self.loader.load(config, data, workdir, log)
        if self.cache:
            for (old,) in self.server.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE "
                f"'bench\\_cache\\_{data.spec.name}\\_%'"
            ):
                self.server.drop(str(old))  # earlier data sets or schemas
            self.server.create(template, self.name)
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_text(json.dumps({"seconds": seconds, "loader": self.loader.kind}))
        return Prepared(url, seconds, False)

    def drop(self) -> None:
        self.server.drop(self.name)


# --- targets ------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    label: str
    expect: dict[int, int]
    workdir: Path
    log: Log
    auth_port: int = 0
    acct_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        return (("127.0.0.1", self.auth_port), ("127.0.0.1", self.acct_port))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def probe_groups(self) -> dict[str, PidList]:
        root = self.pid
        return {"server": lambda: descendants(root)}

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        """Remove databases made for this target."""

    def _wait(self, logfile: Path, ready: Callable[[str], bool], what: str) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise TargetError(f"{what} exited at start:\n{_tail(logfile)}")
            if ready(logfile.read_text(errors="replace") if logfile.exists() else ""):
                return
            time.sleep(0.1)
        self.stop()
        raise TargetError(f"{what} did not start within {START_TIMEOUT:.0f} s:\n{_tail(logfile)}")


class OurServer(Target):
    def __init__(
        self,
        name: str,
        label: str,
        workdir: Path,
        log: Log,
        database: Database,
        data: DataSet,
        redis_url: str = "",
        workers: int = 1,
        *,
        redis_cluster: bool = False,
        flush_redis: bool = True,
    ) -> None:
        super().__init__(name, label, EXPECT_OURS, workdir, log)
        self.database = database
        self.data = data
        self.redis_url = redis_url
        self.redis_cluster = redis_cluster
        self.flush_redis = flush_redis  # False: a further node of a deployment already started
        self.workers = workers
        self.prepared: Prepared | None = None
        self.started_seconds = 0.0
        self.rebuild_seconds = 0.0
        self.first_start_seconds = 0.0  # start_measured: launch to the first Access-Accept
        self.restart_seconds = 0.0
        self._launched = 0.0
        self.config = workdir / "radiusd.toml"
        self.logfile = workdir / "radiusd.log"

    def prepare(self) -> Prepared:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prepared = self.database.prepare(self.data, self.workdir, self.log)
        return self.prepared

    def write_config(self) -> None:
        assert self.prepared is not None
        self.auth_port, self.acct_port = free_port(), free_port()
        metrics = free_port(socket.SOCK_STREAM)
        self.config.write_text(
            f"""# generated by bench/targets.py
[server]
auth_listen = "127.0.0.1:{self.auth_port}"
acct_listen = "127.0.0.1:{self.acct_port}"
metrics_listen = "127.0.0.1:{metrics}"
log_format = "json"
workers = {self.workers}

[database]
url = "{self.prepared.url}"

[redis]
url = "{self.redis_url}"
{"cluster = true" if self.redis_cluster else ""}
{_security(self.workdir)}

[[nas]]
address = "127.0.0.1"
secret = "{SECRET}"
"""
        )

    def start(self) -> None:
        self.launch()
        self.wait_started()

    def start_measured(self) -> None:
        """Start twice, as an operator's first start after the load and a restart, each time
        with Redis emptied and not rebuilt (the lazy path: clients load on first use), timed
        from the launch to the first correct Access-Accept (``first_start_seconds``,
        ``restart_seconds``); then, with Redis, rebuild it (``billingctl live rebuild``,
        with the daemon running) for the steady state the scenarios measure."""
        call = startup.start_call(self.data.manifest)
        timings = []
        for attempt in range(2):
            if attempt:
                self.stop()
            self.launch(rebuild=False)
            assert self.process is not None
            try:
                _first, every = startup.first_accept(
                    ("127.0.0.1", self.auth_port),
                    SECRET.encode(),
                    call,
                    timeout=START_TIMEOUT,
                    alive=self.process,
                    workers=self.workers,
                )
            except startup.NoAccept as exc:
                self.stop()
                raise TargetError(f"radiusd serve: {exc}:\n{_tail(self.logfile)}") from None
            timings.append(every - self._launched)
            self.wait_started()
        self.first_start_seconds, self.restart_seconds = timings
        if self.redis_url and self.flush_redis:
            self.rebuild_seconds = self.rebuild_live()

    def rebuild_live(self) -> float:
        return _run(
            [str(BIN / "billingctl"), "--config", str(self.config), "live", "rebuild"],
            self.log,
            cwd=self.workdir,
        )

    def launch(self, *, rebuild: bool = True) -> None:
        """Start the daemon without waiting for it (``wait_started``); with Redis (and
        ``flush_redis``) emptied first and, with ``rebuild``, rebuilt."""
        if self.prepared is None:
            self.prepare()
        self.write_config()
        if self.redis_url and self.flush_redis:
            _flush_redis(self.redis_url, cluster=self.redis_cluster)
        if self.redis_url and self.flush_redis and rebuild:
            # the steady state a carrier runs in: Redis holds every client (it outlives a
            # node's restart). The daemon loads a missing client on its first request, so
            # without this the measured window would time those loads, not the hot path
            self.rebuild_seconds = self.rebuild_live()
        self.logfile.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADIUSD_")}
        self._launched = time.monotonic()
        with self.logfile.open("ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "radiusd"), "serve", "--config", str(self.config)],
                cwd=self.workdir,
                env=env,
                stdout=out,
                stderr=out,
            )

    def wait_started(self) -> None:
        need = self.workers
        self._wait(self.logfile, lambda t: t.count('"event": "started"') >= need, "radiusd serve")
        self.started_seconds = time.monotonic() - self._launched

    def probe_groups(self) -> dict[str, PidList]:
        groups = super().probe_groups()
        if isinstance(self.database, PostgresDatabase):
            groups["postgresql"] = postgres_pids(self.database.name)
        if self.redis_url:
            groups["redis"] = redis_pids(self.redis_url, cluster=self.redis_cluster)
        return groups

    def cleanup(self) -> None:
        self.database.drop()


class OurNodes(Target):
    """Several daemons of our server on one PostgreSQL database and one Redis (or Redis
    Cluster): a carrier's RADIUS hosts behind switches that list them all (issue 12).

    ``addresses`` has ``slots`` (auth, acct) pairs, slot ``i`` served by node ``i % nodes``,
    so a pool whose steps name two nodes runs unchanged against one node (every step to
    it) or two. Before the first node starts, Redis is emptied and rebuilt from the
    database (``billingctl live rebuild``); the others join."""

    def __init__(
        self,
        name: str,
        label: str,
        workdir: Path,
        log: Log,
        database: Database,
        data: DataSet,
        redis_url: str,
        *,
        nodes: int,
        workers: int,
        slots: int,
        redis_cluster: bool = False,
        redis_pids: PidList | None = None,
    ) -> None:
        super().__init__(name, label, EXPECT_OURS, workdir, log)
        self.database = database
        self.slots = slots
        self.redis_pids = redis_pids  # every Redis server's (default: found from the URL)
        self.nodes = [
            OurServer(
                f"{name}-{i}",
                f"{label}, node {i + 1}",
                workdir / f"node{i + 1}",
                log,
                database,
                data,
                redis_url=redis_url,
                workers=workers,
                redis_cluster=redis_cluster,
                flush_redis=i == 0,
            )
            for i in range(nodes)
        ]
        self.prepared: Prepared | None = None

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        out: list[tuple[str, int]] = []
        for slot in range(self.slots):
            out.extend(self.nodes[slot % len(self.nodes)].addresses)
        return tuple(out)

    @property
    def config(self) -> Path:
        """The first node's config file (billingctl reads the same database and Redis)."""
        return self.nodes[0].config

    def prepare(self) -> Prepared:
        self.prepared = self.nodes[0].prepare()
        for node in self.nodes[1:]:
            node.workdir.mkdir(parents=True, exist_ok=True)
            node.prepared = self.prepared
        return self.prepared

    def start(self) -> None:
        """Every node at once, as a carrier's hosts come up (Redis emptied and rebuilt before
        the first one starts)."""
        if self.prepared is None:
            self.prepare()
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_started()
        self.process = self.nodes[0].process

    @property
    def rebuild_seconds(self) -> float:
        return self.nodes[0].rebuild_seconds

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.process = None

    def running(self) -> bool:
        return all(n.process is not None and n.process.poll() is None for n in self.nodes)

    def probe_groups(self) -> dict[str, PidList]:
        roots = [node.pid for node in self.nodes]
        groups = self.nodes[0].probe_groups()
        groups["server"] = lambda: [pid for root in roots for pid in descendants(root)]
        if self.redis_pids is not None:
            groups["redis"] = self.redis_pids
        return groups

    def cleanup(self) -> None:
        self.database.drop()


class FreeRadius(Target):
    def __init__(
        self,
        name: str,
        label: str,
        workdir: Path,
        log: Log,
        expect: dict[int, int],
        writer: Callable[[Path, int, int], None],
    ) -> None:
        super().__init__(name, label, expect, workdir, log)
        self.writer = writer
        self.output = workdir / "freeradius.out"

    def start(self) -> None:
        missing = freeradius.available()
        if missing is not None:
            raise TargetError(missing)
        self.auth_port, self.acct_port = free_port(), free_port()
        self.writer(self.workdir, self.auth_port, self.acct_port)
        self.output.unlink(missing_ok=True)
        with self.output.open("ab") as out:
            self.process = subprocess.Popen(
                [freeradius.binary(), "-f", "-d", str(self.workdir), "-l", "stdout"],
                cwd=self.workdir,
                stdout=out,
                stderr=out,
            )
        self._wait(self.output, lambda t: "Ready to process requests" in t, "freeradius")


def static_freeradius(workdir: Path, log: Log) -> FreeRadius:
    def write(directory: Path, auth: int, acct: int) -> None:
        freeradius.write_static(directory, auth, acct, SECRET)

    return FreeRadius(
        "fr-static", "FreeRADIUS, static users file", workdir, log, EXPECT_FR_STATIC, write
    )


class SqlFreeRadius(FreeRadius):
    """FreeRADIUS + rlm_sql on a throwaway database of the machine's PostgreSQL."""

    def __init__(
        self, workdir: Path, log: Log, server: PostgresServer, database: str, data: DataSet
    ) -> None:
        url = server.url(database)

        def write(directory: Path, auth: int, acct: int) -> None:
            freeradius.write_sql(
                directory,
                auth,
                acct,
                SECRET,
                pg_host=url.host or "127.0.0.1",
                pg_port=url.port or 5432,
                pg_user=url.username or "postgres",
                pg_password=url.password or "",
                database=database,
            )

        super().__init__(
            "fr-sql", "FreeRADIUS + rlm_sql (PostgreSQL)", workdir, log, EXPECT_FR_SQL, write
        )
        self.server = server
        self.database = database
        self.data = data

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.server.drop(self.database)
        self.server.create(self.database)
        import psycopg

        check, reply = freeradius.radcheck_copy(self.data.manifest)
        conninfo = self.server.url(self.database).set(drivername="postgresql")
        with psycopg.connect(conninfo.render_as_string(hide_password=False)) as conn:
            conn.execute(freeradius.SCHEMA.read_text())
            with conn.cursor() as cur:
                with cur.copy("COPY radcheck (username, attribute, op, value) FROM STDIN") as cp:
                    cp.write(check)
                with cur.copy("COPY radreply (username, attribute, op, value) FROM STDIN") as cp:
                    cp.write(reply)
            conn.execute("ANALYZE")
        super().start()

    def probe_groups(self) -> dict[str, PidList]:
        groups = super().probe_groups()
        groups["postgresql"] = postgres_pids(self.database)
        return groups

    def cleanup(self) -> None:
        self.server.drop(self.database)


# --- Redis ------------------------------------------------------------------------------------


def _flush_redis(url: str, *, cluster: bool = False) -> None:
    """Empty the benchmark's Redis database (every master of a cluster): the live state
    must match the fresh database."""
    import redis
    from redis.cluster import RedisCluster

    try:
        if cluster:
            nodes = RedisCluster.from_url(url)
            try:
                nodes.flushall(target_nodes=RedisCluster.PRIMARIES)
            finally:
                nodes.close()
            return
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()
        finally:
            client.close()
    except redis.RedisError as exc:
        raise TargetError(f"Redis at {url}: {exc}") from None


def redis_pids(url: str, *, cluster: bool = False) -> PidList:
    """The Redis server's pid, or every node's of the cluster that ``url`` names a seed of."""
    if not cluster:
        pid = redis_pid(url)
        return fixed(*([] if pid is None else [pid]))
    from redis.cluster import RedisCluster

    pids: list[int] = []
    nodes = RedisCluster.from_url(url)
    try:
        for node in nodes.get_nodes():  # type: ignore[no-untyped-call]
            found = redis_pid(f"redis://{node.host}:{node.port}/0")
            if found is not None:
                pids.append(found)
    finally:
        nodes.close()
    return fixed(*pids)


def _redis_server_info(url: str, field: str) -> str | None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server")[field])
    except Exception:  # noqa: BLE001 - no answer: nothing to report
        return None
    finally:
        client.close()


def redis_pid(url: str) -> int | None:
    found = _redis_server_info(url, "process_id")
    return None if found is None else int(found)


def redis_version(url: str) -> str | None:
    return _redis_server_info(url, "redis_version")
