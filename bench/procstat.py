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
