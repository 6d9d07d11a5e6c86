"""CPU seconds and peak memory of the processes under test, read from /proc.

A ``ProcessProbe`` is given groups of processes ("server", "postgresql", "redis"), each a
function that lists their pids now (PostgreSQL backends come and go). At the start of the
measured window it reads utime+stime of every pid and resets the peak RSS of the "server"
group (``/proc/PID/clear_refs`` = 5); at the end it reads them again and VmHWM. Processes
that appear during the window count from zero; those that vanish are lost (PostgreSQL
backends of the targets live for the whole run, so this is rare).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PidList = Callable[[], list[int]]


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` (all its threads), None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False if not permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\x00", b" ")
            .decode("utf-8", "replace")
        )
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


_PG_AUXILIARY = ("walwriter", "checkpointer", "background writer", "autovacuum", "wal writer")


def postgres_pids(database: str) -> PidList:
    """The backends connected to ``database`` plus the server's WAL writer and checkpointer
    (they do part of every durable commit's work)."""

    def pids() -> list[int]:
        out: list[int] = []
        for pid in all_pids():
            line = cmdline(pid)
            if not line.startswith("postgres: "):
                continue
            words = line.split()
            if f" {database} " in f" {' '.join(words[2:5])} " or any(
                aux in line for aux in _PG_AUXILIARY
            ):
                out.append(pid)
        return out

    return pids


def fixed(*pids: int) -> PidList:
    return lambda: list(pids)


@dataclass
class Reading:
    cpu: dict[str, float] = field(default_factory=dict)  # seconds in the window, per group
    peak_rss_kb: int | None = None  # of the "server" group's first pid
    peak_reset: bool = False


class ProcessProbe:
    def __init__(self, groups: dict[str, PidList]) -> None:
        self.groups = groups
        self._before: dict[str, dict[int, float]] = {}
        self.reading = Reading()

    def start(self) -> None:
        self.reading = Reading()
        self._before = {}
        for name, pids in self.groups.items():
            snapshot: dict[int, float] = {}
            for pid in pids():
                value = cpu_seconds(pid)
                if value is not None:
                    snapshot[pid] = value
            self._before[name] = snapshot
        server = self.groups.get("server")
        if server is not None:
            self.reading.peak_reset = all(reset_peak(pid) for pid in server())

    def stop(self) -> None:
        for name, pids in self.groups.items():
            before = self._before.get(name, {})
            total = 0.0
            for pid in set(pids()) | set(before):
                value = cpu_seconds(pid)
                if value is None:
                    continue
                total += value - before.get(pid, 0.0)
            self.reading.cpu[name] = total
        server = self.groups.get("server")
        if server is not None:
            peaks = [status_kb(pid, "VmHWM") for pid in server()]
            known = [p for p in peaks if p is not None]
            self.reading.peak_rss_kb = sum(known) if known else None


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from the ``cpu`` line of /proc/stat
    (idle and iowait count as not busy)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])  # guest time is already in user
    return total - idle, total


def wait_until_quiet(
    *,
    busy_below: float = 0.15,
    window: float = 1.0,
    timeout: float = 20.0,
    ticks: Callable[[], tuple[int, int]] = machine_ticks,
    sleep: Callable[[float], None] | None = None,
) -> tuple[float, float]:
    """Wait until the whole machine was less than ``busy_below`` busy over ``window``
    seconds (what ran before, PostgreSQL's vacuum and checkpoints after a benchmark's
    writes, would otherwise land in a latency measurement), at most ``timeout`` seconds.
    Returns (seconds waited, the last window's busy share)."""
    import time

    pause = sleep or time.sleep
    waited = 0.0
    busy_share = 1.0
    before = ticks()
    while True:
        pause(window)
        waited += window
        after = ticks()
        elapsed = after[1] - before[1]
        busy_share = (after[0] - before[0]) / elapsed if elapsed > 0 else 0.0
        if busy_share < busy_below or waited >= timeout:
            return waited, busy_share
        before = after
