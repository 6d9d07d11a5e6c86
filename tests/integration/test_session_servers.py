"""The test session's servers: the ones named by RADIUSD_TEST_POSTGRES_URL /
RADIUSD_TEST_REDIS_URL, else its own throwaway ones (nothing has to run on the machine)."""

from __future__ import annotations

import os

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_URL_VAR, REDIS_URL_VAR, worker_database


def test_each_test_database_is_on_the_given_or_the_sessions_own_postgresql(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            data_directory = conn.execute(text("SHOW data_directory")).scalar_one()
            port = int(conn.execute(text("SHOW port")).scalar_one())
    finally:
        engine.dispose()
    assert port == make_url(pg_url).port
    given = os.environ.get(POSTGRES_URL_VAR)
    if given:
        assert port == (make_url(given).port or 5432)
    else:  # tests/servers.py's PrivatePostgres: a temporary directory, a free port
        assert "/radiusd-pg-" in data_directory, data_directory


def test_redis_is_the_given_or_the_sessions_own_server(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        directory = str(client.config_get("dir")["dir"])
        port = int(str(client.config_get("port")["port"]))
    finally:
        client.close()
    given = os.environ.get(REDIS_URL_VAR)
    if given:
        assert redis_url == worker_database(given)
    else:
        assert "/radiusd-redis-" in directory, directory
        assert port != 6379
