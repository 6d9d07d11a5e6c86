"""The catalog a worker builds at start: seconds and extra memory (run in its own process).

`python -m bench.indexbuild DATABASE_URL` loads the catalog as the daemon does
(``SqlStore(engine).load_catalog()``: clients, accounts, every rate table indexed in a
``RateTableIndex``, from the rows) and prints one JSON object: the whole load's seconds, the
seconds spent inside ``RateTableIndex`` construction (timed by wrapping the name
``sql/catalog.py`` calls), the number of rates, and the process's resident memory before,
after (retained) and at peak; then the seconds of a load from the rate index snapshots
(``snapshot_seconds``: a restart's).
"""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any

from bench.procstat import status_kb


def measure(url: str) -> dict[str, Any]:
    from billing_core.adapters.sql import catalog as sql_store
    from billing_core.adapters.sql.db import make_engine
    from billing_core.adapters.sql.store import SqlStore

    engine = make_engine(url)
    store = SqlStore(engine)
    store.rate_snapshots = False  # from the rows, as a first start after a rates change
    store.catalog_version()  # connect first: the connection is not the catalog's memory
    name = "RateTableIndex"  # the name load_catalog calls: wrapped to time it
    original = getattr(sql_store, name)
    index_seconds: list[float] = []

    def timed(rates: Any) -> Any:
        started = time.perf_counter()
        index = original(rates)
        index_seconds.append(time.perf_counter() - started)
        return index

    setattr(sql_store, name, timed)
    gc.collect()
    before = status_kb_or_zero("VmRSS")
    started = time.perf_counter()
    catalog = store.load_catalog()
    seconds = time.perf_counter() - started
    gc.collect()
    after = status_kb_or_zero("VmRSS")
    peak = status_kb_or_zero("VmHWM")
    rates = sum(getattr(t, "size", 0) for t in catalog.rate_tables.values())
    tables, clients = len(catalog.rate_tables), len(catalog.clients)
    del catalog
    store.rate_snapshots = True  # then from the snapshots (written first if missing), a restart
    store.load_catalog()
    started = time.perf_counter()
    store.load_catalog()
    snapshot_seconds = time.perf_counter() - started
    engine.dispose()
    return {
        "seconds": seconds,
        "index_seconds": sum(index_seconds),
        "snapshot_seconds": snapshot_seconds,
        "tables": tables,
        "rates": rates,
        "clients": clients,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "rss_peak_kb": peak,
    }


def status_kb_or_zero(key: str) -> int:
    import os

    return status_kb(os.getpid(), key) or 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.indexbuild DATABASE_URL", file=sys.stderr)
        return 2
    print(json.dumps(measure(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
