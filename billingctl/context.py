"""What a command runs against: the config, the database engine, the live state, the cipher
of account secrets and who is acting (for the audit log), looked up once per command.

The one place the console builds its engine and live state from the config (CONTRACT §1:
``--config``, else $RADIUSD_CONFIG, else config/radiusd.toml, read by the daemon's own
loader in billing_core.config; NAS secrets are not read). Heavy modules are imported here
lazily, so that ``billingctl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from billing_core.errors import ConfigFileError

if TYPE_CHECKING:
    from billing_core.config import Config
    from billing_core.ports import LiveState
    from billingctl.adapters.audit import AuditContext


def config(config_arg: str | None) -> Config:
    """The config file, read and validated by the daemon's own loader and rules."""
    from billing_core.config import ConfigError, load_config, resolve_config_path

    try:
        return load_config(resolve_config_path(config_arg, os.environ), resolve_secrets=False)
    except ConfigError as exc:
        raise ConfigFileError(str(exc)) from None


def database_url(config_arg: str | None) -> str:
    """The database URL: $RADIUSD_DATABASE_URL, else [database] url, else the embedded default."""
    return config(config_arg).database.url.reveal()


def redis_url(config_arg: str | None) -> str:
    """The Redis URL of the live state: $RADIUSD_REDIS_URL, else [redis] url; empty: none."""
    return config(config_arg).redis.url.reveal()


def redis_cluster(config_arg: str | None) -> bool:
    """Whether the Redis URL names a node of a Redis Cluster ([redis] cluster)."""
    return config(config_arg).redis.cluster


def mail_enabled(config_arg: str | None) -> bool:
    """Whether low-balance e-mail is on: [smtp] host (or $RADIUSD_SMTP_HOST) not empty."""
    return bool(config(config_arg).smtp.host.strip())


def cipher(args: argparse.Namespace) -> Any:
    """The server key's cipher for account secrets (a keyless one when none is set), from
    the config's [security] section as the daemon reads it."""
    from billing_core.adapters.secretbox import cipher_for

    key = config(args.config).security.secrets_key
    return cipher_for(key.reveal() if key is not None else None)


def engine(args: argparse.Namespace) -> Any:
    """The command's engine (one per run; :func:`dispose` ends it)."""
    made = getattr(args, "_engine", None)
    if made is None:
        from billing_core.adapters.sql.db import make_engine

        made = make_engine(database_url(args.config))
        args._engine = made
    return made


def dispose(args: argparse.Namespace) -> None:
    """Close the command's engine, if it made one."""
    made = getattr(args, "_engine", None)
    if made is not None:
        made.dispose()


def live(args: argparse.Namespace) -> LiveState | None:
    """The daemon's live state when it is kept in Redis (None: the database is the live
    state, which every command already reads and writes)."""
    url = redis_url(args.config)
    if not url:
        return None
    from billingctl.adapters.live_admin import open_live

    return open_live(engine(args), url, cluster=redis_cluster(args.config))


def live_or_database(args: argparse.Namespace) -> LiveState:
    """The live state whichever keeps it: Redis, else the database itself."""
    from billing_core.adapters.sql.store import SqlStore

    return live(args) or SqlStore(engine(args))


def audit(args: argparse.Namespace) -> AuditContext:
    """Who runs which command, for the audit log."""
    from billingctl.adapters.audit import AuditContext

    action = getattr(args, "action", None)
    return AuditContext(f"{args.group} {action}" if action else str(args.group))
