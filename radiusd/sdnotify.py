"""systemd's notify protocol (sd_notify(3)) in a few lines, without a dependency: datagrams
to the AF_UNIX socket named by NOTIFY_SOCKET.

``READY=1`` once the daemon answers, ``STOPPING=1`` when it starts to drain, ``WATCHDOG=1``
every half ``WatchdogSec`` (``WATCHDOG_USEC``) from the event loop itself, so a loop that
hangs stops feeding the watchdog and systemd restarts the service. Without NOTIFY_SOCKET
(not run by systemd) every call does nothing. With workers, the supervisor is the one that
notifies: it takes the variables out of the environment before it starts them.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, MutableMapping


class Notifier:
    def __init__(
        self,
        address: str | None = None,
        watchdog_seconds: float | None = None,
        *,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        self.watchdog_seconds = watchdog_seconds
        self._on_ready = on_ready

    @classmethod
    def from_environ(
        cls, environ: MutableMapping[str, str] | None = None, *, take: bool = False
    ) -> Notifier:
        """From NOTIFY_SOCKET and WATCHDOG_USEC (WATCHDOG_PID, when set, must be ours);
        ``take``: remove them from ``environ`` so that child processes do not notify."""
        env = os.environ if environ is None else environ
        get = env.pop if take else env.get
        address = get("NOTIFY_SOCKET", None) or None
        usec = get("WATCHDOG_USEC", None)
        pid = get("WATCHDOG_PID", None)
        seconds = None
        if usec and usec.isdigit() and int(usec) > 0 and pid in (None, "", str(os.getpid())):
            seconds = int(usec) / 1e6
        return cls(address, seconds)

    def send(self, message: str) -> bool:
        """One datagram; False when there is no socket or it cannot be reached."""
        if not self.address:
            return False
        target = self.address
        if target.startswith("@"):  # an abstract socket
            target = "\0" + target[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(target)
                sock.sendall(message.encode())
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> None:
        if self._on_ready is not None:
            self._on_ready()
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        self.send("STOPPING=1\nSTATUS=draining")

    async def watchdog(self) -> None:
        """WATCHDOG=1 every half WatchdogSec until cancelled (also while draining); nothing
        without a watchdog."""
        if self.watchdog_seconds is None or not self.address:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_seconds / 2)
