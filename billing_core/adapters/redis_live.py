"""The live state in Redis: balances, holds and calls per client, changed only by Lua scripts.

Layout (every key of one client under the hash tag ``{c:<id>}``, so each script touches one
slot and runs unchanged on Redis Cluster):

- ``{c:N}:bal``   the live balance in integer micro-units; its absence means "not loaded"
- ``{c:N}:calls`` hash uid -> JSON {s: "h"|"a", h: hold micros, e: hold expiry ms (held),
                  a: account id, c: called number, n: NAS key, t: authorized ms, g: grant,
                  i: [identifiers], x: 1 when its accounting was recorded}
- ``{c:N}:ids``   hash "<NAS key>|<identifier>" -> uid (a repeated Access-Request finds its call)
- ``{c:N}:agg``   hash {ah: the holds of the active calls (micros), an: how many there are,
                  hh and hc: the same of the held calls whose expiry is after hl, a time in
                  ms that each authorization moves to its own, taking off the holds that
                  lapsed meanwhile, gc: when the next authorization checks the tally}
- ``{c:N}:hs``    sorted set of the uids of the held calls, scored by hold expiry (ms). The
                  scripts keep both in step with ``calls`` (``common.lua``), so that an
                  authorization decodes only the holds that lapsed since the last one (each
                  hold once in its life), not every call in progress, every hold not yet
                  lapsed, nor every lapsed hold kept for its retention; a request older than
                  hl (another node's clock) also reads the holds that lapsed between the
                  two. A client without ``agg`` or its held tally (written by an earlier
                  version) is counted from its records at its next use, and a client's first
                  authorization in ten seconds checks the tally against the records (a
                  rolling upgrade: earlier nodes keep none)
- ``{c:N}:seq``   the client's live sequence (``live_balances.seq``) of the last ledger write
                  applied here: effects apply only on top of the sequence before theirs
- ``{c:N}:fail:<account>`` wrong passwords of a login account in its 60 s window (expires)
- ``{c:N}:lock:<account>`` present while the account is locked out (expires); the
  authorization script checks it, so a correct caller pays no extra round trip

Outside the client's slot, written in the same pipeline as the authorization script:

- ``hold:{<NAS key>}:<identifier>`` -> "<client id>|<uid>": accounting finds the hold of a
  call; Accounting-On/Off finds the holds of a NAS key by scanning its entries (one slot)

The scripts are ``billing_core/adapters/lua/*.lua``; the call record above is built here
only (``call_record``, from the database's ``LiveCall``) and read by them.

A client whose ``bal`` key is missing (a flushed or new Redis) is loaded from the database
on first use, so the live state rebuilds itself client by client, also during traffic. A
client whose effects did not all arrive (a node cut off from Redis, or killed between its
commit and its Redis update) is known from the database (``seq <> applied``) and reloaded by
whichever node's healer sees it first (``ResyncingLive.heal``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, Self

import orjson
from redis.exceptions import NoScriptError, ResponseError

from billing_core.domain.calls import CallState
from billing_core.domain.model import RejectReason
from billing_core.domain.money import ZERO, from_micros, to_micros
from billing_core.domain.policy import Accept, Decision, Reject
from billing_core.ports import (
    Activated,
    BalanceMoved,
    HeldCall,
    HoldRequest,
    LiveCall,
    LiveEffect,
    LiveView,
    LockoutProbe,
    NasReleased,
    Rehold,
    Released,
)

from . import lua, resp
from .redis_connect import REDIS_ERRORS, SyncRedis, load_scripts, redis_client
from .resp import RespConnection

# One client's state as the database knows it: (live sequence, balance, accounted calls).
# (``SqlLiveTruth.live_client``'s ``ClientTruth``)
ClientLoader = Callable[[int], tuple[int, Decimal, Sequence[LiveCall]]]
# Of a client's holds (NAS key, identifiers, authorized at): the (NAS key, identifier) pairs
# whose call the database has a CDR of (``SqlStore.ended_legs``).
EndedLegs = Callable[[int, Sequence[tuple[str, Sequence[str], datetime]]], set[tuple[str, str]]]

HOLD_INDEX_SECONDS = 2 * 86400

# the scripts (billing_core/adapters/lua/*.lua); common.lua goes before those that use it
AUTHORIZE = lua.script("common", "authorize")
LOCKOUT = lua.script("lockout")
INDEX = lua.script("index")
APPLY = lua.script("common", "apply")
LOAD = lua.script("common", "load")
LEASE = lua.script("lease")
VIEW = lua.script("common", "view")

# the lease of the nodes' shared repairs: one node heals (renewing it every round while it
# can reach Redis), one sweeps a period; a node that stops or loses Redis lets it lapse
HEAL_LEASE_KEY = "radiusd:lease:heal"
HEAL_LEASE_MS = 3000
SWEEP_LEASE_KEY = "radiusd:lease:sweep"
# the lease of the deployment's chores (closing stale calls, sending Disconnect-Requests and
# queued mail): one node does them while it renews it; the others take over when it lapses
CHORES_LEASE_KEY = "radiusd:lease:chores"
CHORES_LEASE_MS = 3000

_REASONS = {reason.value: reason for reason in RejectReason}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _sha(script: str) -> str:
    """The name Redis gives a script (EVALSHA)."""
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def call_record(call: LiveCall) -> dict[str, Any]:
    """A call the database recorded, as ``{c:N}:calls`` keeps it (the module's text)."""
    expires = call.hold_expires_at
    return {
        "s": "a" if call.state == CallState.ACTIVE else "h",
        "h": to_micros(call.hold),
        "e": _ms(expires) if expires else 0,
        "a": call.account_id or 0,
        "c": call.called,
        "n": call.nas_key,
        "t": _ms(call.authorized_at) if call.authorized_at else 0,
        "g": call.granted_seconds or 0,
        "i": list(call.identifiers),
        "x": 1,
    }


def _keys(client_id: int) -> list[str]:
    """The client's keys: its balance, its calls (uid -> record), their index (NAS key and
    identifier -> uid), the tally of its active calls and the set of its held ones (the
    scripts keep the last two in step with the calls)."""
    tag = f"{{c:{client_id}}}"
    return [f"{tag}:bal", f"{tag}:calls", f"{tag}:ids", f"{tag}:agg", f"{tag}:hs"]


def _seq_key(client_id: int) -> str:
    return f"{{c:{client_id}}}:seq"


def _auth_keys(request: HoldRequest) -> list[str]:
    keys = _keys(request.terms.client.id)
    if request.lock_check:
        keys.append(f"{{c:{request.terms.client.id}}}:lock:{request.account_id}")
    return keys


def lockout_call(probe: LockoutProbe) -> tuple[list[str], list[int]]:
    """(keys, args) of the LOCKOUT script: the account's keys in its client's slot."""
    tag = f"{{c:{probe.client_id}}}"
    keys = [f"{tag}:lock:{probe.account_id}", f"{tag}:fail:{probe.account_id}"]
    args = [
        1 if probe.failed else 0,
        probe.max_failures,
        probe.window_seconds,
        probe.lockout_seconds,
    ]
    return keys, args


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLiveState:
    """LiveState on Redis; ``loader`` reads one client's truth from the database."""

    def __init__(
        self,
        client: SyncRedis,
        loader: ClientLoader,
        *,
        retention_seconds: int = 86400,
        ended: EndedLegs | None = None,
    ) -> None:
        self.redis = client
        self._loader = loader
        self._ended = ended
        self._retention_ms = retention_seconds * 1000
        self._authorize = client.register_script(AUTHORIZE)
        self._apply = client.register_script(APPLY)
        self._load = client.register_script(LOAD)
        self._view = client.register_script(VIEW)
        self._lockout = client.register_script(LOCKOUT)

    @classmethod
    def from_url(
        cls, url: str, loader: ClientLoader, *, cluster: bool = False, **kwargs: Any
    ) -> Self:
        """On the server of ``url``, or (``cluster``) the Redis Cluster it is a node of."""
        return cls(redis_client(url, cluster), loader, **kwargs)

    # --- LiveState ---------------------------------------------------------------------------
    def reachable(self) -> bool:
        try:
            return bool(self.redis.ping())
        except REDIS_ERRORS:
            return False

    def authorize(self, request: HoldRequest) -> Decision:
        """One round trip: the script and the hold's index entries in one pipeline."""
        for _attempt in range(3):
            pipe = self.redis.pipeline(transaction=False)
            queue_authorize(pipe, self._authorize, request, self._retention_ms)
            try:
                replies = pipe.execute()
            except NoScriptError:  # a cluster's pipeline loads no script: a master lacked it
                load_scripts(self.redis, (AUTHORIZE,))
                continue
            outcome = read_authorize(replies[0], request)
            if outcome is None:
                self.load_client(request.terms.client.id, replace=False)
                continue
            decision, own_uid = outcome
            if own_uid is not None and own_uid != request.uid:
                self._index(request, own_uid)  # rare: the call was first seen by another id
            return decision
        raise RuntimeError(f"live state of client {request.terms.client.id} could not be loaded")

    def auth_lockout(self, probe: LockoutProbe) -> bool:
        keys, args = lockout_call(probe)
        return bool(self._lockout(keys=keys, args=args))

    def _index(self, request: HoldRequest, uid: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        queue_index(pipe, request, uid)
        pipe.execute()

    def find_holds(self, keys: Sequence[tuple[str, tuple[str, ...]]]) -> list[HeldCall | None]:
        """The holds of a batch in two round trips: one MGET per NAS key (its index keys
        share a slot), then one HMGET per client (its calls hash)."""
        if not keys:
            return []
        by_nas: dict[str, list[str]] = {}
        for nas_key, identifiers in keys:
            by_nas.setdefault(nas_key, []).extend(identifiers)
        # MGET of each NAS key's index keys (they share a slot)
        gets = [
            ["MGET", *(index_key(nas_key, ident) for ident in idents)]
            for nas_key, idents in by_nas.items()
        ]
        found: dict[tuple[str, str], Any] = {}
        for (nas_key, idents), values in zip(by_nas.items(), self._replies(gets), strict=True):
            found.update(zip(((nas_key, i) for i in idents), values, strict=True))
        refs: list[tuple[int, str] | None] = []
        for nas_key, identifiers in keys:
            hits = [v for v in (found[(nas_key, i)] for i in identifiers) if v is not None]
            if hits:
                client_text, uid = _text(hits[0]).split("|", 1)
                refs.append((int(client_text), uid))
            else:
                refs.append(None)
        uids: dict[int, list[str]] = {}
        for ref in refs:
            if ref is not None:
                uids.setdefault(ref[0], []).append(ref[1])
        records: dict[tuple[int, str], Any] = {}
        if uids:
            reads = [["HMGET", _keys(client_id)[1], *wanted] for client_id, wanted in uids.items()]
            for (client_id, wanted), raws in zip(uids.items(), self._replies(reads), strict=True):
                records.update(zip(((client_id, u) for u in wanted), raws, strict=True))
        out: list[HeldCall | None] = []
        for ref in refs:
            raw = records.get(ref) if ref is not None else None
            if ref is None or raw is None:
                out.append(None)
                continue
            record = json.loads(raw)
            out.append(
                HeldCall(
                    uid=ref[1],
                    client_id=ref[0],
                    account_id=int(record["a"]),
                    called=str(record["c"]),
                    granted_seconds=int(record["g"]),
                    hold=from_micros(int(record["h"])),
                    authorized_at=datetime.fromtimestamp(int(record["t"]) / 1000, UTC),
                )
            )
        return out

    def apply(self, effects: Sequence[LiveEffect], seqs: Mapping[int, int] | None = None) -> None:
        by_client: dict[int, list[dict[str, Any]]] = {}
        nas_releases: list[NasReleased] = []
        for effect in effects:
            if isinstance(effect, NasReleased):
                nas_releases.append(effect)
                continue
            by_client.setdefault(effect.client_id, []).append(_op(effect))
        for release in nas_releases:
            pattern = index_key(_glob_escape(release.nas_key), "*")
            clients = {
                int(_text(value).split("|", 1)[0])
                for value in (
                    self.redis.get(key) for key in self.redis.scan_iter(match=pattern, count=1000)
                )
                if value is not None
            }
            for client_id in clients:
                by_client.setdefault(client_id, []).append(
                    {"k": "relnas", "n": release.nas_key, "b": _ms(release.before)}
                )
        if not by_client:
            return
        # one round trip for the batch: a script per client (each in its client's slot)
        seqs = seqs or {}
        replies = self._apply_all(by_client, seqs)
        releases: dict[int, list[dict[str, Any]]] = {}
        for client_id, done in zip(by_client, replies, strict=True):
            outcome = _text(done)
            if outcome in ("missing", "gap"):
                # the database already holds these effects: load the client from there
                self.load_client(client_id, replace=outcome == "gap")
                # and release, as the ops would have, what the database cannot name: an
                # authorization of an ended call held under another id (idempotent)
                ended = [op for op in by_client[client_id] if op["k"] == "rel"]
                if ended:
                    releases[client_id] = ended
        if releases:
            self._apply_all(releases, {})

    def _apply_all(
        self, by_client: dict[int, list[dict[str, Any]]], seqs: Mapping[int, int]
    ) -> list[Any]:
        # EVALSHA straight: a Script object in a pipeline asks SCRIPT EXISTS every time.
        # A call answered NOSCRIPT did not run (Redis restarted: its script cache is empty;
        # on a cluster, one master may lack it while the others ran theirs): the script is
        # loaded and only those calls sent again.
        calls = [
            (
                6,
                *_keys(client_id),
                _seq_key(client_id),
                orjson.dumps(ops).decode(),
                "" if seqs.get(client_id) is None else seqs[client_id],
            )
            for client_id, ops in by_client.items()
        ]
        replies = self._evalsha_all(calls)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            load_scripts(self.redis, (APPLY,))
            for i, reply in zip(
                missing, self._evalsha_all([calls[i] for i in missing]), strict=True
            ):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _evalsha_all(self, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        return resp.pipeline(self.redis, [("EVALSHA", self._apply.sha, *call) for call in calls])

    def _replies(self, commands: Sequence[Sequence[str | int]]) -> list[Any]:
        """The replies of read commands sent together; an error reply raises."""
        replies = resp.pipeline(self.redis, commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def view(self, client_ids: Sequence[int], now: datetime) -> dict[int, LiveView]:
        out: dict[int, LiveView] = {}
        for client_id in client_ids:
            reply = self._view(keys=_keys(client_id), args=[_ms(now)])
            if _text(reply[0]) == "missing":
                self.load_client(client_id, replace=False)
                reply = self._view(keys=_keys(client_id), args=[_ms(now)])
            out[client_id] = LiveView(
                from_micros(int(reply[0])), from_micros(int(reply[1])), int(reply[2])
            )
        return out

    def held_calls(self, now: datetime) -> list[dict[str, Any]]:
        """Authorizations holding funds whose accounting has not been recorded yet: they live
        only here (the database knows the calls whose accounting it recorded)."""
        out: list[dict[str, Any]] = []
        now_ms = _ms(now)
        # a set: on a cluster in a slot migration, a key moved during the scan is seen twice
        for name in sorted(
            {_text(key) for key in self.redis.scan_iter(match="{c:*}:calls", count=1000)}
        ):
            client_id = int(name[3 : name.index("}")])
            for uid, raw in self.redis.hgetall(name).items():
                record = json.loads(raw)
                if record.get("x") == 1 or record.get("s") != "h" or record.get("e", 0) <= now_ms:
                    continue
                out.append(
                    {
                        "client_id": client_id,
                        "uid": _text(uid),
                        "acct_session_id": record.get("q", ""),
                        "nas": record.get("n", ""),
                        "called": record.get("c", ""),
                        "granted_seconds": record.get("g"),
                        "held": from_micros(int(record.get("h", 0))),
                        "identifiers": list(record.get("i", [])),
                        "authorized_at": datetime.fromtimestamp(int(record["t"]) / 1000, UTC)
                        if record.get("t")
                        else None,
                    }
                )
        return out

    # --- loading from the database -----------------------------------------------------------
    def load_client(self, client_id: int, *, replace: bool) -> bool:
        """Load one client's balance and accounted calls from the database; with
        ``replace=False`` only when the client is not loaded yet, else also over a state
        that is not ahead of the database's reading. No lock: the reading carries the
        client's live sequence, and a load never takes Redis back in sequence, so a ledger
        write that lands meanwhile is applied on top (its sequence follows) or, arriving
        first, makes the load a no-op (the database read is older). True when it loaded."""
        return self._load_client(client_id, replace=replace)[0]

    def _load_client(self, client_id: int, *, replace: bool) -> tuple[bool, int]:
        """``load_client``, and the client's live sequence the database was read at."""
        keys = _keys(client_id)
        ended = self._ended_holds(client_id) if replace else []
        seq, balance, calls = self._loader(client_id)
        records = {call.uid: call_record(call) for call in calls}
        loaded = self._load(
            keys=[keys[0], keys[1], _seq_key(client_id), keys[2], keys[3], keys[4]],
            args=[
                to_micros(balance),
                json.dumps(records) if records else "{}",
                int(replace),
                seq,
                json.dumps(ended),
            ],
        )
        if records:
            pipe = self.redis.pipeline(transaction=False)
            for call in calls:
                for ident in call.identifiers:
                    pipe.hset(keys[2], f"{call.nas_key}|{ident}", call.uid)
                    pipe.set(
                        index_key(call.nas_key, ident),
                        f"{client_id}|{call.uid}",
                        ex=HOLD_INDEX_SECONDS,
                    )
            pipe.execute()
        return bool(loaded), seq

    def _ended_holds(self, client_id: int) -> list[str]:
        """The client's holds in Redis whose call the database has ended: their Stop was
        recorded but its release never reached Redis, as when the Start's and the Stop's
        updates were both lost (a node cut off from Redis, a slot migration outlasting the
        retries). Without this a reload keeps them until they lapse."""
        if self._ended is None:
            return []
        holds: dict[str, tuple[str, list[str], datetime]] = {}
        for uid, raw in self.redis.hgetall(_keys(client_id)[1]).items():
            record = json.loads(raw)
            if record.get("x") != 1 and record.get("i"):
                when = datetime.fromtimestamp(int(record.get("t", 0)) / 1000, UTC)
                holds[_text(uid)] = (str(record["n"]), [str(i) for i in record["i"]], when)
        if not holds:
            return []
        found = self._ended(client_id, list(holds.values()))
        return sorted(
            uid
            for uid, (nas_key, idents, _when) in holds.items()
            if any((nas_key, ident) in found for ident in idents)
        )


def authorize_args(request: HoldRequest, retention_ms: int) -> list[Any]:
    terms = request.terms
    client = terms.client
    rate = terms.rate
    low = client.low_balance_threshold
    return [
        _ms(request.now),
        _ms(request.now) + request.hold_seconds * 1000,
        request.uid,
        request.account_id,
        request.called,
        request.nas_key,
        1 if client.postpaid else 0,
        to_micros(client.credit),
        -1 if client.capacity is None else client.capacity,
        "" if low is None else to_micros(low),
        -1 if client.low_balance_capacity is None else client.low_balance_capacity,
        1 if rate is None else 0,
        to_micros(rate.rate) if rate else 0,
        to_micros(rate.setup_fee) if rate else 0,
        rate.min_volume if rate else 0,
        rate.interval if rate else 1,
        rate.grace_volume if rate else 0,
        terms.max_call_length,
        retention_ms,
        len(request.identifiers),
        *request.identifiers,
        request.acct_session_id,
    ]


def index_key(nas_key: str, ident: str) -> str:
    return f"hold:{{{nas_key}}}:{ident}"


def _glob_escape(text: str) -> str:
    return "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in text)


def index_call(request: HoldRequest, uid: str) -> tuple[list[str], list[Any]]:
    """(keys, args) of the INDEX script for a hold: one entry per identifier."""
    keys = [index_key(request.nas_key, ident) for ident in request.identifiers]
    return keys, [f"{request.terms.client.id}|{uid}", HOLD_INDEX_SECONDS]


def queue_index(pipe: Any, request: HoldRequest, uid: str) -> None:
    """The hold's entries outside the client's slot, by identifier (sync pipelines)."""
    for key in index_call(request, uid)[0]:
        pipe.set(key, f"{request.terms.client.id}|{uid}", ex=HOLD_INDEX_SECONDS)


def queue_authorize(pipe: Any, script: Any, request: HoldRequest, retention_ms: int) -> None:
    """The script, then (for a call with identifiers) its index entries, in one pipeline.
    The entries name the uid the request proposes; a rejected call leaves entries that point
    to no hold, which accounting reads as "no hold"."""
    script(keys=_auth_keys(request), args=authorize_args(request, retention_ms), client=pipe)
    if request.identifiers and request.terms.rate is not None:
        queue_index(pipe, request, request.uid)


def read_authorize(reply: Any, request: HoldRequest) -> tuple[Decision, str | None] | None:
    """(decision, the uid that holds) from the script's reply; None: the client is not loaded."""
    kind = _text(reply[0])
    if kind == "missing":
        return None
    if kind == "reject":
        return Reject(_REASONS[_text(reply[1])]), None
    grant, hold, funds = int(reply[1]), int(reply[2]), int(reply[3])
    postpaid = request.terms.client.postpaid
    if grant < 0:  # authentication only
        return Accept(None, ZERO, None if postpaid else from_micros(funds)), None
    decision = Accept(grant, from_micros(hold), None if postpaid else from_micros(funds))
    return decision, _text(reply[4]) if request.identifiers else None


def _op(effect: LiveEffect) -> dict[str, Any]:
    if isinstance(effect, BalanceMoved):
        return {"k": "bal", "v": to_micros(effect.amount)}
    if isinstance(effect, Activated):
        return {
            "k": "act",
            "u": effect.uid,
            "h": to_micros(effect.hold),
            "g": effect.granted_seconds or 0,
            "a": effect.account_id or 0,
            "c": effect.called,
            "n": effect.nas_key,
            "i": list(effect.identifiers),
        }
    if isinstance(effect, Rehold):
        return {"k": "rehold", "u": effect.uid, "e": _ms(effect.expires)}
    if isinstance(effect, Released):
        return {
            "k": "rel",
            "u": effect.uid,
            "n": effect.nas_key,
            "i": list(effect.identifiers),
            "a": effect.account_id or 0,
            "c": effect.called,
        }
    raise TypeError(f"unexpected live effect {effect!r}")


class LiveMarks(Protocol):
    """The database's record of which live sequences reached Redis (``SqlStore``)."""

    def unapplied_live(self, limit: int = 1000) -> list[tuple[int, int]]: ...

    def live_sequences(self, after: int = 0, limit: int = 1000) -> list[tuple[int, int]]:
        """(client, sequence) of clients whose every effect was marked applied."""
        ...

    def mark_applied(self, applied: Mapping[int, int]) -> None: ...


_MARK_PAGE = 1000  # clients a rebuild marks applied in one statement


_log = logging.getLogger("billing_core.adapters.redis_live")


class ResyncingLive(RedisLiveState):
    """Accounting never waits for Redis: the database is the truth. An effect Redis cannot
    take is not remembered here: its client's live sequence in the database stays ahead of
    its ``applied`` mark, and ``heal`` (run every second by every node, and by a restarted
    one) reloads such clients from the database. Authorization still needs Redis: without
    it, it raises and the request is not answered."""

    def __init__(
        self,
        *args: Any,
        clients: Callable[[], Sequence[int]],
        marks: LiveMarks,
        heal_grace_seconds: float = 2.0,
        heal_lease_ms: int = HEAL_LEASE_MS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._clients = clients
        self._marks = marks
        self._grace = heal_grace_seconds
        self._lease = self.redis.register_script(LEASE)
        self._node = uuid.uuid4().hex  # this process, as a holder of the repairs' leases
        self._heal_lease_ms = heal_lease_ms
        # client -> (a sequence Redis lacked, when first seen lacking it)
        self._lagging: dict[int, tuple[int, float]] = {}
        self.missed = False  # the last apply did not reach Redis (billingctl warns)

    def holds_lease(self, key: str, ms: int) -> bool | None:
        """Take the lease ``key`` for ``ms`` milliseconds when it is free, or renew it when
        this node holds it: whether this node holds it now; None when Redis is away."""
        try:
            return bool(self._lease(keys=[key], args=[self._node, ms]))
        except REDIS_ERRORS:
            return None

    def find_holds(self, keys: Sequence[tuple[str, tuple[str, ...]]]) -> list[HeldCall | None]:
        try:
            return super().find_holds(keys)
        except REDIS_ERRORS:
            return [None] * len(keys)

    def apply(self, effects: Sequence[LiveEffect], seqs: Mapping[int, int] | None = None) -> None:
        try:
            super().apply(effects, seqs)
            self.missed = False
        except REDIS_ERRORS as error:
            self.missed = True  # the database knows: heal() repairs it
            if isinstance(error, ResponseError):
                # Redis answered, and refused: a script's fault (or an OOM, a read-only
                # replica), which the heal's reload does not cure; unreachable Redis is
                # reported by /healthz and the lagging gauge, this one only here
                _log.error("live state: Redis refused the effects of a batch: %s", error)

    def rebuild(self, tick: Callable[[], None] | None = None) -> int:
        """Reload every client from the database (balances from the ledger, accounted calls),
        one client at a time; the number of clients. ``tick`` after each (progress). What
        was read is marked applied (a page at a time), so that no healer reloads the
        clients again for effects the rebuild brought."""
        count = 0
        read: dict[int, int] = {}
        for client_id in self._clients():
            _loaded, seq = self._load_client(client_id, replace=True)
            read[client_id] = seq
            if len(read) >= _MARK_PAGE:
                self._marks.mark_applied(read)
                read = {}
            count += 1
            if tick is not None:
                tick()
        self._marks.mark_applied(read)
        return count

    @property
    def lagging(self) -> int:
        """Clients seen lacking effects in Redis for longer than the heal's grace, not yet
        repaired (Redis unreachable, or reloads failing)."""
        now = time.monotonic()
        return sum(1 for _seq, seen in self._lagging.values() if now - seen >= self._grace)

    def sequences(self, client_ids: Sequence[int]) -> dict[int, int | None]:
        """Each client's live sequence in Redis; None where the client is not loaded (its
        next use loads it from the database)."""
        replies = iter(
            self._replies(
                [
                    command
                    for client_id in client_ids
                    for command in (("EXISTS", _keys(client_id)[0]), ("GET", _seq_key(client_id)))
                ]
            )
        )
        out: dict[int, int | None] = {}
        for client_id in client_ids:
            loaded, seq = next(replies), next(replies)
            out[client_id] = int(seq or 0) if loaded else None
        return out

    def heal(self, now: float | None = None) -> int:
        """Repair the clients whose effects the database has and Redis may lack: those it
        has are marked applied; a client still lacking a sequence ``heal_grace_seconds``
        after it was first seen lacking (time enough for its writer to apply it) is reloaded
        from the database. The number of clients reloaded."""
        now = time.monotonic() if now is None else now
        try:
            # one node heals at a time: every node reading the same marks and Redis
            # sequences each second, and marking them, costs in proportion to the nodes
            if not self._lease(keys=[HEAL_LEASE_KEY], args=[self._node, self._heal_lease_ms]):
                self._lagging = {}  # whoever heals now keeps its own grace times
                return 0
        except REDIS_ERRORS:
            return 0  # the marks wait in the database; /healthz reports Redis down
        pending = self._marks.unapplied_live()
        self._lagging = {c: v for c, v in self._lagging.items() if c in dict(pending)}
        if not pending:
            return 0
        current = self.sequences([client_id for client_id, _seq in pending])
        applied: dict[int, int] = {}
        reloaded = 0
        for client_id, seq in pending:
            have = current[client_id]
            if have is None or have >= seq:
                applied[client_id] = seq
                self._lagging.pop(client_id, None)
                continue
            first = self._lagging.get(client_id)
            if first is None or have >= first[0]:  # newly lagging, or its writers progress
                self._lagging[client_id] = (seq, now)
                continue
            if now - first[1] < self._grace:
                continue
            self.load_client(client_id, replace=True)
            applied[client_id] = seq  # the reload read at least this sequence
            self._lagging.pop(client_id, None)
            reloaded += 1
        self._marks.mark_applied(applied)
        return reloaded

    def sweep(self, page: int = 1000, sweep_lease_ms: int = 55_000, *, claim: bool = True) -> int:
        """Compare every client's live sequence with the database's and reload those Redis
        holds behind a sequence it was already marked as having (a Redis restarted from an
        older snapshot). The number of clients reloaded. ``claim``: only when this node
        takes the sweep's lease (one node a period); without it (a daemon's start, before
        it answers: two reads a thousand clients) always, and a Redis error is raised."""
        reloaded, after = 0, 0
        try:
            # one node sweeps a period (the lease lapses a little before the next one)
            if claim and not self._lease(keys=[SWEEP_LEASE_KEY], args=[self._node, sweep_lease_ms]):
                return 0
        except REDIS_ERRORS:
            return 0
        while rows := self._marks.live_sequences(after, page):
            after = rows[-1][0]
            current = self.sequences([client_id for client_id, _seq in rows])
            for client_id, seq in rows:
                have = current[client_id]
                if have is not None and have < seq:
                    self.load_client(client_id, replace=True)
                    reloaded += 1
        return reloaded


class AsyncAuthorizer:
    """The check-and-hold for the daemon's event loop, on one pipelining connection
    (``resp.RespConnection``): no thread hand-off.

    Authorizations that arrive in the same turn of the event loop share one write (two
    script calls each: the check-and-hold, and the hold's index entries), so a burst costs
    one round trip, and the replies are read back in order. A script missing from the
    server (Redis restarted or flushed its scripts) answers NOSCRIPT: the scripts are loaded
    and only those commands sent again. A batch on a connection that fails, or unanswered
    within two seconds, fails every request in it (the switch sends again); the next batch
    connects again. Loading a missing client (rare) runs ``load`` in a thread."""

    def __init__(
        self,
        url: str,
        load: Callable[[int], Any],
        *,
        retention_seconds: int = 86400,
    ) -> None:
        self.redis = RespConnection(url, timeout=2, connect_timeout=2)
        self._sha = {script: _sha(script) for script in (AUTHORIZE, INDEX, LOCKOUT)}
        self._load = load
        self._retention_ms = retention_seconds * 1000
        self._pending: list[tuple[HoldRequest, Any]] = []
        self._scheduled = False
        self._tasks: set[Any] = set()

    async def authorize(self, request: HoldRequest) -> Decision:
        import asyncio

        loop = asyncio.get_running_loop()
        for _attempt in range(3):
            future: asyncio.Future[Any] = loop.create_future()
            self._pending.append((request, future))
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._flush)
            outcome = read_authorize(await future, request)
            if outcome is None:
                await loop.run_in_executor(None, self._load, request.terms.client.id)
                continue
            decision, own_uid = outcome
            if own_uid is not None and own_uid != request.uid:  # first seen by another id
                keys, args = index_call(request, own_uid)
                [reply] = await self._execute([self._evalsha(INDEX, keys, args)])
                if isinstance(reply, Exception):
                    raise reply
            return decision
        raise RuntimeError(f"live state of client {request.terms.client.id} could not be loaded")

    async def auth_lockout(self, probe: LockoutProbe) -> bool:
        """The lockout script on the same connection (only after a failure, or for a
        verified account's rare reject before the live state)."""
        keys, args = lockout_call(probe)
        [reply] = await self._execute([self._evalsha(LOCKOUT, keys, args)])
        if isinstance(reply, Exception):
            raise reply
        return bool(int(reply))

    def _flush(self) -> None:
        import asyncio

        self._scheduled = False
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _evalsha(self, script: str, keys: Sequence[str], args: Sequence[str | int]) -> bytes:
        return resp.command(["EVALSHA", self._sha[script], len(keys), *keys, *args])

    def _commands(self, request: HoldRequest) -> list[bytes]:
        """The request's commands: EVALSHA of AUTHORIZE, then (a call with identifiers and a
        rate) EVALSHA of INDEX for its entries."""
        script = self._evalsha(
            AUTHORIZE, _auth_keys(request), authorize_args(request, self._retention_ms)
        )
        if not (request.identifiers and request.terms.rate is not None):
            return [script]
        index_keys, index_args = index_call(request, request.uid)
        return [script, self._evalsha(INDEX, index_keys, index_args)]

    async def _send(self, batch: list[tuple[HoldRequest, Any]]) -> None:
        try:
            commands = [self._commands(request) for request, _future in batch]
            replies = iter(await self._execute([c for cs in commands for c in cs]))
        except Exception as exc:  # noqa: BLE001 - every request of the batch fails with it
            for _request, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_request, future), sent in zip(batch, commands, strict=True):
            reply = next(replies)
            for _index_reply in sent[1:]:
                next(replies)
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _execute(self, commands: list[bytes]) -> list[Any]:
        """Send the commands in one write, read their replies (a Redis error reply in its
        place, as an exception); NOSCRIPT replies are sent again once the scripts are loaded."""
        replies = await self.redis.execute(commands)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            await self.redis.execute([resp.command(["SCRIPT", "LOAD", s]) for s in self._sha])
            again = await self.redis.execute([commands[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def close(self) -> None:
        await self.redis.close()
