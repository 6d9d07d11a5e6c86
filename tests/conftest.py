"""Shared fixtures: real PostgreSQL databases (throwaway, per test), Redis and SQLite files.

The servers: ``$RADIUSD_TEST_POSTGRES_URL`` (an admin URL whose role may CREATE DATABASE)
and ``$RADIUSD_TEST_REDIS_URL`` when given; otherwise the session starts its own
PostgreSQL and Redis (tests/servers.py: free loopback ports, temporary directories, the
installed binaries) once, so nothing has to be running on the machine. Each test gets its
own PostgreSQL database, cloned from a template migrated once per session, and dropped
afterwards. A missing server fails the tests that need it: it is never silently skipped.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from billing_core.adapters.redis_connect import SyncRedis, redis_client
from billing_core.adapters.sql.db import make_engine, upgrade
from tests.redis_cluster import LocalCluster, running_cluster

from .servers import PrivatePostgres, PrivateRedis

POSTGRES_URL_VAR = "RADIUSD_TEST_POSTGRES_URL"
REDIS_URL_VAR = "RADIUSD_TEST_REDIS_URL"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first (the real daemon's, and those marked ``slow``), the rest in
    their order: xdist hands tests out in this order, so a long one never starts last and
    holds the run's end while the other workers are idle."""
    items.sort(
        key=lambda item: 0 if "e2e" in item.keywords or item.get_closest_marker("slow") else 1
    )


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """An admin URL of a PostgreSQL server: the given one, else the session's own."""
    given = os.environ.get(POSTGRES_URL_VAR)
    if given:
        yield given
        return
    server = PrivatePostgres()
    try:
        server.init()
        # the session's server holds throwaway databases only: no fsync (the outage tests,
        # which crash servers, start their own with fsync on)
        server.start(durable=False)
        yield server.url()
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """A Redis database URL: the given one, else database 0 of the session's own server."""
    given = os.environ.get(REDIS_URL_VAR)
    if given:
        yield worker_database(given)
        return
    server = PrivateRedis()
    try:
        server.start()
        yield server.url
    finally:
        server.destroy()


def worker_database(url: str) -> str:
    """Under pytest-xdist, worker N flushes database (the URL's + N) of a given Redis, so
    that workers never flush each other's data; else the URL as given."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{base + int(worker[2:])}"))


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """A migrated template database; yields its name."""
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    name = f"radiusd_tmpl_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_admin_url).set(database=name)
    engine = make_engine(url.render_as_string(hide_password=False))
    upgrade(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextmanager
def throwaway_database(admin_url: str, template: str | None = None) -> Iterator[str]:
    """The URL of a new PostgreSQL database (a copy of ``template``, else empty) on the
    server of ``admin_url``, dropped afterwards."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"radiusd_t_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    with throwaway_database(pg_admin_url, pg_template) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database file, made once per session (per xdist worker)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "billing.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection closed: the WAL is checkpointed into the file
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty SQLite database of the test's own (a copy of the template)."""
    path = tmp_path / "billing.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database on each engine."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    """A Redis database emptied before and after the test (real server, never a fake)."""
    import redis

    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    yield redis_server_url
    client.flushdb()
    client.close()


# --- Redis Cluster -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A real Redis Cluster on loopback (3 masters, 3 replicas), one per session."""
    with running_cluster() as cluster:
        yield cluster


@dataclass(frozen=True)
class RedisTarget:
    """The live state's Redis for a test: one server, or a Redis Cluster (``cluster``)."""

    url: str
    cluster: bool
    flush: Callable[[], None]

    def client(self) -> SyncRedis:
        return redis_client(self.url, self.cluster)

    def toml(self) -> str:
        """The ``[redis]`` section of a config naming it."""
        return f'[redis]\nurl = "{self.url}"\ncluster = {"true" if self.cluster else "false"}\n'


@pytest.fixture(params=["single", "cluster"])
def live_redis(request: pytest.FixtureRequest) -> Iterator[RedisTarget]:
    """Each test twice: on one Redis server (its own database), and on a Redis Cluster
    (emptied before and after; restored to cluster_state:ok first)."""
    if request.param == "single":
        url = str(request.getfixturevalue("redis_url"))

        def flush() -> None:
            redis_client(url).flushdb()

        yield RedisTarget(url, False, flush)
        return
    cluster: LocalCluster = request.getfixturevalue("redis_cluster")
    cluster.wait_ok()
    cluster.flush()
    yield RedisTarget(cluster.url, True, cluster.flush)
    cluster.flush()
