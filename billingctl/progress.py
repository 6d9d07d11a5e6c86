"""Progress of long console commands on a terminal: rows done, rate, time left, on stderr.

Drawn only when stderr is a terminal (never in scripts, pipes or logs) and the command's
output is not JSON; one line rewritten in place at most ten times a second and cleared at
the end, so that what stays on the screen is the command's own result. A few lines of our
own instead of a dependency: billingctl's start stays fast and nothing is imported for it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


class Progress:
    """``advance(n)`` as work is done; ``stage(text)`` for a step that cannot be counted."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "rows",
        stream: TextIO | None = None,
        enabled: bool = True,
        interval: float = 0.1,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval = interval
        self.done = 0
        self.started: float | None = None  # the first advance: setup time is not a rate
        self._drawn = float("-inf")
        self._stage = ""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.finish()  # also on an error: its one line starts on a clean line

    def advance(self, count: int = 1) -> None:
        if self.started is None:
            self.started = time.monotonic()
        self.done += count
        if self.enabled and (
            time.monotonic() - self._drawn >= self.interval or self.done == self.total
        ):
            self._draw()

    def stage(self, text: str) -> None:
        self._stage = text
        if self.enabled:
            self._draw()

    def track(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, counted as they are taken (as they are, when nothing is drawn)."""
        if not self.enabled:
            return iter(items)
        return self._tracked(items)

    def _tracked(self, items: Iterable[T]) -> Iterator[T]:
        iterator = iter(items)
        for item in iterator:  # the first at once, so that the line appears
            yield item
            self.advance()
            break
        pending = 0  # then in steps of 1024: a million rows lose no time to counting
        for item in iterator:
            yield item
            pending += 1
            if pending == 1024:
                self.advance(pending)
                pending = 0
        if pending:
            self.advance(pending)

    def finish(self) -> None:
        if self.enabled and self._drawn != float("-inf"):
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def line(self) -> str:
        parts = [f"{self.label}: {self.done:,}"]
        if self.total:
            parts[0] += f"/{self.total:,} {self.unit} ({min(100, 100 * self.done // self.total)}%)"
        else:
            parts[0] += f" {self.unit}"
        elapsed = time.monotonic() - self.started if self.started is not None else 0.0
        if elapsed >= 0.5:  # a rate over less would say little
            rate = self.done / elapsed
            parts.append(f"{rate:,.0f} {self.unit}/s")
            if self.total and rate > 0 and self.done < self.total:
                parts.append(f"{_duration((self.total - self.done) / rate)} left")
            else:
                parts.append(f"{_duration(elapsed)} elapsed")
        if self._stage:
            parts.append(self._stage)
        return ", ".join(parts)

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        self.stream.write("\r" + self.line() + "\x1b[K")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def for_terminal(
    label: str, total: int | None = None, *, unit: str = "rows", json_output: bool = False
) -> Progress:
    """A Progress that draws only on a terminal and never for JSON output."""
    return Progress(label, total, unit=unit, enabled=not json_output and sys.stderr.isatty())


def count_lines(path: str) -> int:
    """Lines in a file, read in blocks (a million-row CSV in a few tens of milliseconds)."""
    lines = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
    return lines
