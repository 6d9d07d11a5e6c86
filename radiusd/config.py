"""The daemon's configuration: re-exported from :mod:`billing_core.config`.

The schema, the validation and the environment overrides live in ``billing_core.config``
so that ``radiusd`` and ``billingctl`` read the same file by the same rules (billing_core
may not import radiusd). These names stay importable from here."""

from billing_core.config import (
    DEFAULT_CONFIG_PATH,
    PACKAGED_DEFAULT_SOURCE,
    BillingConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    ListenAddress,
    NasConfig,
    RedisConfig,
    Secret,
    SecurityConfig,
    ServerConfig,
    SmtpConfig,
    load_config,
    masked_url,
    parse_config,
    render_effective,
    resolve_config_path,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "PACKAGED_DEFAULT_SOURCE",
    "BillingConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "ListenAddress",
    "NasConfig",
    "RedisConfig",
    "Secret",
    "SecurityConfig",
    "ServerConfig",
    "SmtpConfig",
    "load_config",
    "masked_url",
    "parse_config",
    "render_effective",
    "resolve_config_path",
]
