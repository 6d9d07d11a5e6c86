"""The configuration of ``radiusd`` and ``billingctl``: a TOML file, validated strictly, with
environment overrides. One loader for both commands, so ``billingctl`` refuses exactly the
files the daemon refuses (it lives in billing_core because billing_core may not import
radiusd).

Sources, in order of precedence (highest first):

1. the environment: every scalar key of ``[server]``, ``[database]``, ``[redis]`` and
   ``[billing]`` can be overridden as ``RADIUSD_<SECTION>_<KEY>`` in upper case
   (``RADIUSD_DATABASE_URL``, ``RADIUSD_REDIS_URL``, ``RADIUSD_SERVER_AUTH_LISTEN``,
   ``RADIUSD_BILLING_MAX_CALL_LENGTH`` ...).  The string is parsed according to the key's
   type (whole numbers, decimals, booleans as true/false/1/0/yes/no); an invalid value is
   an error naming the variable.  A ``RADIUSD_`` variable that matches no key is ignored;
   ``RADIUSD_CONFIG`` is never an override: it names the configuration file
   (see :func:`resolve_config_path`).
   ``[[nas]]`` entries CANNOT be overridden or added from the environment (they are a list,
   not scalars); a NAS secret may however be read from a variable with ``secret_env``.
2. the file (``--config PATH``, else ``$RADIUSD_CONFIG``, else ``config/radiusd.toml`` in
   the working directory, else the default packaged as ``radiusd.defaults/radiusd.toml``);
3. the built-in defaults: a missing section or key takes its default.

Unknown sections and keys, values of the wrong type (a string where a number is needed;
a boolean is not a number) and values out of range raise :class:`ConfigError` whose text is
one line naming the key (``server.auth_listen: expected host:port, got '1812'``).
``[[nas]]`` entries are numbered from 0 in messages (``nas[0]`` is the first entry).
A secret's value (NAS secrets, database and Redis URLs) never appears in an error message,
in a ``repr`` or in :func:`render_effective`.
"""

from __future__ import annotations

import builtins
import ipaddress
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Final, Literal, TypeVar

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
    "load_config",
    "masked_url",
    "parse_config",
    "render_effective",
    "resolve_config_path",
]

DEFAULT_CONFIG_PATH: Final = Path("config/radiusd.toml")
PACKAGED_DEFAULT_SOURCE: Final = "<packaged default>"
CONFIG_ENV_VAR: Final = "RADIUSD_CONFIG"
ENV_PREFIX: Final = "RADIUSD_"

DEFAULT_DATABASE_URL: Final = "sqlite:///var/billing.db"

LogFormat = Literal["auto", "json", "console"]
BillLeg = Literal["originate", "answer", "any"]
Dialect = Literal["cisco", "kamailio", "opensips", "sippy"]
ZeroDurationStop = Literal["retry", "final"]
# per dialect: the defaults of zero_duration_stop and strip_realm (CONTRACT §7)
DIALECT_DEFAULTS: Final[Mapping[str, tuple[ZeroDurationStop, bool]]] = {
    "cisco": ("retry", False),
    "sippy": ("retry", False),
    "kamailio": ("final", True),
    "opensips": ("final", True),
}
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_T = TypeVar("_T")


class ConfigError(Exception):
    """An invalid configuration; ``str(error)`` is one line naming the key or variable."""


class Secret:
    """A secret string whose ``str``/``repr`` never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """The secret value itself."""
        return self._value

    def bytes(self) -> builtins.bytes:
        """The secret encoded as UTF-8 (a RADIUS shared secret is bytes)."""
        return self._value.encode("utf-8")

    def __repr__(self) -> str:
        return "***"

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        """True when the secret is not empty (``RedisConfig.url`` may be empty)."""
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Secret, self._value))


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A socket address; ``host`` carries no brackets (``[::1]:1812`` -> ``::1``)."""

    host: str
    port: int

    @property
    def dual_stack(self) -> bool:
        """An IPv6 socket on this address must also serve IPv4 (IPV6_V6ONLY off): the
        unspecified address ``::`` (every IPv4 and IPv6 address) and a v4-mapped address
        (``::ffff:127.0.0.1``: that IPv4 address; it cannot be bound with V6ONLY on)."""
        try:
            address = ipaddress.IPv6Address(self.host)
        except ValueError:
            return False
        return address.is_unspecified or address.ipv4_mapped is not None

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NasConfig:
    """One ``[[nas]]`` entry: a RADIUS client (switch) allowed to talk to us."""

    address: IPNetwork
    secret: Secret
    require_message_authenticator: bool = False
    limit_proxy_state: bool = True
    bill_leg: BillLeg = "originate"
    name: str = ""  # "" -> str(address)
    dialect: Dialect = "cisco"  # the dictionary of its packets and the defaults below
    zero_duration_stop: ZeroDurationStop = "retry"
    strip_realm: bool = False
    coa_port: int = 0  # RFC 5176 Disconnect-Request port on the NAS; 0: never sent

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", str(self.address))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    auth_listen: ListenAddress = ListenAddress("127.0.0.1", 1812)
    acct_listen: ListenAddress = ListenAddress("127.0.0.1", 1813)
    metrics_listen: ListenAddress = ListenAddress("127.0.0.1", 9812)
    dictionary: Path | None = None  # None: the dictionaries packaged with radiusd
    workers: int = 1
    log_format: LogFormat = "auto"
    log_level: str = "info"
    max_in_flight: int = 1000
    duplicate_cache_seconds: float = 30.0
    duplicate_cache_size: int = 100_000
    drain_seconds: float = 10.0
    accounting_linger_ms: float = 3.0


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: Secret = field(default_factory=lambda: Secret(DEFAULT_DATABASE_URL))
    pool_size: int = 10


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: Secret = field(default_factory=lambda: Secret(""))  # empty: no Redis
    cluster: bool = False  # True: url names one seed node of a Redis Cluster


@dataclass(frozen=True, slots=True)
class BillingConfig:
    max_call_length: int = 7200
    auth_hold_seconds: int = 180
    stale_grace_seconds: int = 300
    max_acct_delay_seconds: int = 86400


class SecretKey:
    """The server key (32 bytes) whose ``str``/``repr`` never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: builtins.bytes) -> None:
        self._value = value

    def reveal(self) -> builtins.bytes:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretKey):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash((SecretKey, self._value))


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """``[security]``: the key of CHAP/Digest-capable account secrets, and the lockout."""

    secrets_key_file: str = ""
    secrets_key_env: str = ""
    secrets_key: SecretKey | None = None  # read from the file or the variable at load
    max_auth_failures: int = 10
    auth_lockout_seconds: int = 60


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Low-balance e-mail; host empty: no e-mail is sent."""

    host: str = ""
    port: int = 25
    sender: str = ""  # the "from" key
    starttls: bool = False
    username: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    timeout_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    billing: BillingConfig = field(default_factory=BillingConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    nas: tuple[NasConfig, ...] = ()
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    source: str = "<built-in defaults>"


# --------------------------------------------------------------------------- paths


def resolve_config_path(cli_value: str | None, environ: Mapping[str, str]) -> Path | None:
    """``--config`` if given, else ``$RADIUSD_CONFIG``, else ``config/radiusd.toml`` if it
    exists in the working directory, else None (meaning: the packaged default).
    An empty value counts as not given."""
    if cli_value:
        return Path(cli_value)
    from_env = environ.get(CONFIG_ENV_VAR, "")
    if from_env:
        return Path(from_env)
    if DEFAULT_CONFIG_PATH.is_file():
        return DEFAULT_CONFIG_PATH
    return None


def _packaged_default_text() -> str:
    try:
        resource = resources.files("radiusd.defaults").joinpath("radiusd.toml")
        return resource.read_text(encoding="utf-8")
    except (ModuleNotFoundError, OSError):
        pass  # not installed: read it from the source checkout
    fallback = Path(__file__).resolve().parents[1] / "config" / "radiusd.toml"
    try:
        return fallback.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{PACKAGED_DEFAULT_SOURCE}: cannot read {fallback}: {exc.strerror or exc}"
        ) from None


def load_config(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    *,
    resolve_secrets: bool = True,
) -> Config:
    """Read, parse and validate ``path`` (None: the packaged default).

    ``resolve_secrets=False`` (billingctl, which never talks RADIUS) checks a NAS's
    ``secret_env`` / ``secret_file`` for form only and does not read the variable or the
    file, which may belong to the daemon's user; every other rule is the same."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    if path is None:
        return parse_config(
            _packaged_default_text(), PACKAGED_DEFAULT_SOURCE, env, resolve_secrets=resolve_secrets
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, str(path), env, resolve_secrets=resolve_secrets)


# --------------------------------------------------------------------------- parsing


def _show(value: object) -> str:
    """A value for an error message, on one line (never used for secrets)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "a date/time"


# A converter checks a TOML value (or an environment value already parsed by an env
# parser) and returns the typed setting; `where` is the key or variable name for errors.
_Convert = Callable[[object, str], _T]
_EnvParse = Callable[[str, str], object]


def _env_str(text: str, where: str) -> object:
    return text


def _env_int(text: str, where: str) -> object:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"{where}: expected a whole number, got {text!r}") from None


def _env_float(text: str, where: str) -> object:
    try:
        return float(text.strip())
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {text!r}") from None


_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})


def _env_bool(text: str, where: str) -> object:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(f"{where}: expected true/false/1/0/yes/no, got {text!r}")


def _int(minimum: int, maximum: int | None = None) -> _Convert[int]:
    def convert(value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {_show(value)}")
        if value < minimum:
            raise ConfigError(f"{where}: must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{where}: must be at most {maximum}, got {value}")
        return value

    return convert


def _float(minimum: float, maximum: float | None = None) -> _Convert[float]:
    def convert(value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {_show(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {_show(value)}")
        if number < minimum:
            raise ConfigError(f"{where}: must be at least {minimum:g}, got {_show(value)}")
        if maximum is not None and number > maximum:
            raise ConfigError(f"{where}: must be at most {maximum:g}, got {_show(value)}")
        return number

    return convert


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {_show(value)}")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {_show(value)}")
    return value


def _name(value: object, where: str) -> str:
    name = _str(value, where).strip()
    if not name:
        raise ConfigError(f"{where}: must not be empty")
    return name


_LOG_FORMATS: Final[Mapping[str, LogFormat]] = {
    "auto": "auto",
    "json": "json",
    "console": "console",
}
_BILL_LEGS: Final[Mapping[str, BillLeg]] = {
    "originate": "originate",
    "answer": "answer",
    "any": "any",
}
_DIALECTS: Final[Mapping[str, Dialect]] = {
    "cisco": "cisco",
    "kamailio": "kamailio",
    "opensips": "opensips",
    "sippy": "sippy",
}
_ZERO_STOPS: Final[Mapping[str, ZeroDurationStop]] = {"retry": "retry", "final": "final"}
_LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")


def _choice(options: Mapping[str, _T]) -> _Convert[_T]:
    def convert(value: object, where: str) -> _T:
        text = _str(value, where)
        if text not in options:
            allowed = " | ".join(options)
            raise ConfigError(f"{where}: expected one of {allowed}, got {text!r}")
        return options[text]

    return convert


def _log_level(value: object, where: str) -> str:
    level = _str(value, where).strip().lower()
    if level not in _LOG_LEVELS:
        allowed = " | ".join(_LOG_LEVELS)
        raise ConfigError(f"{where}: expected one of {allowed}, got {value!r}")
    return level


def _dictionary(value: object, where: str) -> Path | None:
    text = _str(value, where)
    if not text:
        return None
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"{where}: no such file: {text!r}")
    return path


def _is_host_name(host: str) -> bool:
    if all(ch.isdigit() or ch == "." for ch in host):
        return False  # looks like an IPv4 address but is not a valid one
    labels = host.rstrip(".").split(".")
    for label in labels:
        if not 1 <= len(label) <= 63 or label.startswith("-") or label.endswith("-"):
            return False
        if not all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in label):
            return False
    return True


def _listen(value: object, where: str) -> ListenAddress:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string host:port, got {_show(value)}")
    text = value.strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise ConfigError(f"{where}: expected [IPv6]:port, got {value!r}")
        host, port_text = text[1:close], text[close + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{where}: not an IPv6 address in brackets: {value!r}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"{where}: expected host:port, got {value!r}")
        if ":" in host:
            raise ConfigError(
                f"{where}: an IPv6 address needs brackets, e.g. '[::1]:1812', got {value!r}"
            )
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _is_host_name(host):
                raise ConfigError(f"{where}: not an IP address or host name: {value!r}") from None
    if not (port_text.isascii() and port_text.isdigit()):
        raise ConfigError(f"{where}: expected host:port, got {value!r}")
    port = int(port_text)
    if port > 65535:
        raise ConfigError(f"{where}: port must be 0..65535, got {value!r}")
    return ListenAddress(host, port)


def _url_scheme(url: str) -> str | None:
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        return None
    if not all(ch.isascii() and (ch.isalnum() or ch in "+-.") for ch in scheme):
        return None
    return scheme.lower()


def _database_url(value: object, where: str) -> Secret:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {_type_name(value)}")
    if _url_scheme(value.strip()) is None:
        # not shown: a malformed URL may still hold a password
        raise ConfigError(
            f"{where}: expected a database URL such as {DEFAULT_DATABASE_URL!r} "
            "or 'postgresql+psycopg://user@host/db'"
        )
    return Secret(value.strip())


_REDIS_SCHEMES: Final = ("redis", "rediss", "unix")


def _redis_url(value: object, where: str) -> Secret:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {_type_name(value)}")
    url = value.strip()
    if url and _url_scheme(url) not in _REDIS_SCHEMES:
        raise ConfigError(
            f"{where}: expected '' (no Redis) or a redis://, rediss:// or unix:// URL"
        )
    return Secret(url)


class _Table:
    """One TOML table being read: tracks the keys used and applies env overrides."""

    def __init__(
        self,
        name: str,
        raw: Mapping[str, object],
        environ: Mapping[str, str] | None,
    ) -> None:
        self._name = name
        self._raw = raw
        self._environ = environ  # None: no environment overrides for this table
        self._known: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self._name}.{key}"

    def has(self, key: str) -> bool:
        self._known.add(key)
        return key in self._raw

    def raw(self, key: str) -> object:
        self._known.add(key)
        return self._raw.get(key)

    def get(
        self,
        key: str,
        default: object,
        convert: _Convert[_T],
        env_parse: _EnvParse = _env_str,
    ) -> _T:
        self._known.add(key)
        result = convert(self._raw.get(key, default), self.where(key))
        if self._environ is not None:
            variable = f"{ENV_PREFIX}{self._name}_{key}".upper()
            text = self._environ.get(variable)
            if text is not None:
                result = convert(env_parse(text, variable), variable)
        return result

    def reject_unknown(self) -> None:
        for key in self._raw:
            if key not in self._known:
                raise ConfigError(f"{self.where(key)}: unknown key")


_SECTIONS: Final = ("server", "database", "redis", "billing", "security", "smtp")


def _section(document: Mapping[str, object], name: str, environ: Mapping[str, str]) -> _Table:
    raw = document.get(name, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a table ([{name}]), got {_type_name(raw)}")
    return _Table(name, raw, environ)


def _server(document: Mapping[str, object], environ: Mapping[str, str]) -> ServerConfig:
    t = _section(document, "server", environ)
    config = ServerConfig(
        auth_listen=t.get("auth_listen", "127.0.0.1:1812", _listen),
        acct_listen=t.get("acct_listen", "127.0.0.1:1813", _listen),
        metrics_listen=t.get("metrics_listen", "127.0.0.1:9812", _listen),
        dictionary=t.get("dictionary", "", _dictionary),
        workers=t.get("workers", 1, _int(1), _env_int),
        log_format=t.get("log_format", "auto", _choice(_LOG_FORMATS)),
        log_level=t.get("log_level", "info", _log_level),
        max_in_flight=t.get("max_in_flight", 1000, _int(1), _env_int),
        duplicate_cache_seconds=t.get("duplicate_cache_seconds", 30.0, _float(0), _env_float),
        duplicate_cache_size=t.get("duplicate_cache_size", 100_000, _int(1), _env_int),
        drain_seconds=t.get("drain_seconds", 10.0, _float(0), _env_float),
        accounting_linger_ms=t.get("accounting_linger_ms", 3.0, _float(0, 1000), _env_float),
    )
    t.reject_unknown()
    return config


def _database(document: Mapping[str, object], environ: Mapping[str, str]) -> DatabaseConfig:
    t = _section(document, "database", environ)
    config = DatabaseConfig(
        url=t.get("url", DEFAULT_DATABASE_URL, _database_url),
        pool_size=t.get("pool_size", 10, _int(1), _env_int),
    )
    t.reject_unknown()
    return config


def _redis(document: Mapping[str, object], environ: Mapping[str, str]) -> RedisConfig:
    t = _section(document, "redis", environ)
    config = RedisConfig(
        url=t.get("url", "", _redis_url),
        cluster=t.get("cluster", False, _bool, _env_bool),
    )
    t.reject_unknown()
    if config.cluster:
        _cluster_seed(config.url.reveal(), "redis.url")
    return config


def _cluster_seed(url: str, where: str) -> None:
    """With ``cluster = true`` the URL names a seed node: TCP, database 0 (a cluster has no
    other), and not empty."""
    if not url:
        raise ConfigError(f"{where}: cluster = true needs the URL of one node of the cluster")
    if _url_scheme(url) == "unix":
        raise ConfigError(f"{where}: a Redis Cluster is reached over TCP (redis:// or rediss://)")
    path = url.split("://", 1)[1].split("?", 1)[0]
    database = path.split("/", 1)[1] if "/" in path else ""
    if database not in ("", "0"):
        raise ConfigError(f"{where}: a Redis Cluster has only database 0")


def _billing(document: Mapping[str, object], environ: Mapping[str, str]) -> BillingConfig:
    t = _section(document, "billing", environ)
    config = BillingConfig(
        max_call_length=t.get("max_call_length", 7200, _int(1), _env_int),
        auth_hold_seconds=t.get("auth_hold_seconds", 180, _int(1), _env_int),
        stale_grace_seconds=t.get("stale_grace_seconds", 300, _int(0), _env_int),
        max_acct_delay_seconds=t.get("max_acct_delay_seconds", 86400, _int(0), _env_int),
    )
    t.reject_unknown()
    return config


def _security(document: Mapping[str, object], environ: Mapping[str, str]) -> SecurityConfig:
    from billing_core.adapters.secretbox import KeySettingError, load_key

    t = _section(document, "security", environ)
    key_file = t.get("secrets_key_file", "", _str).strip()
    key_env = t.get("secrets_key_env", "", _str).strip()
    max_failures = t.get("max_auth_failures", 10, _int(1), _env_int)
    lockout = t.get("auth_lockout_seconds", 60, _int(1), _env_int)
    t.reject_unknown()
    try:
        key = load_key(key_file, key_env, environ)
    except KeySettingError as exc:
        raise ConfigError(str(exc)) from None
    return SecurityConfig(
        secrets_key_file=key_file,
        secrets_key_env=key_env,
        secrets_key=SecretKey(key) if key is not None else None,
        max_auth_failures=max_failures,
        auth_lockout_seconds=lockout,
    )


def _smtp(document: Mapping[str, object], environ: Mapping[str, str]) -> SmtpConfig:
    t = _section(document, "smtp", environ)
    given = [key for key in ("password_file", "password_env") if t.raw(key)]
    if len(given) > 1:
        raise ConfigError(f"{t.where(given[1])}: give only one of password_file, password_env")
    password = Secret("")
    if given:
        password = _smtp_password(t, given[0], environ)
    config = SmtpConfig(
        host=t.get("host", "", _str),
        port=t.get("port", 25, _int(1, 65535), _env_int),
        sender=t.get("from", "", _str),
        starttls=t.get("starttls", False, _bool, _env_bool),
        username=t.get("username", "", _str),
        password=password,
        timeout_seconds=t.get("timeout_seconds", 10.0, _float(0.1), _env_float),
    )
    t.reject_unknown()
    if config.host and not config.sender:
        raise ConfigError(f"{t.where('from')}: required when smtp.host is set (the sender)")
    if config.password and not config.username:
        raise ConfigError(f"{t.where('username')}: required with a password")
    return config


def _smtp_password(t: _Table, key: str, environ: Mapping[str, str]) -> Secret:
    where = t.where(key)
    name = _str(t.raw(key), where)
    if key == "password_env":
        value = environ.get(name)
        if not value:
            raise ConfigError(f"{where}: environment variable {name!r} is not set or empty")
        return Secret(value)
    path = Path(name)
    try:
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{where}: must not be readable by group or others")
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{where}: cannot read {name!r}: {reason or exc}") from None
    if not text:
        raise ConfigError(f"{where}: the file {name!r} is empty")
    return Secret(text)


def _nas_address(value: object, where: str) -> IPNetwork:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected an IP address or CIDR string, got {_show(value)}")
    text = value.strip()
    try:
        network: IPNetwork = ipaddress.ip_network(text)
    except ValueError:
        try:
            widened = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ConfigError(f"{where}: not an IP address or CIDR: {value!r}") from None
        raise ConfigError(
            f"{where}: host bits set in {value!r}, did you mean '{widened}'?"
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:  # ::ffff:a.b.c.d is the IPv4 address a.b.c.d
            return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network


_UNRESOLVED: Final = Secret("")  # a secret_env / secret_file not read (resolve_secrets=False)


def _nas_secret(t: _Table, environ: Mapping[str, str] | None) -> Secret:
    """The NAS secret; ``environ`` None: secret_env / secret_file are checked for form only."""
    given = [key for key in ("secret", "secret_env", "secret_file") if t.has(key)]
    if not given:
        raise ConfigError(f"{t.where('secret')}: missing (give secret, secret_env or secret_file)")
    if len(given) > 1:
        raise ConfigError(f"{t.where(given[1])}: give only one of secret, secret_env, secret_file")
    key = given[0]
    where = t.where(key)
    value = t.raw(key)
    if key == "secret":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_type_name(value)}")
        if not value:
            raise ConfigError(f"{where}: must not be empty")
        return Secret(value)
    if key == "secret_env":
        name = _str(value, where)
        if not name:
            raise ConfigError(f"{where}: must name an environment variable")
        if environ is None:
            return _UNRESOLVED
        if name not in environ:
            raise ConfigError(f"{where}: environment variable {name!r} is not set")
        secret = environ[name]
        if not secret:
            raise ConfigError(f"{where}: environment variable {name!r} is empty")
        return Secret(secret)
    path_text = _str(value, where)
    if not path_text:
        raise ConfigError(f"{where}: must name a file")
    if environ is None:
        return _UNRESOLVED
    path = Path(path_text)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path_text!r}: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise ConfigError(f"{where}: must not be readable by group or others")
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{where}: cannot read {path_text!r}: {reason or exc}") from None
    if not secret:
        raise ConfigError(f"{where}: the file {path_text!r} is empty")
    return Secret(secret)


def _one_nas(index: int, raw: object, environ: Mapping[str, str] | None) -> NasConfig:
    label = f"nas[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: expected a table ([[nas]]), got {_type_name(raw)}")
    t = _Table(label, raw, None)
    if not t.has("address"):
        raise ConfigError(f"{t.where('address')}: missing")
    address = t.get("address", None, _nas_address)
    secret = _nas_secret(t, environ)
    dialect = t.get("dialect", "cisco", _choice(_DIALECTS))
    zero_default, strip_default = DIALECT_DEFAULTS[dialect]
    nas = NasConfig(
        address=address,
        secret=secret,
        require_message_authenticator=t.get("require_message_authenticator", False, _bool),
        limit_proxy_state=t.get("limit_proxy_state", True, _bool),
        bill_leg=t.get("bill_leg", "originate", _choice(_BILL_LEGS)),
        name=t.get("name", str(address), _name),
        dialect=dialect,
        zero_duration_stop=t.get("zero_duration_stop", zero_default, _choice(_ZERO_STOPS)),
        strip_realm=t.get("strip_realm", strip_default, _bool),
        coa_port=t.get("coa_port", 0, _int(0, 65535)),
    )
    t.reject_unknown()
    if not nas.require_message_authenticator and not nas.limit_proxy_state:
        raise ConfigError(
            f"{label}: require_message_authenticator and limit_proxy_state are both false "
            "(CVE-2024-3596)"
        )
    return nas


def _all_nas(
    document: Mapping[str, object], environ: Mapping[str, str] | None
) -> tuple[NasConfig, ...]:
    raw = document.get("nas", [])
    if not isinstance(raw, list):
        raise ConfigError(f"nas: expected an array of tables ([[nas]]), got {_type_name(raw)}")
    result: list[NasConfig] = []
    by_network: dict[IPNetwork, int] = {}
    by_name: dict[str, int] = {}
    for index, entry in enumerate(raw):
        nas = _one_nas(index, entry, environ)
        if nas.address in by_network:
            raise ConfigError(
                f"nas[{index}].address: {nas.address} is already nas[{by_network[nas.address]}]"
            )
        if nas.name in by_name:
            raise ConfigError(
                f"nas[{index}].name: {nas.name!r} is already the name of nas[{by_name[nas.name]}]"
            )
        by_network[nas.address] = index
        by_name[nas.name] = index
        result.append(nas)
    return tuple(result)


def parse_config(
    text: str, source: str, environ: Mapping[str, str], *, resolve_secrets: bool = True
) -> Config:
    """Parse and validate TOML ``text`` (read from ``source``) with env overrides
    (``resolve_secrets``: see :func:`load_config`)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(f"{source}: invalid TOML: {message}") from None
    for key, value in document.items():
        if key in _SECTIONS or key == "nas":
            continue
        kind = "section" if isinstance(value, dict) else "key"
        raise ConfigError(f"{key}: unknown {kind}")
    return Config(
        server=_server(document, environ),
        database=_database(document, environ),
        redis=_redis(document, environ),
        billing=_billing(document, environ),
        security=_security(document, environ),
        nas=_all_nas(document, environ if resolve_secrets else None),
        smtp=_smtp(document, environ),
        source=source,
    )


# --------------------------------------------------------------------------- output

_PASSWORD_PARAMS: Final = frozenset({"password", "pass", "passwd", "pwd", "sslpassword"})


def masked_url(url: str) -> str:
    """``url`` with its password (``user:PASSWORD@`` and ``?password=``) replaced by ``***``.

    The user-info part ends, as for SQLAlchemy, at the ``@`` that ends the password; an
    unescaped ``@`` inside the password is handled too (everything up to the last ``@``
    before the host's ``/`` is masked)."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        return url
    start = scheme_end + 3
    head, rest = url[:start], url[start:]
    user_end = len(rest)
    for stop in ":/?#@":
        found = rest.find(stop)
        if 0 <= found < user_end:
            user_end = found
    if rest[user_end : user_end + 1] == ":":
        first_at = rest.find("@", user_end)
        if first_at >= 0:
            host_end = len(rest)
            for stop in "/?#":
                found = rest.find(stop, first_at)
                if 0 <= found < host_end:
                    host_end = found
            last_at = rest.rfind("@", first_at, host_end)
            rest = f"{rest[: user_end + 1]}***{rest[last_at:]}"
    query_start = rest.find("?")
    if query_start < 0:
        return head + rest
    query, hash_sep, fragment = rest[query_start + 1 :].partition("#")
    params = []
    for param in query.split("&"):
        name, sep, _ = param.partition("=")
        params.append(f"{name}=***" if sep and name.lower() in _PASSWORD_PARAMS else param)
    return head + rest[: query_start + 1] + "&".join(params) + hash_sep + fragment


def _toml_string(value: str) -> str:
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_bool(value: bool) -> str:
    return "true" if value else "false"


def render_effective(config: Config) -> str:
    """The effective settings as TOML, every secret masked as ``***``.

    The output parses back (with :func:`parse_config`) to the same settings, except that
    the secrets read ``***``."""
    lines = [
        f"# effective configuration, from {config.source}",
        *_render_server(config.server),
        *_render_storage(config),
        *_render_security(config.security),
    ]
    if not config.nas:
        lines += ["", "# no [[nas]] entries: every RADIUS packet is dropped"]
    for nas in config.nas:
        lines += _render_nas(nas)
    lines += _render_smtp(config.smtp)
    return "\n".join(lines) + "\n"


def _render_server(s: ServerConfig) -> list[str]:
    return [
        "",
        "[server]",
        f"auth_listen = {_toml_string(str(s.auth_listen))}",
        f"acct_listen = {_toml_string(str(s.acct_listen))}",
        f"metrics_listen = {_toml_string(str(s.metrics_listen))}",
        (
            f"dictionary = {_toml_string(str(s.dictionary))}"
            if s.dictionary is not None
            else 'dictionary = ""                # the dictionaries packaged with radiusd'
        ),
        f"workers = {s.workers}",
        f"log_format = {_toml_string(s.log_format)}",
        f"log_level = {_toml_string(s.log_level)}",
        f"max_in_flight = {s.max_in_flight}",
        f"duplicate_cache_seconds = {s.duplicate_cache_seconds!r}",
        f"duplicate_cache_size = {s.duplicate_cache_size}",
        f"drain_seconds = {s.drain_seconds}",
        f"accounting_linger_ms = {s.accounting_linger_ms}",
    ]


def _render_storage(config: Config) -> list[str]:
    """[database], [redis] and [billing]."""
    d, r, b = config.database, config.redis, config.billing
    return [
        "",
        "[database]",
        f"url = {_toml_string(masked_url(d.url.reveal()))}",
        f"pool_size = {d.pool_size}",
        "",
        "[redis]",
        f"url = {_toml_string(masked_url(r.url.reveal()))}"
        + ("" if r.url else "                        # no Redis"),
        f"cluster = {_toml_bool(r.cluster)}"
        + ("                    # url names one seed node of a Redis Cluster" if r.cluster else ""),
        "",
        "[billing]",
        f"max_call_length = {b.max_call_length}",
        f"auth_hold_seconds = {b.auth_hold_seconds}",
        f"stale_grace_seconds = {b.stale_grace_seconds}",
        f"max_acct_delay_seconds = {b.max_acct_delay_seconds}",
    ]


def _render_security(security: SecurityConfig) -> list[str]:
    return [
        "",
        "[security]",
        f"secrets_key_file = {_toml_string(security.secrets_key_file)}",
        f"secrets_key_env = {_toml_string(security.secrets_key_env)}"
        + ("" if security.secrets_key else "             # no key: PAP only"),
        f"max_auth_failures = {security.max_auth_failures}",
        f"auth_lockout_seconds = {security.auth_lockout_seconds}",
    ]


def _render_nas(nas: NasConfig) -> list[str]:
    return [
        "",
        "[[nas]]",
        f"name = {_toml_string(nas.name)}",
        f"address = {_toml_string(str(nas.address))}",
        'secret = "***"',
        f"require_message_authenticator = {_toml_bool(nas.require_message_authenticator)}",
        f"limit_proxy_state = {_toml_bool(nas.limit_proxy_state)}",
        f"bill_leg = {_toml_string(nas.bill_leg)}",
        f"dialect = {_toml_string(nas.dialect)}",
        f"zero_duration_stop = {_toml_string(nas.zero_duration_stop)}",
        f"strip_realm = {_toml_bool(nas.strip_realm)}",
        f"coa_port = {nas.coa_port}",
    ]


def _render_smtp(m: SmtpConfig) -> list[str]:
    return [
        "",
        "[smtp]",
        f"host = {_toml_string(m.host)}" + ("" if m.host else "                       # no e-mail"),
        f"port = {m.port}",
        f"from = {_toml_string(m.sender)}",
        f"starttls = {_toml_bool(m.starttls)}",
        f"username = {_toml_string(m.username)}",
        *(["# password: *** (from password_file or password_env)"] if m.password else []),
        f"timeout_seconds = {m.timeout_seconds!r}",
    ]
