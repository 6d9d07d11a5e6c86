"""What is sent: the scenarios, their jobs, and the replies each kind of request expects.

Every job gets identifiers of its own (Acct-Session-Id, h323-conf-id, Cisco-AVPair call-id),
unique in the run, so no request is a retransmission of another and every Stop is a new leg
(except in the two-node scenario, whose re-sent Stops are retransmissions on purpose).
Pools are built once per run, with pyrad, in worker processes, and sent unchanged to every
target (our server and both baselines): the same bytes for all.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import pickle
import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import packets
from bench.datagen import Login, Manifest
from bench.loadgen import Job, Pool, Step

AUTH = 0
ACCT = 1

# kinds of request
ACCEPT = 0  # a known login, right password, a rated number
UNKNOWN = 1  # no such account
BAD_PASSWORD = 2
NO_RATE = 3  # a number no rate table rates
ACCOUNTING = 4
KIND_NAMES = ("accept", "unknown account", "wrong password", "no rate", "accounting")

# the reply each target gives to each kind (FreeRADIUS has no rating; static checks nothing)
EXPECT_OURS = {ACCEPT: 2, UNKNOWN: 3, BAD_PASSWORD: 3, NO_RATE: 3, ACCOUNTING: 5}
EXPECT_FR_SQL = {ACCEPT: 2, UNKNOWN: 3, BAD_PASSWORD: 3, NO_RATE: 2, ACCOUNTING: 5}
EXPECT_FR_STATIC = {ACCEPT: 2, UNKNOWN: 3, BAD_PASSWORD: 2, NO_RATE: 2, ACCOUNTING: 5}


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    requests_per_job: float  # on average
    unit: str  # what a job is called in the report

    def describe(self) -> str:
        return self.title


SCENARIOS: dict[str, Scenario] = {
    "auth": Scenario("auth", "authorization only (Access-Request → Accept)", 1, "authorizations"),
    "auth-chap": Scenario(
        "auth-chap",
        "authorization by CHAP on an encrypted secret (ours only)",
        1,
        "authorizations",
    ),
    "auth-digest": Scenario(
        "auth-digest",
        "authorization by SIP Digest (draft-sterman) on an encrypted secret (ours only)",
        1,
        "authorizations",
    ),
    "acct": Scenario("acct", "accounting only (Start + Stop of a call)", 2, "Start+Stop pairs"),
    "calls": Scenario("calls", "whole calls (Access-Request, Start, Stop)", 3, "calls"),
    "mix": Scenario(
        "mix",
        "mix: 60% whole calls, 40% rejected Access-Requests (unknown account, "
        "wrong password, unrated number)",
        0.6 * 3 + 0.4,
        "jobs",
    ),
}

# Two nodes (issue 12): whole calls spread over two deployments' addresses the way switches
# balance and fail over. Not in SCENARIOS: it runs against a deployment of nodes (``cli``),
# not against every target. A step's destination is ``node * 2 + port`` (``NODE_SLOTS``
# nodes), so the load generator sends it to that node's authentication or accounting port.
NODE_SLOTS = 2
FAILOVER_EVERY = 10  # a call of ten: its Stop goes to the other node (Start on A, Stop on B)
RESEND_EVERY = 10  # a call of ten: its Stop, once answered, is sent again to the other node
TWO_NODE = Scenario(
    "two-node",
    "whole calls alternating between two nodes; one in ten ends on the other node, "
    "one in ten has its answered Stop sent again to the other node",
    3 + 1 / RESEND_EVERY,
    "calls",
)
STOP_STEP = 2  # in a two-node job, steps from this one on are Stops (the re-sent one last)


def two_node_plan(j: int) -> tuple[int, int, bool]:
    """(the node of call ``j``'s Access-Request and Start, the node of its Stop, whether
    its Stop is then re-sent to the other node)."""
    home = j % NODE_SLOTS
    other = (home + 1) % NODE_SLOTS
    stop = other if j % FAILOVER_EVERY == 3 else home
    return home, stop, j % RESEND_EVERY == 7


def session_id(spec: PoolSpec, j: int) -> str:
    """The Acct-Session-Id of job ``j`` of a pool (its index in the pool)."""
    return f"{spec.salt:06x}{spec.namespace:02x}{j:08x}"


# scenarios the FreeRADIUS baselines are not configured for (no CHAP/Digest secrets there)
OURS_ONLY = frozenset({"auth-chap", "auth-digest"})
# the method each authorization scenario uses, and the logins it may pick
_METHOD = {"auth-chap": "chap", "auth-digest": "digest"}


@dataclass(frozen=True)
class PoolSpec:
    scenario: str
    jobs: int
    namespace: int  # keeps the identifiers of different pools apart
    salt: int  # keeps the identifiers of different runs apart
    secret: bytes


_manifest: Manifest | None = None
_dictionary: Any = None
_CHUNK = 2000


def _init(manifest: Manifest) -> None:
    global _manifest, _dictionary  # noqa: PLW0603 - per worker process
    _manifest = manifest
    _by_scenario.clear()
    _dictionary = packets.dictionary()


def _call(rng: random.Random, spec: PoolSpec, j: int, login: Login) -> packets.Call:
    assert _manifest is not None
    numbers = _manifest.numbers[login.table]
    unique = session_id(spec, j)
    return packets.Call(
        username=login.username,
        password=login.password,
        calling="4420" + str(rng.randrange(10_000_000)).zfill(7),
        called=numbers[rng.randrange(len(numbers))],
        session_id=unique,
        conf_id=(unique + "0" * 32)[:32].upper(),
        duration=rng.randint(30, 600),
    )


def _auth(spec: PoolSpec, rng: random.Random, call: packets.Call, kind: int) -> Step:
    data = packets.access_request(_dictionary, spec.secret, 0, rng.randbytes(16), call)
    return (AUTH, data, kind)


def _acct(spec: PoolSpec, call: packets.Call, status: int) -> Step:
    return (ACCT, packets.accounting_request(_dictionary, spec.secret, 0, call, status), ACCOUNTING)


def _job(spec: PoolSpec, rng: random.Random, j: int) -> Job:
    assert _manifest is not None
    name = spec.scenario
    logins = _logins(name)
    login = logins[rng.randrange(len(logins))]
    call = _call(rng, spec, j, login)
    if name == "auth":  # today's PAP: on a salted hash
        return (_auth(spec, rng, call, ACCEPT),)
    if name in _METHOD:
        return (_auth(spec, rng, replace(call, method=_METHOD[name]), ACCEPT),)
    if name == "acct":
        return (_acct(spec, call, packets.START), _acct(spec, call, packets.STOP))
    if name == TWO_NODE.name:
        return _two_node(spec, rng, j, call)
    whole = (
        _auth(spec, rng, call, ACCEPT),
        _acct(spec, call, packets.START),
        _acct(spec, call, packets.STOP),
    )
    if name == "calls":
        return whole
    draw = rng.random()
    if draw < 0.6:
        return whole
    if draw < 0.75:
        unknown = replace(call, username=f"nobody{j:x}", password="x" * 8)
        return (_auth(spec, rng, unknown, UNKNOWN),)
    if draw < 0.9:
        wrong = replace(call, password=call.password + "!")
        return (_auth(spec, rng, wrong, BAD_PASSWORD),)
    unrated = _manifest.unrated_numbers[rng.randrange(len(_manifest.unrated_numbers))]
    return (_auth(spec, rng, replace(call, called=unrated), NO_RATE),)


_by_scenario: dict[str, list[Login]] = {}


def _logins(scenario: str) -> list[Login]:
    """``auth``: PAP-only logins (hashed); ``auth-chap``/``auth-digest``: the encrypted
    ones; other scenarios: any (every login allows PAP)."""
    assert _manifest is not None
    found = _by_scenario.get(scenario)
    if found is None:
        every = _manifest.logins
        if scenario == "auth":
            found = [x for x in every if x.methods == "pap"] or every
        elif scenario in _METHOD:
            found = [x for x in every if _METHOD[scenario] in x.methods.split(",")]
            if not found:
                raise RuntimeError(f"the data set has no login for {scenario} (regenerate it)")
        else:
            found = every
        _by_scenario[scenario] = found
    return found


def _at(node: int, step: Step) -> Step:
    return (node * 2 + step[0], step[1], step[2])


def _two_node(spec: PoolSpec, rng: random.Random, j: int, call: packets.Call) -> Job:
    home, stop_node, resend = two_node_plan(j)
    stop = _acct(spec, call, packets.STOP)
    steps = [
        _at(home, _auth(spec, rng, call, ACCEPT)),
        _at(home, _acct(spec, call, packets.START)),
        _at(stop_node, stop),
    ]
    if resend:  # the same datagram (a retransmission), to the node that did not answer it
        steps.append(_at((stop_node + 1) % NODE_SLOTS, stop))
    return tuple(steps)


def _build(spec: PoolSpec, first: int, last: int) -> list[Job]:
    rng = random.Random(f"{spec.salt}/{spec.namespace}/{first}")
    return [_job(spec, rng, j) for j in range(first, last)]


def cached_pool(spec: PoolSpec, data_key: str, manifest: Manifest, directory: Path) -> Pool:
    """``build_pool``, kept in ``directory`` keyed by everything that shapes the bytes.

    Every run starts from fresh databases (cloned or copied from the loaded cache, Redis
    emptied), so the same requests can be sent again in a later run.
    """
    digest = hashlib.sha256(repr((spec, data_key)).encode())
    for module in (packets.__file__, __file__):
        digest.update(Path(module).read_bytes())
    path = directory / f"{spec.scenario}-{digest.hexdigest()[:16]}.pickle"
    if path.exists():
        with path.open("rb") as handle:
            loaded: Pool = pickle.load(handle)  # noqa: S301 - our own cache file
        return loaded
    pool = build_pool(spec, manifest)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob(f"{spec.scenario}-*.pickle"):
        old.unlink()  # other sizes, data sets or code
    partial = path.with_suffix(".partial")
    with partial.open("wb") as handle:
        pickle.dump(pool, handle, protocol=pickle.HIGHEST_PROTOCOL)
    partial.replace(path)
    return pool


def build_pool(spec: PoolSpec, manifest: Manifest, workers: int | None = None) -> Pool:
    """``spec.jobs`` jobs built with pyrad in ``workers`` processes (default: one per core)."""
    workers = workers or os.cpu_count() or 1
    bounds = [*range(0, spec.jobs, _CHUNK), spec.jobs]
    if workers == 1 or spec.jobs <= _CHUNK:
        _init(manifest)
        return [job for a, b in itertools.pairwise(bounds) for job in _build(spec, a, b)]
    context = multiprocessing.get_context("fork")
    pool: Pool = []
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init, initargs=(manifest,)
    ) as executor:
        for part in executor.map(_build, itertools.repeat(spec), bounds[:-1], bounds[1:]):
            pool.extend(part)
    return pool


def jobs_for(scenario: Scenario, max_rate: float, seconds: float) -> int:
    """Enough jobs for ``max_rate`` requests/s over ``seconds``."""
    return max(64, int(max_rate * seconds / scenario.requests_per_job * 1.1))


def pool_requests(pool: Sequence[Job]) -> int:
    return sum(len(job) for job in pool)
