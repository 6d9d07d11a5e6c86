"""Carrier-scale data: clients, accounts and rate tables as a provisioning YAML + rates CSVs.

The files are what an operator would load (CONTRACT §4) and they are loaded through the
project's own commands (``billingctl db upgrade`` and ``billingctl load``; see ``Loader``).
Generation is deterministic for a ``DataSpec`` and cached under ``bench/out/data/`` keyed by
its parameters; a manifest beside the files tells the packet builder which logins,
passwords and called numbers exist.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path

GENERATOR_VERSION = 3  # 3: every other login allows pap, chap and digest
OUT = Path(__file__).resolve().parent / "out"
CURRENCY = "USD"
OPENING_BALANCE = "1000000.00"
MAX_CALL_LENGTH = 3600
# RFC 2544 benchmarking range: the values of "ip" accounts (data only, never a traffic target)
_IP_BASE = (198 << 24) | (18 << 16)
_IP_SPAN = 1 << 17


@dataclass(frozen=True)
class DataSpec:
    name: str
    clients: int
    accounts: int
    prefixes: int
    tables: int
    seed: int = 4

    def key(self) -> str:
        text = json.dumps([GENERATOR_VERSION, asdict(self)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> str:
        return (
            f"{self.clients:,} clients, {self.accounts:,} accounts, "
            f"{self.prefixes:,} prefixes in {self.tables} rate table(s)"
        )


BIG = DataSpec("big", clients=10_000, accounts=100_000, prefixes=1_000_000, tables=10)
SMALL = DataSpec("small", clients=100, accounts=100, prefixes=100, tables=1)


@dataclass(frozen=True)
class Login:
    username: str
    password: str
    table: int
    postpaid: bool
    methods: str = "pap"  # "pap" (a salted hash) or "pap,chap,digest" (encrypted)


@dataclass
class Manifest:
    """What the generated data holds that requests need: logins and rated numbers."""

    logins: list[Login]
    numbers: list[list[str]]  # per rate table: numbers that have a rate
    unrated_numbers: list[str]  # numbers no table rates (reject code 9)
    stats: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "logins": [
                    [x.username, x.password, x.table, x.postpaid, x.methods] for x in self.logins
                ],
                "numbers": self.numbers,
                "unrated_numbers": self.unrated_numbers,
                "stats": self.stats,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        return cls(
            logins=[
                Login(str(row[0]), str(row[1]), int(row[2]), bool(row[3]), *map(str, row[4:5]))
                for row in data["logins"]
            ],
            numbers=[list(map(str, n)) for n in data["numbers"]],
            unrated_numbers=list(map(str, data["unrated_numbers"])),
            stats={str(k): int(v) for k, v in data["stats"].items()},
        )


@dataclass(frozen=True)
class DataSet:
    spec: DataSpec
    directory: Path
    provisioning: Path  # the YAML with rate tables given as `csv:`
    rate_files: tuple[tuple[str, Path], ...]  # (rate table name, CSV)
    manifest: Manifest
    generated_seconds: float


def table_name(index: int) -> str:
    return f"rt-{index:02d}"


def _ident_plan(per_client: int) -> list[str]:
    """60% login, 20% ip, 20% ani (at least one login per client)."""
    logins = max(1, round(per_client * 0.6))
    ips = (per_client - logins) // 2
    return ["login"] * logins + ["ip"] * ips + ["ani"] * (per_client - logins - ips)


def _prefixes(rng: random.Random, count: int) -> list[str]:
    """Distinct dialling prefixes of 3 to 8 digits, none starting with 0."""
    seen: set[str] = set()
    out: list[str] = []
    lengths = (3, 4, 5, 5, 6, 6, 6, 7, 7, 8)
    while len(out) < count:
        length = rng.choice(lengths)
        code = str(rng.randint(1, 9)) + "".join(rng.choices(string.digits, k=length - 1))
        if code not in seen:
            seen.add(code)
            out.append(code)
    return out


def _write_rates(path: Path, rng: random.Random, codes: list[str]) -> None:
    lines = ["code,name,rate,setup_fee,min_volume,interval,grace_volume,effective_date,end_date"]
    for code in codes:
        rate = f"0.{rng.randint(50, 2000):04d}"
        min_volume = rng.choice((0, 0, 30, 60))
        interval = rng.choice((1, 6, 60, 60))
        lines.append(f"{code},dest {code},{rate},0,{min_volume},{interval},0,2020-01-01T00:00:00Z,")
    path.write_text("\n".join(lines) + "\n")


def _number(rng: random.Random, prefix: str) -> str:
    return prefix + "".join(rng.choices(string.digits, k=max(0, 11 - len(prefix))))


def generate(spec: DataSpec, out: Path = OUT) -> DataSet:
    """The data set for ``spec``, generated once and then read from the cache."""
    import time

    directory = out / "data" / f"{spec.name}-{spec.key()}"
    marker = directory / "complete.json"
    files = tuple((table_name(t), directory / f"rates-{t:02d}.csv") for t in range(spec.tables))
    if marker.exists():
        return _cached(spec, directory, files, marker)
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    # one generator for everything, drawn from in this order: the rate tables, the
    # unrated numbers, then the clients' passwords (the files depend on the order)
    rng = random.Random(spec.seed)
    numbers = _rate_tables(rng, spec, files)
    unrated = _unrated_numbers(rng)
    lines, logins = _provisioning(rng, spec, files)
    provisioning = directory / "provisioning.yaml"
    provisioning.write_text("\n".join(lines) + "\n")
    manifest = Manifest(
        logins,
        numbers,
        unrated,
        {
            "clients": spec.clients,
            "accounts": spec.accounts,
            "prefixes": spec.prefixes,
            "tables": spec.tables,
        },
    )
    (directory / "manifest.json").write_text(manifest.to_json())
    seconds = time.monotonic() - started
    marker.write_text(json.dumps({"seconds": seconds}))
    return DataSet(spec, directory, provisioning, files, manifest, seconds)


def _cached(
    spec: DataSpec, directory: Path, files: tuple[tuple[str, Path], ...], marker: Path
) -> DataSet:
    """The data set a previous ``generate`` completed (``marker`` exists)."""
    meta = json.loads(marker.read_text())
    return DataSet(
        spec,
        directory,
        directory / "provisioning.yaml",
        files,
        Manifest.from_json((directory / "manifest.json").read_text()),
        float(meta["seconds"]),
    )


def _rate_tables(
    rng: random.Random, spec: DataSpec, files: tuple[tuple[str, Path], ...]
) -> list[list[str]]:
    """Each rate table's CSV written; per table, up to 500 numbers it rates."""
    per_table = [spec.prefixes // spec.tables] * spec.tables
    per_table[0] += spec.prefixes - sum(per_table)
    numbers: list[list[str]] = []
    for t, (_name, path) in enumerate(files):
        codes = _prefixes(rng, per_table[t])
        _write_rates(path, rng, codes)
        sample = rng.sample(codes, min(len(codes), 500))
        numbers.append([_number(rng, code) for code in sample])
    return numbers


def _unrated_numbers(rng: random.Random) -> list[str]:
    """Numbers starting with 0, which no prefix matches."""
    return ["0" + "".join(rng.choices(string.digits, k=10)) for _ in range(200)]


def _accounts_per_client(spec: DataSpec) -> list[int]:
    """The accounts spread evenly, the first clients taking one more of the remainder."""
    per_client = [spec.accounts // spec.clients] * spec.clients
    for i in range(spec.accounts - sum(per_client)):
        per_client[i] += 1
    return per_client


def _provisioning(
    rng: random.Random, spec: DataSpec, files: tuple[tuple[str, Path], ...]
) -> tuple[list[str], list[Login]]:
    """The provisioning YAML's lines, and the logins it holds."""
    logins: list[Login] = []
    lines = [
        "# generated by bench/datagen.py: " + spec.describe(),
        "settings:",
        f"  max_call_length: {MAX_CALL_LENGTH}",
        "rate_tables:",
    ]
    lines += [
        f'  - {{name: "{name}", currency: {CURRENCY}, csv: "{path.name}"}}' for name, path in files
    ]
    lines.append("clients:")
    account_no = 0  # over all clients: the ip and ani values
    for c, count in enumerate(_accounts_per_client(spec)):
        lines += _client(rng, spec, c, count, account_no, logins)
        account_no += count
    return lines, logins


def _client(
    rng: random.Random,
    spec: DataSpec,
    c: int,
    count: int,
    account_no: int,
    logins: list[Login],
) -> list[str]:
    """Client ``c`` with its ``count`` accounts, numbered from ``account_no``; its logins
    are appended to ``logins``."""
    table = c % spec.tables
    postpaid = c % 10 == 9
    name = f"c{c:05d}"
    lines = [
        f'  - name: "{name}"',
        f'    rate_table: "{table_name(table)}"',
        f"    postpaid: {'true' if postpaid else 'false'}",
        f'    payments: [{{id: "{name}-opening", amount: "{OPENING_BALANCE}"}}]',
        "    accounts:",
    ]
    for j, ident in enumerate(_ident_plan(count)):
        account = f"{name}-{j}"
        if ident == "login":
            login = _login(rng, f"u{c:05d}x{j}", table, postpaid, len(logins))
            logins.append(login)
            lines.append(_login_account(account, login))
        elif ident == "ip":
            value = _IP_BASE + (account_no + j) % _IP_SPAN
            ip = ".".join(str((value >> s) & 255) for s in (24, 16, 8, 0))
            lines.append(f'      - {{name: "{account}", ident: ip, value: "{ip}"}}')
        else:
            lines.append(
                f'      - {{name: "{account}", ident: ani, value: "1555{account_no + j:07d}"}}'
            )
    return lines


def _login(rng: random.Random, user: str, table: int, postpaid: bool, index: int) -> Login:
    """The ``index``-th login of the data set, with a fresh password."""
    password = "".join(rng.choices(string.ascii_letters + string.digits, k=10))
    # every other login keeps its secret encrypted (chap and digest need it)
    methods = "pap,chap,digest" if index % 2 else "pap"
    return Login(user, password, table, postpaid, methods)


def _login_account(account: str, login: Login) -> str:
    methods = login.methods.replace(",", ", ")
    return (
        f'      - {{name: "{account}", ident: login, value: "{login.username}", '
        f'password: "{login.password}", auth_methods: [{methods}]}}'
    )


def provisioning_without_rates(data: DataSet) -> Path:
    """The same provisioning file with empty rate tables (for a separate rates importer)."""
    path = data.directory / "provisioning-no-rates.yaml"
    if not path.exists():
        text = data.provisioning.read_text()
        for name, csv_path in data.rate_files:
            text = text.replace(
                f'{{name: "{name}", currency: {CURRENCY}, csv: "{csv_path.name}"}}',
                f'{{name: "{name}", currency: {CURRENCY}, rates: []}}',
            )
        path.write_text(text)
    return path
