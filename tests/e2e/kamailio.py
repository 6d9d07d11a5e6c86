"""Debian's Kamailio on a free loopback port, running the shipped contrib/kamailio/kamailio.cfg
with the tests' ports and paths (its #!define values, given with -A), and radcli files
generated beside it. Reusable: ``KamailioOptions`` chooses what the config does."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.ports import free_port

from .conftest import SECRET
from .sipua import Caller

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "kamailio"


@dataclass(frozen=True)
class KamailioOptions:
    """What the generated setup does.

    ``radius_auth``: challenge every INVITE (407) and authorize it with auth_radius (the
    grant then ends the dialog); False: bill from accounting alone. ``rad_time_mode`` 1:
    Event-Timestamp as a string with microseconds. ``auth_ports``/``acct_ports``: the
    servers radcli tries in order (a failover goes to the next)."""

    auth_ports: tuple[int, ...]
    acct_ports: tuple[int, ...]
    radius_auth: bool = True
    rad_time_mode: int = 0
    radius_timeout: int = 2
    radius_retries: int = 1
    secret: str = SECRET
    defines: tuple[str, ...] = field(default_factory=tuple)  # more -A values


class Kamailio:
    def __init__(self, workdir: Path, options: KamailioOptions) -> None:
        self.workdir = workdir
        self.options = options
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "kamailio.log"

    def write_radcli(self) -> Path:
        o = self.options
        (self.workdir / "servers").write_text(f"127.0.0.1\t{o.secret}\n")
        self.workdir.joinpath("servers").chmod(0o600)
        dictionary = (CONTRIB / "dictionary").read_text()
        if o.rad_time_mode == 1:
            dictionary = dictionary.replace(
                "ATTRIBUTE\tEvent-Timestamp\t\t55\tinteger",
                "ATTRIBUTE\tEvent-Timestamp\t\t55\tstring",
            )
            assert "55\tstring" in dictionary
        (self.workdir / "dictionary").write_text(dictionary)
        conf = self.workdir / "radiusclient.conf"
        # one line per server (radcli takes one host a line), tried in order
        servers = "".join(f"authserver\t127.0.0.1:{p}\n" for p in o.auth_ports)
        servers += "".join(f"acctserver\t127.0.0.1:{p}\n" for p in o.acct_ports)
        conf.write_text(
            servers + f"servers\t{self.workdir / 'servers'}\n"
            f"dictionary\t{self.workdir / 'dictionary'}\n"
            f"radius_timeout\t{o.radius_timeout}\n"
            f"radius_retries\t{o.radius_retries}\n"
            "radius_deadtime\t0\n"
            "bindaddr\t*\n"
        )
        return conf

    def command(self) -> list[str]:
        o = self.options
        defines = [
            f"LISTEN=udp:127.0.0.1:{self.port}",
            f'RADCLI_CONF="{self.write_radcli()}"',
            f"RAD_TIME_MODE={o.rad_time_mode}",
            *o.defines,
        ]
        if not o.radius_auth:
            defines.append("NO_RADIUS_AUTH")
        modules = sorted(Path("/usr/lib").glob("*/kamailio/modules"))
        if modules:  # Debian's multiarch directory
            defines.append(f'MPATH="{modules[0]}/"')
        binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
        cmd = [binary, "-f", str(CONTRIB / "kamailio.cfg"), "-DD", "-E", "-m", "32", "-M", "8"]
        cmd += ["-P", str(self.workdir / "kamailio.pid"), "-Y", str(self.workdir)]
        for define in defines:
            cmd += ["-A", define]
        return cmd

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(), cwd=self.workdir, stdout=log, stderr=log, start_new_session=True
        )
        probe = Caller(("127.0.0.1", self.port), "probe")
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"kamailio exited early:\n{self.log()}")
                if probe.options(timeout=0.3):
                    return
            raise AssertionError(f"kamailio did not answer:\n{self.log()}")
        finally:
            probe.close()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
