"""Rate index snapshots: a rate table's in-memory index as three compact values, stored in
``rate_index_snapshots`` for the ``rates_version`` it was built from.

A daemon that finds the snapshot of a table's current version reads one row instead of
every rate of the table and builds the index from it in a few C loops (a split, an array,
a dict from two lists): a million prefixes in a fraction of a second instead of seconds.
A daemon that built an index from the rows writes its snapshot, so the next start (of any
node: the snapshot is in the shared database) is quick.

The format holds plain data only (UTF-8 text, 32-bit integers, JSON), read without pickle
or marshal, so a row cannot make the reader run anything; a snapshot that does not check
(counts, plan numbers, format) is ignored and the rows are read instead. Never the truth:
the rows are, and a snapshot is trusted only for the exact ``rates_version`` it names.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from billing_core.domain.rating import RateTableIndex

from .tables import rate_snapshots_t

FORMAT = 1  # moves when the layout below changes: other formats are ignored and replaced

_Plan = tuple[str, Decimal, Decimal, int, int, int, datetime, "datetime | None"]
MULTI = -1  # a prefix with several periods: its plan numbers are in the JSON's "multi"


class Snapshot(NamedTuple):
    plans: str
    codes: bytes
    plan_ids: bytes


def encode(index: RateTableIndex) -> Snapshot | None:
    """The index as a snapshot; None when a prefix cannot be stored (a newline in it)."""
    by_code, plans, size = index.parts()
    codes = list(by_code)
    text = "\n".join(codes)
    if text.count("\n") != max(len(codes) - 1, 0) or (len(codes) == 1 and not codes[0]):
        return None
    ids = array("i", (found if isinstance(found, int) else MULTI for found in by_code.values()))
    multi = {code: list(found) for code, found in by_code.items() if not isinstance(found, int)}
    if sys.byteorder != "little":
        ids.byteswap()
    head = {
        "count": len(codes),
        "size": size,
        "plans": [_plan_out(plan) for plan in plans],
        "multi": multi,
    }
    return Snapshot(json.dumps(head, separators=(",", ":")), text.encode(), ids.tobytes())


def decode(snapshot: Snapshot) -> RateTableIndex | None:
    """The index back; None when the snapshot does not check."""
    try:
        head = json.loads(snapshot.plans)
        plans = _plans_in(head["plans"])
        count, size = int(head["count"]), int(head["size"])
        multi = {str(code): tuple(int(i) for i in ids) for code, ids in head["multi"].items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    ids = array("i")
    if len(snapshot.plan_ids) != count * ids.itemsize:
        return None
    ids.frombytes(snapshot.plan_ids)
    if sys.byteorder != "little":
        ids.byteswap()
    try:
        listed = snapshot.codes.decode().split("\n") if count else []
    except UnicodeDecodeError:
        return None
    if len(listed) != count:
        return None
    if count and (min(ids) < MULTI or max(ids) >= len(plans)):
        return None
    if ids.count(MULTI) != len(multi) or set(_multi_codes(listed, ids, len(multi))) != set(multi):
        return None
    if any(not found or not all(0 <= i < len(plans) for i in found) for found in multi.values()):
        return None
    # one int object per plan, shared by its prefixes (as the index built from rows has)
    numbers = [*range(len(plans)), MULTI]  # numbers[MULTI] is MULTI
    by_code: dict[str, int | tuple[int, ...]] = dict(
        zip(listed, map(numbers.__getitem__, ids), strict=True)
    )
    if len(by_code) != count:  # a prefix twice
        return None
    by_code.update(multi)
    return RateTableIndex.restore(by_code, plans, size)


def _plan_out(plan: _Plan) -> list[Any]:
    name, rate, setup, min_volume, interval, grace, start, end = plan
    return [
        name,
        str(rate),
        str(setup),
        min_volume,
        interval,
        grace,
        start.isoformat(),
        end.isoformat() if end is not None else None,
    ]


def _multi_codes(listed: list[str], ids: array[int], count: int) -> list[str]:
    """The prefixes whose plan number is MULTI (``count`` of them: few)."""
    found, at = [], -1
    for _ in range(count):
        at = ids.index(MULTI, at + 1)
        found.append(listed[at])
    return found


def _plans_in(raw_plans: Sequence[Sequence[Any]]) -> list[_Plan]:
    """The plans back, equal amounts and moments shared (a table has few distinct ones)."""
    amounts: dict[str, Decimal] = {}
    moments: dict[str | None, datetime | None] = {None: None}
    plans: list[_Plan] = []
    for name, rate, setup, min_volume, interval, grace, start, end in raw_plans:
        for text in (rate, setup):
            if text not in amounts:
                amounts[text] = Decimal(str(text))
        for moment in (start, end):
            if moment not in moments:
                moments[moment] = _moment(moment)
        if not (type(min_volume) is type(interval) is type(grace) is int):
            raise ValueError("a duration")
        if interval < 1 or min_volume < 0 or grace < 0:
            raise ValueError("a duration")
        effective = moments[start]
        if effective is None:
            raise ValueError("no effective date")
        plans.append(
            (
                str(name),
                amounts[rate],
                amounts[setup],
                min_volume,
                interval,
                grace,
                effective,
                moments[end],
            )
        )
    return plans


def _moment(value: object) -> datetime:
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError("a naive moment")
    return parsed


# --- storage ------------------------------------------------------------------------------


def read(conn: Connection, versions: dict[int, int]) -> dict[int, RateTableIndex]:
    """The snapshots of these tables at these versions (table id -> version) that check."""
    if not versions:
        return {}
    found: dict[int, RateTableIndex] = {}
    rows = conn.execute(
        select(
            rate_snapshots_t.c.rate_table_id,
            rate_snapshots_t.c.rates_version,
            rate_snapshots_t.c.format,
            rate_snapshots_t.c.plans,
            rate_snapshots_t.c.codes,
            rate_snapshots_t.c.plan_ids,
        ).where(rate_snapshots_t.c.rate_table_id.in_(list(versions)))
    )
    for table_id, version, fmt, plans, codes, plan_ids in rows:
        if fmt != FORMAT or versions.get(table_id) != version:
            continue
        index = decode(Snapshot(plans, bytes(codes), bytes(plan_ids)))
        if index is not None:
            found[table_id] = index
    return found


def write(engine: Engine, built: Iterable[tuple[int, int, RateTableIndex]]) -> int:
    """Store the snapshots of indexes built from rows (table id, the version they were read
    at, the index), each replacing an older one; a newer one, or one another process stored
    meanwhile, is left as it is. Each in a transaction of its own; the number written. A
    failure (a read-only database, a lock) writes nothing and is not an error: the next
    start reads the rows again."""
    written = 0
    for table_id, version, index in built:
        snapshot = encode(index)
        if snapshot is None:
            continue
        try:
            with engine.begin() as conn:
                conn.execute(
                    delete(rate_snapshots_t).where(
                        rate_snapshots_t.c.rate_table_id == table_id,
                        rate_snapshots_t.c.rates_version <= version,
                    )
                )
                conn.execute(
                    insert(rate_snapshots_t).values(
                        rate_table_id=table_id,
                        rates_version=version,
                        format=FORMAT,
                        plans=snapshot.plans,
                        codes=snapshot.codes,
                        plan_ids=snapshot.plan_ids,
                    )
                )
            written += 1
        except (IntegrityError, DBAPIError):
            continue
    return written
