"""`radiusd serve` and `radiusd check-config`."""

from __future__ import annotations

import argparse
import os
import sys

from billing_core.config import ConfigError, load_config, render_effective, resolve_config_path
from billing_core.pipes import quiet_broken_pipe
from billing_core.version import VersionAction

from .logging import configure
from .loop import run

TRACE_HELP = (
    "log each step of the decisions on this caller's Access-Requests (a User-Name, "
    "Calling-Station-Id, [[nas]] name or NAS address); SIGUSR1 turns tracing off and on"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radiusd", description="RADIUS authorization and accounting server for VoIP carriers"
    )
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the daemon in the foreground until SIGTERM/SIGINT"),
        ("check-config", "validate the config and print the effective settings (secrets masked)"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument(
            "--config",
            help="config file (default: $RADIUSD_CONFIG, else config/radiusd.toml, "
            "else the packaged default)",
        )
        if name == "serve":
            cmd.add_argument("--trace", metavar="USER_OR_NAS", help=TRACE_HELP)
    return parser


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_path = resolve_config_path(args.config, os.environ)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"radiusd: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(render_effective(config), end="")
        return 0
    configure(config.server.log_format, config.server.log_level)
    try:
        if config.server.workers > 1:
            from .supervisor import run_workers

            return run_workers(config, config_path, args.trace)
        from .app import serve

        return run(serve(config, config_path, trace=args.trace))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # noqa: BLE001 - one line naming the problem, never a traceback
        from .app import start_failure

        print(f"radiusd: {start_failure(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
