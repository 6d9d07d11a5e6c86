"""`python -m bench --only load`: how long `billingctl load` takes (issue 19), never cached.

The clients and accounts of the big data set (10,000 clients, 100,000 accounts, a payment
each; the rate tables left empty: their million prefixes are `rates import`'s measure) as
YAML and as the same document in JSON, and 10,000 clients with one login each; each loaded
into a fresh SQLite file and a fresh PostgreSQL database, then loaded again (the idempotent
second load, which changes nothing). Wall-clock seconds of the `billingctl` process, as an
operator would see them; the user CPU seconds beside them show what the machine's noise
added.
"""

from __future__ import annotations

import json
import resource
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench import datagen
from bench.targets import BIN, PostgresServer, write_db_config

LOGINS = datagen.DataSpec("logins", clients=10_000, accounts=10_000, prefixes=100, tables=1)
#: the issue's targets for the big file's clients and accounts
TARGET_SECONDS = {"postgresql": 20.0, "sqlite": 30.0}


@dataclass(frozen=True)
class LoadTiming:
    file: str  # what was loaded
    database: str  # sqlite | postgresql
    first: float  # seconds, into an empty database
    first_cpu: float
    second: float  # seconds, the same file again
    second_cpu: float


def files() -> list[tuple[str, Path]]:
    """(label, path) of the files loaded: the big set's clients as YAML and JSON, and the
    one-login-each set's."""
    big = datagen.generate(datagen.BIG)
    yaml_path = datagen.provisioning_without_rates(big)
    json_path = yaml_path.with_suffix(".json")
    if not json_path.exists():
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        document = yaml.load(yaml_path.read_text(), Loader=loader)  # noqa: S506 - a safe loader
        json_path.write_text(json.dumps(document))
    logins = datagen.provisioning_without_rates(datagen.generate(LOGINS))
    return [
        ("10,000 clients, 100,000 accounts (YAML)", yaml_path),
        ("10,000 clients, 100,000 accounts (JSON)", json_path),
        ("10,000 clients, one login each (YAML)", logins),
    ]


def _timed(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and user CPU seconds of one command (which must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    started = time.monotonic()
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[3:])}: {result.stderr.strip() or result.stdout}")
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before


def measure(
    pg: PostgresServer | None, workdir: Path, log: Callable[[str], None]
) -> list[LoadTiming]:
    billingctl = str(BIN / "billingctl")
    timings: list[LoadTiming] = []
    for label, path in files():
        for database in ("sqlite", "postgresql"):
            if database == "postgresql" and pg is None:
                continue
            config = workdir / f"load-{database}.toml"
            if database == "sqlite":
                db = workdir / "load.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                write_db_config(config, f"sqlite:///{db}")
            else:
                assert pg is not None
                pg.drop("bench_load")
                pg.create("bench_load")
                write_db_config(config, pg.url_text("bench_load"))
            base = [billingctl, "--config", str(config)]
            _timed([*base, "db", "upgrade"], workdir)
            first = _timed([*base, "load", str(path)], workdir)
            second = _timed([*base, "load", str(path)], workdir)
            log(f"load {label} on {database}: {first[0]:.1f} s, again {second[0]:.1f} s")
            timings.append(LoadTiming(label, database, *first, *second))
    if pg is not None:
        pg.drop("bench_load")
    return timings


def render(timings: list[LoadTiming], header: str) -> str:
    lines = [
        "## billingctl load (issue 19)",
        "",
        header,
        "",
        "| file | database | first load s (user CPU s) | second load, nothing changes s "
        "(user CPU s) | target (issue 19) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in timings:
        target = ""
        if "100,000" in t.file:
            target = f"< {TARGET_SECONDS[t.database]:.0f} s: " + (
                "met" if t.first < TARGET_SECONDS[t.database] else "NOT met"
            )
        lines.append(
            f"| {t.file} | {t.database} | {t.first:.1f} ({t.first_cpu:.1f}) "
            f"| {t.second:.1f} ({t.second_cpu:.1f}) | {target} |"
        )
    return "\n".join(lines) + "\n"
