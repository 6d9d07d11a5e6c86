"""Where the server's time goes: py-spy samples while a scenario runs.

Two recorders run at once: ``--gil`` samples only the thread holding the GIL, which is
where the server's Python CPU goes (the GIL is released while a thread waits on a socket);
the other samples every thread, which also shows where requests wait (on Redis, on
PostgreSQL, in the event loop's select). ``py-spy record --format raw`` writes collapsed
stacks (``frame;frame;... count``, root first); ``summarize`` turns them into shares of
samples per function (self time: the leaf frame), per project function (inclusive) and per
component (the innermost frame that belongs to a known library or to our code).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*):(?P<line>\d+)\)$")

# (component, path fragment): the innermost frame matching one names the sample's component
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("pyrad codec", "/pyrad/"),
    ("radiusd codec (our pyrad adapter)", "radiusd/codec.py"),
    ("SQLAlchemy", "/sqlalchemy/"),
    ("psycopg (PostgreSQL driver)", "/psycopg"),
    ("sqlite3", "/sqlite3/"),
    ("redis client", "/redis/"),
    ("structlog / logging", "/structlog/"),
    ("structlog / logging", "/logging/"),
    ("prometheus_client", "/prometheus_client/"),
    ("asyncio event loop", "/asyncio/"),
    ("asyncio event loop", "/selectors.py"),
    ("thread pool hand-off", "/concurrent/futures/"),
    ("thread pool hand-off", "/threading.py"),
    ("billing_core (domain, services)", "billing_core/"),
    ("radiusd (transport, handler)", "radiusd/"),
)
_OURS = ("billing_core/", "radiusd/")


def binary() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


@dataclass(frozen=True)
class Frame:
    function: str
    file: str
    line: int

    def short(self) -> str:
        path = self.file
        for marker in ("site-packages/", "/lib/python3"):
            if marker in path:
                path = path.split(marker, 1)[1]
                if marker.startswith("/lib"):
                    path = path.split("/", 1)[1] if "/" in path else path
        for ours in _OURS:
            if ours in path:
                path = ours + path.split(ours, 1)[1]
        return f"{self.function} ({path}:{self.line})"


def parse_frame(text: str) -> Frame | None:
    match = _FRAME.match(text.strip())
    if match is None:
        return None
    return Frame(match["func"], match["file"], int(match["line"]))


@dataclass
class Profile:
    samples: int = 0
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive_ours: Counter[str] = field(default_factory=Counter)
    components: Counter[str] = field(default_factory=Counter)

    def share(self, count: int) -> float:
        return count / self.samples if self.samples else 0.0


def component(frames: list[Frame]) -> str:
    for frame in reversed(frames):
        for name, fragment in COMPONENTS:
            if fragment in frame.file:
                return name
    return "other (stdlib, interpreter)"


def summarize(path: Path) -> Profile:
    profile = Profile()
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in (parse_frame(part) for part in stack.split(";")) if f is not None]
        if not frames:
            continue
        profile.samples += count
        profile.self_time[frames[-1].short()] += count
        profile.components[component(frames)] += count
        seen: set[str] = set()
        for frame in frames:
            if any(ours in frame.file for ours in _OURS):
                key = f"{frame.function} ({frame.short().rsplit('(', 1)[1].split(':')[0]})"
                if key not in seen:
                    seen.add(key)
                    profile.inclusive_ours[key] += count
    return profile


class Recorder:
    """py-spy attached to a running process (and its workers) for ``seconds``."""

    def __init__(
        self, pid: int, seconds: float, output: Path, *, gil: bool, rate: int = 400
    ) -> None:
        exe = binary()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.output = output
        self.errors = output.with_suffix(".err")
        with self.errors.open("wb") as err:
            self.process = subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--subprocesses",
                    "--rate",
                    str(rate),
                    "--duration",
                    str(max(1, round(seconds))),
                    "--format",
                    "raw",
                    "--full-filenames",
                    "--function",
                    "--nonblocking",
                    *(["--gil"] if gil else []),
                    "--output",
                    str(output),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def wait(self, timeout: float = 60) -> Profile | None:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if not self.output.exists():
            return None
        return summarize(self.output)

    def error(self) -> str:
        try:
            return self.errors.read_text(errors="replace").strip()[-500:]
        except OSError:
            return ""
