"""Unit tests for billing_core.config: defaults, refusals, env overrides, secret masking."""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from billing_core.config import (
    DEFAULT_CONFIG_PATH,
    BillingConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    ListenAddress,
    NasConfig,
    RedisConfig,
    Secret,
    ServerConfig,
    load_config,
    masked_url,
    parse_config,
    render_effective,
    resolve_config_path,
)

SECRET = "Zq9-distinctive-SECRET-4711"
NAS_OK = '[[nas]]\naddress = "127.0.0.1"\nsecret = "testing123"\n'

CONTRACT_EXAMPLE = """\
[server]
auth_listen = "127.0.0.1:1812"      # host:port; "[::1]:1812" for IPv6
acct_listen = "127.0.0.1:1813"
metrics_listen = "127.0.0.1:9812"   # GET /metrics (Prometheus text), GET /healthz

[database]
url = "sqlite:///var/billing.db"     # embedded default (SQLAlchemy URL: three slashes = relative to
                                     # the working directory, four = absolute);
                                     # or "postgresql+psycopg://user@host/db"

[redis]
url = ""                             # empty: the live state is kept in the database itself (one node);
                                     # or "redis://127.0.0.1:6379/0"

[billing]
max_call_length = 7200               # seconds: the grant for postpaid calls and the cap for every grant;
                                     # the default for the database setting of the same name
auth_hold_seconds = 180              # how long an authorization holds capacity and funds before accounting arrives
stale_grace_seconds = 300            # a call silent for its grant plus this long is closed by the server
max_acct_delay_seconds = 86400       # a larger Acct-Delay-Time is ignored as bogus

[[nas]]                              # each RADIUS client (switch) allowed to talk to us
address = "127.0.0.1"                # an IP or a CIDR
secret = "testing123"
require_message_authenticator = false
limit_proxy_state = true
bill_leg = "originate"               # which h323-call-origin leg is charged: originate | answer | any
"""  # noqa: E501 - verbatim from CONTRACT.md section 2


def parse(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config(text, "<test>", environ or {})


def refusal(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, environ)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- defaults


def test_empty_file_takes_all_defaults() -> None:
    config = parse("")
    assert config.server == ServerConfig(
        auth_listen=ListenAddress("127.0.0.1", 1812),
        acct_listen=ListenAddress("127.0.0.1", 1813),
        metrics_listen=ListenAddress("127.0.0.1", 9812),
        dictionary=None,
        workers=1,
        log_format="auto",
        log_level="info",
        max_in_flight=1000,
        duplicate_cache_seconds=30.0,
        duplicate_cache_size=100_000,
    )
    assert config.database == DatabaseConfig(Secret("sqlite:///var/billing.db"), 10)
    assert config.redis == RedisConfig(Secret(""))
    assert not config.redis.url
    assert config.billing == BillingConfig(7200, 180, 300, 86400)
    assert config.nas == ()
    assert config.source == "<test>"


def test_dataclass_defaults_match_parsed_defaults() -> None:
    assert Config(source="<test>") == parse("")


def test_missing_section_takes_defaults_others_kept() -> None:
    config = parse("[billing]\nmax_call_length = 60\n")
    assert config.billing == BillingConfig(max_call_length=60)
    assert config.server == ServerConfig()


def test_contract_example_parses() -> None:
    config = parse(CONTRACT_EXAMPLE)
    assert config.server == ServerConfig()
    assert config.database.url.reveal() == "sqlite:///var/billing.db"
    assert config.redis.url.reveal() == ""
    assert config.billing == BillingConfig()
    assert config.nas == (
        NasConfig(
            address=ipaddress.IPv4Network("127.0.0.1/32"),
            secret=Secret("testing123"),
            require_message_authenticator=False,
            limit_proxy_state=True,
            bill_leg="originate",
        ),
    )
    assert config.nas[0].name == "127.0.0.1/32"
    assert config.nas[0].secret.bytes() == b"testing123"


def test_full_example_with_every_key() -> None:
    config = parse(
        """
        [server]
        auth_listen = "192.0.2.10:11812"
        acct_listen = "[::]:11813"
        metrics_listen = "localhost:0"
        dictionary = ""
        workers = 4
        log_format = "json"
        log_level = "DEBUG"
        max_in_flight = 50
        duplicate_cache_seconds = 2.5
        duplicate_cache_size = 10
        [database]
        url = "postgresql+psycopg://bill:pw@db.example/billing"
        pool_size = 3
        [redis]
        url = "redis://127.0.0.1:6379/0"
        [billing]
        max_call_length = 3600
        auth_hold_seconds = 60
        stale_grace_seconds = 0
        max_acct_delay_seconds = 0
        [[nas]]
        name = "edge-1"
        address = "10.0.0.0/24"
        secret = "s1"
        require_message_authenticator = true
        limit_proxy_state = false
        bill_leg = "any"
        [[nas]]
        address = "2001:db8::/32"
        secret = "s2"
        bill_leg = "answer"
        """
    )
    assert config.server == ServerConfig(
        auth_listen=ListenAddress("192.0.2.10", 11812),
        acct_listen=ListenAddress("::", 11813),
        metrics_listen=ListenAddress("localhost", 0),
        workers=4,
        log_format="json",
        log_level="debug",
        max_in_flight=50,
        duplicate_cache_seconds=2.5,
        duplicate_cache_size=10,
    )
    assert config.database.pool_size == 3
    assert config.redis.url.reveal() == "redis://127.0.0.1:6379/0"
    assert config.billing == BillingConfig(3600, 60, 0, 0)
    first, second = config.nas
    assert first.name == "edge-1"
    assert first.address == ipaddress.IPv4Network("10.0.0.0/24")
    assert first.require_message_authenticator
    assert not first.limit_proxy_state
    assert first.bill_leg == "any"
    assert second.address == ipaddress.IPv6Network("2001:db8::/32")
    assert second.name == "2001:db8::/32"
    assert second.bill_leg == "answer"


def test_dictionary_path(tmp_path: Path) -> None:
    dictionary = tmp_path / "dictionary"
    dictionary.write_text("ATTRIBUTE User-Name 1 string\n")
    config = parse(f"[server]\ndictionary = '{dictionary}'\n")
    assert config.server.dictionary == dictionary


# --------------------------------------------------------------------------- listen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:1812", ListenAddress("127.0.0.1", 1812)),
        ("[::1]:1812", ListenAddress("::1", 1812)),
        ("[::]:0", ListenAddress("::", 0)),
        ("[2001:db8::5]:65535", ListenAddress("2001:db8::5", 65535)),
        ("192.0.2.10:1", ListenAddress("192.0.2.10", 1)),
        ("localhost:9812", ListenAddress("localhost", 9812)),
        ("radius.example.net:1812", ListenAddress("radius.example.net", 1812)),
    ],
)
def test_listen_addresses(text: str, expected: ListenAddress) -> None:
    config = parse(f'[server]\nauth_listen = "{text}"\n')
    assert config.server.auth_listen == expected
    assert str(expected) == text


# --------------------------------------------------------------------------- refusals

REFUSALS: list[tuple[str, str]] = [
    # listen addresses
    ('[server]\nauth_listen = "1812"', "server.auth_listen: expected host:port, got '1812'"),
    ("[server]\nauth_listen = 1812", "server.auth_listen: expected a string host:port, got 1812"),
    ('[server]\nacct_listen = "127.0.0.1:"', "server.acct_listen: expected host:port"),
    ('[server]\nacct_listen = ":1813"', "server.acct_listen: expected host:port"),
    ('[server]\nacct_listen = "127.0.0.1:x"', "server.acct_listen: expected host:port"),
    ('[server]\nacct_listen = "127.0.0.1:-1"', "server.acct_listen: expected host:port"),
    (
        '[server]\nmetrics_listen = "127.0.0.1:65536"',
        "server.metrics_listen: port must be 0..65535, got '127.0.0.1:65536'",
    ),
    ('[server]\nauth_listen = "::1:1812"', "server.auth_listen: an IPv6 address needs brackets"),
    ('[server]\nauth_listen = "[::1]1812"', "server.auth_listen: expected [IPv6]:port"),
    (
        '[server]\nauth_listen = "[1.2.3.4]:1812"',
        "server.auth_listen: not an IPv6 address in brackets: '[1.2.3.4]:1812'",
    ),
    (
        '[server]\nauth_listen = "1.2.3.999:1812"',
        "server.auth_listen: not an IP address or host name: '1.2.3.999:1812'",
    ),
    ('[server]\nauth_listen = "bad_host:1812"', "server.auth_listen: not an IP address or host"),
    # server scalars
    ('[server]\nworkers = "4"', "server.workers: expected a whole number, got '4'"),
    ("[server]\nworkers = true", "server.workers: expected a whole number, got true"),
    ("[server]\nworkers = 1.5", "server.workers: expected a whole number, got 1.5"),
    ("[server]\nworkers = 0", "server.workers: must be at least 1, got 0"),
    ("[server]\nmax_in_flight = 0", "server.max_in_flight: must be at least 1, got 0"),
    ("[server]\nmax_in_flight = -5", "server.max_in_flight: must be at least 1, got -5"),
    (
        "[server]\nduplicate_cache_seconds = -1",
        "server.duplicate_cache_seconds: must be at least 0, got -1",
    ),
    (
        "[server]\nduplicate_cache_seconds = nan",
        "server.duplicate_cache_seconds: expected a finite number, got nan",
    ),
    (
        '[server]\nduplicate_cache_seconds = "30"',
        "server.duplicate_cache_seconds: expected a number, got '30'",
    ),
    (
        "[server]\naccounting_linger_ms = -1",
        "server.accounting_linger_ms: must be at least 0, got -1",
    ),
    (
        "[server]\naccounting_linger_ms = 5000",
        "server.accounting_linger_ms: must be at most 1000, got 5000",
    ),
    (
        "[server]\nduplicate_cache_size = 0",
        "server.duplicate_cache_size: must be at least 1, got 0",
    ),
    (
        '[server]\nlog_format = "xml"',
        "server.log_format: expected one of auto | json | console, got 'xml'",
    ),
    ('[server]\nlog_level = "loud"', "server.log_level: expected one of debug | info"),
    ('[server]\ndictionary = "/nonexistent/dict"', "server.dictionary: no such file"),
    ("[server]\ndictionary = 5", "server.dictionary: expected a string, got 5"),
    # database / redis
    ("[database]\npool_size = 0", "database.pool_size: must be at least 1, got 0"),
    ("[database]\nurl = 5", "database.url: expected a string, got a number"),
    ('[database]\nurl = "not a url"', "database.url: expected a database URL"),
    ('[database]\nurl = ""', "database.url: expected a database URL"),
    ('[redis]\nurl = "http://localhost"', "redis.url: expected '' (no Redis) or a redis://"),
    ("[redis]\nurl = false", "redis.url: expected a string, got a boolean"),
    ('[redis]\ncluster = "yes"', "redis.cluster: expected true or false, got 'yes'"),
    ("[redis]\ncluster = true", "redis.url: cluster = true needs the URL of one node"),
    (
        '[redis]\nurl = "unix:///run/redis.sock"\ncluster = true',
        "redis.url: a Redis Cluster is reached over TCP",
    ),
    (
        '[redis]\nurl = "redis://10.0.0.5:7000/3"\ncluster = true',
        "redis.url: a Redis Cluster has only database 0",
    ),
    # billing
    (
        '[billing]\nmax_call_length = "7200"',
        "billing.max_call_length: expected a whole number, got '7200'",
    ),
    ("[billing]\nmax_call_length = 0", "billing.max_call_length: must be at least 1, got 0"),
    ("[billing]\nauth_hold_seconds = 0", "billing.auth_hold_seconds: must be at least 1, got 0"),
    (
        "[billing]\nstale_grace_seconds = -1",
        "billing.stale_grace_seconds: must be at least 0, got -1",
    ),
    (
        "[billing]\nmax_acct_delay_seconds = -1",
        "billing.max_acct_delay_seconds: must be at least 0, got -1",
    ),
    (
        "[billing]\nmax_acct_delay_seconds = false",
        "billing.max_acct_delay_seconds: expected a whole number, got false",
    ),
    # unknown sections and keys
    ("[billing]\ncolour = 'red'", "billing.colour: unknown key"),
    ("[server]\nauth = '127.0.0.1:1812'", "server.auth: unknown key"),
    ("[database]\npassword = 'x'", "database.password: unknown key"),
    ("[redis]\nhost = 'x'", "redis.host: unknown key"),
    ("[logging]\nlevel = 'info'", "logging: unknown section"),
    ("colour = 'red'", "colour: unknown key"),
    ("server = 5", "server: expected a table ([server]), got a number"),
    ("nas = 5", "nas: expected an array of tables ([[nas]]), got a number"),
    ("nas = [5]", "nas[0]: expected a table ([[nas]]), got a number"),
    # nas
    (NAS_OK + "colour = 'red'", "nas[0].colour: unknown key"),
    ("[[nas]]\nsecret = 'x'", "nas[0].address: missing"),
    (
        NAS_OK + "[[nas]]\naddress = 'x'\nsecret = 'y'",
        "nas[1].address: not an IP address or CIDR: 'x'",
    ),
    ("[[nas]]\naddress = 5\nsecret = 'y'", "nas[0].address: expected an IP address or CIDR"),
    (
        "[[nas]]\naddress = '10.0.0.1/24'\nsecret = 'y'",
        "nas[0].address: host bits set in '10.0.0.1/24', did you mean '10.0.0.0/24'?",
    ),
    ("[[nas]]\naddress = '10.0.0.0/33'\nsecret = 'y'", "nas[0].address: not an IP address or CIDR"),
    ("[[nas]]\naddress = '10.0.0.1'", "nas[0].secret: missing"),
    ("[[nas]]\naddress = '10.0.0.1'\nsecret = ''", "nas[0].secret: must not be empty"),
    ("[[nas]]\naddress = '10.0.0.1'\nsecret = 5", "nas[0].secret: expected a string, got a number"),
    (
        "[[nas]]\naddress = '10.0.0.1'\nsecret = 'a'\nsecret_env = 'B'",
        "nas[0].secret_env: give only one of secret, secret_env, secret_file",
    ),
    (
        "[[nas]]\naddress = '10.0.0.1'\nsecret_env = 'B'\nsecret_file = '/x'",
        "nas[0].secret_file: give only one of secret, secret_env, secret_file",
    ),
    (
        "[[nas]]\naddress = '10.0.0.1'\nsecret_env = 'NO_SUCH_VARIABLE'",
        "nas[0].secret_env: environment variable 'NO_SUCH_VARIABLE' is not set",
    ),
    (
        "[[nas]]\naddress = '10.0.0.1'\nsecret_env = 'EMPTY_SECRET'",
        "nas[0].secret_env: environment variable 'EMPTY_SECRET' is empty",
    ),
    (
        "[[nas]]\naddress = '10.0.0.1'\nsecret_file = '/nonexistent/secret'",
        "nas[0].secret_file: cannot read '/nonexistent/secret'",
    ),
    (
        NAS_OK + "require_message_authenticator = false\nlimit_proxy_state = false",
        "nas[0]: require_message_authenticator and limit_proxy_state are both false "
        "(CVE-2024-3596)",
    ),
    (
        NAS_OK + "limit_proxy_state = 'no'",
        "nas[0].limit_proxy_state: expected true or false, got 'no'",
    ),
    (
        NAS_OK + "require_message_authenticator = 1",
        "nas[0].require_message_authenticator: expected true or false, got 1",
    ),
    (
        NAS_OK + "bill_leg = 'both'",
        "nas[0].bill_leg: expected one of originate | answer | any, got 'both'",
    ),
    (NAS_OK + "name = ''", "nas[0].name: must not be empty"),
    (NAS_OK + NAS_OK, "nas[1].address: 127.0.0.1/32 is already nas[0]"),
    (
        NAS_OK + "[[nas]]\naddress = '127.0.0.1/32'\nsecret = 'other'",
        "nas[1].address: 127.0.0.1/32 is already nas[0]",
    ),
    (
        NAS_OK + "[[nas]]\naddress = '::ffff:127.0.0.1'\nsecret = 'other'",
        "nas[1].address: 127.0.0.1/32 is already nas[0]",
    ),
    (
        NAS_OK + "name = 'sw'\n[[nas]]\naddress = '::1'\nsecret = 'x'\nname = 'sw'",
        "nas[1].name: 'sw' is already the name of nas[0]",
    ),
    # TOML itself
    ("[server\n", "<test>: invalid TOML: "),
    ("a = 1\na = 2\n", "<test>: invalid TOML: "),
]


@pytest.mark.parametrize(("text", "fragment"), REFUSALS)
def test_refusals(text: str, fragment: str) -> None:
    message = refusal(text, {"EMPTY_SECRET": ""})
    assert fragment in message
    if not fragment.startswith("<test>"):
        assert message.startswith(fragment.split(":", maxsplit=1)[0] + ":")


def test_nas_entries_may_be_absent() -> None:
    assert parse("[server]\n").nas == ()


def test_nas_ipv4_mapped_address_is_ipv4() -> None:
    (nas,) = parse("[[nas]]\naddress = '::ffff:10.1.2.3'\nsecret = 'x'\n").nas
    assert nas.address == ipaddress.IPv4Network("10.1.2.3/32")


def test_nas_only_one_protection_is_enough() -> None:
    (nas,) = parse(NAS_OK + "require_message_authenticator = true\nlimit_proxy_state = false\n").nas
    assert nas.require_message_authenticator
    assert not nas.limit_proxy_state


# --------------------------------------------------------------------------- secrets


def test_secret_env() -> None:
    config = parse(
        "[[nas]]\naddress = '10.0.0.1'\nsecret_env = 'NAS_SECRET'\n", {"NAS_SECRET": SECRET}
    )
    assert config.nas[0].secret.reveal() == SECRET


def test_secret_file_private(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"  {SECRET}\n")
    secret_file.chmod(0o600)
    config = parse(f"[[nas]]\naddress = '10.0.0.1'\nsecret_file = '{secret_file}'\n")
    assert config.nas[0].secret.reveal() == SECRET


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o610])
def test_secret_file_readable_by_others_refused(tmp_path: Path, mode: int) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    secret_file.chmod(mode)
    message = refusal(f"[[nas]]\naddress = '10.0.0.1'\nsecret_file = '{secret_file}'\n")
    assert message == "nas[0].secret_file: must not be readable by group or others"


def test_secret_file_empty_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("\n")
    secret_file.chmod(0o400)
    message = refusal(f"[[nas]]\naddress = '10.0.0.1'\nsecret_file = '{secret_file}'\n")
    assert message.startswith("nas[0].secret_file: the file")
    assert "is empty" in message


def test_secret_class() -> None:
    secret = Secret(SECRET)
    assert repr(secret) == "***"
    assert str(secret) == "***"
    assert f"{secret}" == "***"
    assert SECRET not in repr(NasConfig(ipaddress.ip_network("10.0.0.1"), secret))
    assert secret.reveal() == SECRET
    assert secret.bytes() == SECRET.encode()
    assert secret == Secret(SECRET)
    assert secret != Secret("other")
    assert secret != SECRET
    assert hash(secret) == hash(Secret(SECRET))
    assert Secret("é").bytes() == b"\xc3\xa9"


LEAKY_CONFIGS: list[tuple[str, dict[str, str]]] = [
    (f"[database]\nurl = '{SECRET}'", {}),
    (f"[database]\nurl = 'http//user:{SECRET}@host/db'", {}),
    (f"[redis]\nurl = 'http://:{SECRET}@host'", {}),
    ("[redis]\nurl = 'x'", {"RADIUSD_REDIS_URL": f"http://:{SECRET}@host"}),
    ("", {"RADIUSD_DATABASE_URL": SECRET}),
    (f"[[nas]]\naddress = '10.0.0.1'\nsecret = '{SECRET}'\ncolour = 1", {}),
    (f"[[nas]]\naddress = 'bad'\nsecret = '{SECRET}'", {}),
    (
        f"[[nas]]\naddress = '10.0.0.1'\nsecret = '{SECRET}'\nlimit_proxy_state = false",
        {},
    ),
    (f"[[nas]]\naddress = '10.0.0.1'\nsecret = '{SECRET}'\nsecret_env = 'X'", {"X": SECRET}),
    (f"[[nas]]\naddress = '10.0.0.1'\nsecret = ['{SECRET}']", {}),
]


@pytest.mark.parametrize(("text", "environ"), LEAKY_CONFIGS)
def test_secret_never_in_error(text: str, environ: dict[str, str]) -> None:
    message = refusal(text, environ)
    assert SECRET not in message


def test_secret_never_in_render(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    config = parse(
        f"""
        [database]
        url = "postgresql+psycopg://bill:{SECRET}@db.example:5432/billing?sslmode=require"
        [redis]
        url = "redis://:{SECRET}@cache.example:6379/0"
        [[nas]]
        address = "10.0.0.1"
        secret = "{SECRET}"
        [[nas]]
        address = "10.0.0.2"
        secret_env = "S"
        [[nas]]
        address = "10.0.0.3"
        secret_file = "{secret_file}"
        """,
        {"S": SECRET},
    )
    assert all(nas.secret.reveal() == SECRET for nas in config.nas)
    text = render_effective(config)
    assert SECRET not in text
    assert SECRET not in repr(config)
    assert 'url = "postgresql+psycopg://bill:***@db.example:5432/billing?sslmode=require"' in text
    assert 'url = "redis://:***@cache.example:6379/0"' in text
    assert text.count('secret = "***"') == 3


def test_render_parses_back_to_the_same_settings() -> None:
    text = CONTRACT_EXAMPLE.replace("testing123", "***") + (
        "[[nas]]\naddress = '2001:db8::/48'\nsecret = '***'\nname = 'v6 \"edge\"'\n"
        "require_message_authenticator = true\nbill_leg = 'answer'\n"
    )
    config = parse(text, {"RADIUSD_SERVER_AUTH_LISTEN": "[::1]:0"})
    rendered = render_effective(config)
    tomllib.loads(rendered)
    again = parse(rendered)
    assert again == config
    assert "[::1]:0" in rendered


def test_render_shows_the_cluster_switch_and_parses_back() -> None:
    config = parse('[redis]\nurl = "redis://:pw@10.0.0.5:7000"\ncluster = true\n')
    rendered = render_effective(config)
    assert "cluster = true" in rendered
    assert "pw" not in rendered
    assert parse(rendered).redis.cluster is True
    assert "cluster = false" in render_effective(parse(""))


def test_render_without_nas_says_so() -> None:
    assert "no [[nas]] entries" in render_effective(parse(""))


# --------------------------------------------------------------------------- masked_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://user:pw@host/db", "postgresql+psycopg://user:***@host/db"),
        ("postgresql+psycopg://user@host/db", "postgresql+psycopg://user@host/db"),
        ("postgresql+psycopg://host:5432/db", "postgresql+psycopg://host:5432/db"),
        ("postgresql://u:p@ss@host:5432/db", "postgresql://u:***@host:5432/db"),
        ("postgresql://u:pa/ss@host/db", "postgresql://u:***@host/db"),
        ("postgresql://u:p%40ss@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        (
            "postgresql://u@host/db?sslmode=require&password=pw",
            "postgresql://u@host/db?sslmode=require&password=***",
        ),
        ("redis://:secret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://user:secret@cache:6380/1", "rediss://user:***@cache:6380/1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("sqlite:///var/billing.db", "sqlite:///var/billing.db"),
        ("sqlite:////abs/billing.db", "sqlite:////abs/billing.db"),
        ("", ""),
        ("not a url", "not a url"),
    ],
)
def test_masked_url(url: str, expected: str) -> None:
    assert masked_url(url) == expected


# --------------------------------------------------------------------------- environment


def _server(config: Config) -> ServerConfig:
    return config.server


ENV_OVERRIDES: list[tuple[dict[str, str], Callable[[Config], object], object]] = [
    (
        {"RADIUSD_DATABASE_URL": "postgresql+psycopg://u@h/db"},
        lambda c: c.database.url.reveal(),
        "postgresql+psycopg://u@h/db",
    ),
    ({"RADIUSD_DATABASE_POOL_SIZE": " 7 "}, lambda c: c.database.pool_size, 7),
    (
        {"RADIUSD_REDIS_URL": "redis://127.0.0.1:6379/0"},
        lambda c: c.redis.url.reveal(),
        "redis://127.0.0.1:6379/0",
    ),
    ({"RADIUSD_REDIS_URL": ""}, lambda c: c.redis.url.reveal(), ""),
    (
        {"RADIUSD_REDIS_URL": "redis://127.0.0.1:7000", "RADIUSD_REDIS_CLUSTER": "yes"},
        lambda c: (c.redis.url.reveal(), c.redis.cluster),
        ("redis://127.0.0.1:7000", True),
    ),
    ({"RADIUSD_REDIS_CLUSTER": "0"}, lambda c: c.redis.cluster, False),
    (
        {"RADIUSD_SERVER_AUTH_LISTEN": "[::1]:0"},
        lambda c: c.server.auth_listen,
        ListenAddress("::1", 0),
    ),
    (
        {"RADIUSD_SERVER_ACCT_LISTEN": "192.0.2.10:1813"},
        lambda c: c.server.acct_listen,
        ListenAddress("192.0.2.10", 1813),
    ),
    (
        {"RADIUSD_SERVER_METRICS_LISTEN": "127.0.0.1:0"},
        lambda c: c.server.metrics_listen,
        ListenAddress("127.0.0.1", 0),
    ),
    ({"RADIUSD_SERVER_WORKERS": "3"}, lambda c: c.server.workers, 3),
    ({"RADIUSD_SERVER_LOG_FORMAT": "console"}, lambda c: c.server.log_format, "console"),
    ({"RADIUSD_SERVER_LOG_LEVEL": "Warning"}, lambda c: c.server.log_level, "warning"),
    ({"RADIUSD_SERVER_MAX_IN_FLIGHT": "5"}, lambda c: c.server.max_in_flight, 5),
    (
        {"RADIUSD_SERVER_DUPLICATE_CACHE_SECONDS": "0.5"},
        lambda c: c.server.duplicate_cache_seconds,
        0.5,
    ),
    ({"RADIUSD_SERVER_DUPLICATE_CACHE_SIZE": "9"}, lambda c: c.server.duplicate_cache_size, 9),
    ({"RADIUSD_SERVER_DICTIONARY": ""}, lambda c: c.server.dictionary, None),
    ({"RADIUSD_BILLING_MAX_CALL_LENGTH": "600"}, lambda c: c.billing.max_call_length, 600),
    ({"RADIUSD_BILLING_AUTH_HOLD_SECONDS": "30"}, lambda c: c.billing.auth_hold_seconds, 30),
    ({"RADIUSD_BILLING_STALE_GRACE_SECONDS": "0"}, lambda c: c.billing.stale_grace_seconds, 0),
    (
        {"RADIUSD_BILLING_MAX_ACCT_DELAY_SECONDS": "60"},
        lambda c: c.billing.max_acct_delay_seconds,
        60,
    ),
    # ignored: no such key, the config path itself, other prefixes, lower case
    ({"RADIUSD_CONFIG": "/etc/radiusd.toml"}, _server, ServerConfig()),
    ({"RADIUSD_BILLING_COLOUR": "red"}, lambda c: c.billing, BillingConfig(max_call_length=100)),
    ({"RADIUSD_NAS_SECRET": "x"}, lambda c: len(c.nas), 1),
    ({"radiusd_billing_max_call_length": "5"}, lambda c: c.billing.max_call_length, 100),
    ({"BILLING_MAX_CALL_LENGTH": "5"}, lambda c: c.billing.max_call_length, 100),
]


@pytest.mark.parametrize(("environ", "getter", "expected"), ENV_OVERRIDES)
def test_env_overrides(
    environ: dict[str, str], getter: Callable[[Config], object], expected: object
) -> None:
    config = parse("[billing]\nmax_call_length = 100\n" + NAS_OK, environ)
    assert getter(config) == expected


BAD_ENV: list[tuple[dict[str, str], str]] = [
    (
        {"RADIUSD_BILLING_MAX_CALL_LENGTH": "abc"},
        "RADIUSD_BILLING_MAX_CALL_LENGTH: expected a whole number, got 'abc'",
    ),
    (
        {"RADIUSD_BILLING_MAX_CALL_LENGTH": "1.5"},
        "RADIUSD_BILLING_MAX_CALL_LENGTH: expected a whole number, got '1.5'",
    ),
    (
        {"RADIUSD_BILLING_MAX_CALL_LENGTH": ""},
        "RADIUSD_BILLING_MAX_CALL_LENGTH: expected a whole number, got ''",
    ),
    (
        {"RADIUSD_BILLING_MAX_CALL_LENGTH": "0"},
        "RADIUSD_BILLING_MAX_CALL_LENGTH: must be at least 1, got 0",
    ),
    (
        {"RADIUSD_SERVER_AUTH_LISTEN": "1812"},
        "RADIUSD_SERVER_AUTH_LISTEN: expected host:port, got '1812'",
    ),
    (
        {"RADIUSD_SERVER_DUPLICATE_CACHE_SECONDS": "soon"},
        "RADIUSD_SERVER_DUPLICATE_CACHE_SECONDS: expected a number, got 'soon'",
    ),
    (
        {"RADIUSD_SERVER_DUPLICATE_CACHE_SECONDS": "inf"},
        "RADIUSD_SERVER_DUPLICATE_CACHE_SECONDS: expected a finite number",
    ),
    (
        {"RADIUSD_SERVER_LOG_FORMAT": "xml"},
        "RADIUSD_SERVER_LOG_FORMAT: expected one of auto | json | console, got 'xml'",
    ),
    ({"RADIUSD_DATABASE_URL": ""}, "RADIUSD_DATABASE_URL: expected a database URL"),
    ({"RADIUSD_REDIS_URL": "localhost"}, "RADIUSD_REDIS_URL: expected '' (no Redis)"),
    (
        {"RADIUSD_REDIS_CLUSTER": "maybe"},
        "RADIUSD_REDIS_CLUSTER: expected true/false/1/0/yes/no, got 'maybe'",
    ),
]


@pytest.mark.parametrize(("environ", "expected"), BAD_ENV)
def test_bad_env_values(environ: dict[str, str], expected: str) -> None:
    assert refusal("", environ).startswith(expected)


def test_file_value_still_validated_under_env_override() -> None:
    message = refusal("[billing]\nmax_call_length = 0\n", {"RADIUSD_BILLING_MAX_CALL_LENGTH": "5"})
    assert message.startswith("billing.max_call_length:")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("YES", True), ("1", True), (" false ", False), ("No", False), ("0", False)],
)
def test_env_bool_words(text: str, expected: bool) -> None:
    from billing_core.config import _env_bool

    assert _env_bool(text, "RADIUSD_X") is expected


def test_env_bool_bad_word() -> None:
    from billing_core.config import _env_bool

    with pytest.raises(
        ConfigError, match=r"^RADIUSD_X: expected true/false/1/0/yes/no, got 'maybe'$"
    ):
        _env_bool("maybe", "RADIUSD_X")


# --------------------------------------------------------------------------- loading


def test_packaged_default_loads() -> None:
    config = load_config(None, {})
    assert config.source == "<packaged default>"
    assert config.server == ServerConfig()
    assert config.database.url.reveal() == "sqlite:///var/billing.db"
    assert config.redis.url.reveal() == ""
    assert config.billing == BillingConfig()
    assert [str(nas.address) for nas in config.nas] == ["127.0.0.1/32", "::1/128"]
    for nas in config.nas:
        assert nas.secret.reveal() == "testing123"
        assert not nas.require_message_authenticator
        assert nas.limit_proxy_state
        assert nas.bill_leg == "originate"


def test_packaged_default_honours_env() -> None:
    config = load_config(None, {"RADIUSD_BILLING_MAX_CALL_LENGTH": "42"})
    assert config.billing.max_call_length == 42


def test_load_config_from_file(tmp_path: Path) -> None:
    path = tmp_path / "radiusd.toml"
    path.write_text(CONTRACT_EXAMPLE)
    config = load_config(path, {})
    assert config.source == str(path)
    assert len(config.nas) == 1


def test_load_config_environ_defaults_to_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "radiusd.toml"
    path.write_text("")
    monkeypatch.setenv("RADIUSD_BILLING_AUTH_HOLD_SECONDS", "77")
    assert load_config(path).billing.auth_hold_seconds == 77


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(info.value).startswith(f"{path}: cannot read: ")


def test_load_config_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nauth_listen = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    message = str(info.value)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "\n" not in message


def test_resolve_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path(None, {}) is None
    assert resolve_config_path("", {"RADIUSD_CONFIG": ""}) is None
    assert resolve_config_path(None, {"RADIUSD_CONFIG": "/etc/r.toml"}) == Path("/etc/r.toml")
    assert resolve_config_path("a.toml", {"RADIUSD_CONFIG": "/etc/r.toml"}) == Path("a.toml")
    DEFAULT_CONFIG_PATH.parent.mkdir()
    DEFAULT_CONFIG_PATH.write_text("")
    assert resolve_config_path(None, {}) == DEFAULT_CONFIG_PATH
    assert resolve_config_path(None, {"RADIUSD_CONFIG": "/etc/r.toml"}) == Path("/etc/r.toml")
