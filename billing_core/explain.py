"""Why was this call refused: the daemon's authorization, step by step, holding nothing (pure).

``explain`` runs the daemon's own code (``AuthorizationService.prepare``: identification,
password, status, rating; then ``authorization.decide`` on a read of the live state) and
describes each step as it goes. ``billingctl explain`` prints it; ``radiusd serve --trace``
logs the same steps for live requests (with the daemon's real decision at the end).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from billing_core.domain.dialled import digits_only, normalize_number
from billing_core.domain.identification import CallerFacts, canonical_ip
from billing_core.domain.model import Account, Client, RejectReason
from billing_core.domain.money import display, floor2
from billing_core.domain.policy import Decision, LiveSnapshot, Reject, decide
from billing_core.domain.rating import Rate, cost, first_grid_point
from billing_core.domain.replies import REJECT_REPLIES
from billing_core.services.authorization import (
    AuthorizationService,
    AuthorizeCall,
    AuthOutcome,
    PendingHold,
)


@dataclass(frozen=True, slots=True)
class LivePeek:
    """One client's live state as read (not changed) for an explanation."""

    balance: Decimal  # the live balance
    held: Decimal  # what the client's calls in progress hold
    calls: int  # its calls that count toward capacity (active, or held and not lapsed)
    active: int  # of which active
    source: str  # where it was read: "database", "redis", or "database (not in redis yet)"


Peek = Callable[[Client, datetime], LivePeek]


@dataclass
class Explanation:
    steps: list[dict[str, Any]] = field(default_factory=list)
    result: str = "dropped"  # accept | reject | dropped
    code: int | None = None  # h323-return-code
    reason: str | None = None
    reply_message: str | None = None
    grant_seconds: int | None = None

    def add(self, step: str, summary: str, **details: Any) -> None:
        self.steps.append({"step": step, "summary": summary, **details})

    def as_json(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "code": self.code,
            "reason": self.reason,
            "reply_message": self.reply_message,
            "grant_seconds": self.grant_seconds,
            "steps": self.steps,
        }


def _matched_by(account: Account, caller: CallerFacts) -> str:
    """Which attribute of the request matched the account (identification's order)."""
    if account.ident == "login":
        return "User-Name"
    if account.ident == "ani":
        return "Calling-Station-Id"
    if caller.user_name and canonical_ip(caller.user_name):
        return "User-Name"
    if caller.framed_ip and canonical_ip(caller.framed_ip):
        return "Framed-IP-Address"
    return "h323-remote-address"


def nas_step(
    explanation: Explanation, source: str, entry: tuple[str, str] | None, key: str | None
) -> None:
    """``entry``: the matched [[nas]] entry's (name, address); None: the packet is dropped."""
    if entry is None:
        explanation.add(
            "nas", f"{source}: no [[nas]] entry matches: the request is dropped", source=source
        )
        explanation.result, explanation.reason = "dropped", "unknown_nas"
        return
    explanation.add(
        "nas",
        f"{source} matches [[nas]] {entry[0]!r} ({entry[1]}); NAS key {key}",
        source=source,
        entry=entry[0],
        address=entry[1],
        nas_key=key,
    )


def decision_step(explanation: Explanation, decision: Decision, client: Client | None) -> None:
    """The reply the daemon sends for ``decision`` (the handler's reply table)."""
    if isinstance(decision, Reject):
        code, message = REJECT_REPLIES[decision.reason]
        explanation.result, explanation.code = "reject", code
        explanation.reason, explanation.reply_message = decision.reason.value, message
        explanation.add(
            "decision",
            f"Access-Reject, h323-return-code={code} ({decision.reason.value}): {message}",
            result="reject",
            code=code,
            reason=decision.reason.value,
            reply_message=message,
        )
        return
    explanation.result, explanation.code = "accept", 0
    explanation.grant_seconds = decision.grant_seconds
    parts = ["Access-Accept, h323-return-code=0"]
    if decision.grant_seconds is None:
        parts.append("authentication only (no Called-Station-Id): no grant, nothing held")
    else:
        parts.append(f"grant {decision.grant_seconds} s")
        if decision.hold:
            parts.append(f"would hold {display(decision.hold)}")
    if decision.funds is not None:
        parts.append(f"h323-credit-amount={floor2(decision.funds):.2f}")
    if client is not None:
        parts.append(client.currency)
    explanation.add(
        "decision",
        ", ".join(parts),
        result="accept",
        code=0,
        grant_seconds=decision.grant_seconds,
        hold=display(decision.hold),
        funds=display(decision.funds) if decision.funds is not None else None,
    )


def explain(
    service: AuthorizationService,
    request: AuthorizeCall,
    peek: Peek,
    *,
    verify_password: bool = True,
    explanation: Explanation | None = None,
    with_decision: bool = True,
) -> tuple[Explanation, Decision]:
    """The steps of the daemon's authorization of ``request`` and its decision, with the live
    state read through ``peek`` (nothing is held). ``with_decision=False`` leaves out the
    last step (the daemon's trace adds its own real decision)."""
    out = explanation if explanation is not None else Explanation()
    prepared = service.prepare(request, verify_password=verify_password)
    outcome = prepared if isinstance(prepared, AuthOutcome) else None
    account, client = prepared.account, prepared.client
    if account is None:
        _no_account_step(out, request.caller)
    else:
        _account_step(out, account, client, request.caller)
        if account.ident == "login":
            _password_step(out, account, request, outcome, verify_password=verify_password)
    if client is not None:
        out.add("status", f"client {client.name!r} is {client.status}", status=client.status)
    pending = prepared if isinstance(prepared, PendingHold) else None
    number = prepared.number
    if client is not None and (number is not None or pending is not None):
        _number_step(out, account, number, request.caller)
    if outcome is not None:
        if outcome.decision == Reject(RejectReason.NO_RATE) and client is not None:
            _no_rate_step(out, client, number, request.arrived)
        if with_decision:
            decision_step(out, outcome.decision, client)
        return out, outcome.decision
    assert pending is not None
    decision = _pending_steps(out, pending, peek, request.arrived)
    if with_decision:
        decision_step(out, decision, pending.client)
    return out, decision


def _no_account_step(out: Explanation, caller: CallerFacts) -> None:
    tried = [f"User-Name {caller.user_name!r}"] if caller.user_name else []
    if caller.framed_ip:
        tried.append(f"Framed-IP-Address {caller.framed_ip!r}")
    if caller.calling:
        tried.append(f"Calling-Station-Id {caller.calling!r}")
    out.add(
        "account",
        "no enabled account matches "
        + (", ".join(tried) or "the request")
        + " (login, then ip, then ani; a tech prefix must start the called number)",
        matched=False,
    )


def _account_step(
    out: Explanation, account: Account, client: Client | None, caller: CallerFacts
) -> None:
    by = _matched_by(account, caller)
    prefix = f", tech prefix {account.tech_prefix!r}" if account.tech_prefix else ""
    out.add(
        "account",
        f"{account.name!r} ({account.ident} {account.value!r}, matched by {by}{prefix})"
        f" of client {client.name if client else '?'!r}",
        matched=True,
        account=account.name,
        account_id=account.id,
        ident=account.ident,
        value=account.value,
        matched_by=by,
        tech_prefix=account.tech_prefix,
        client=client.name if client else None,
        client_id=account.client_id,
    )


def _password_step(
    out: Explanation,
    account: Account,
    request: AuthorizeCall,
    outcome: AuthOutcome | None,
    *,
    verify_password: bool,
) -> None:
    if not verify_password:
        check, summary = "skipped", "skipped (--password-check skip)"
    elif account.password_hash is None:
        check, summary = "none", "the account has no password: nothing to check"
    elif request.password is None:
        check, summary = "missing", "missing: the request carries no User-Password"
    elif outcome is not None and outcome.decision == Reject(RejectReason.BAD_PASSWORD):
        check, summary = "wrong", "wrong"
    else:
        check, summary = "right", "right"
    out.add("password", summary, check=check)


def _number_step(
    out: Explanation, account: Account | None, number: str | None, caller: CallerFacts
) -> None:
    if number is None:
        out.add("number", "no Called-Station-Id: authentication only", called=None)
        return
    raw = caller.called or ""
    out.add(
        "number",
        f"{raw!r} -> {number!r}"
        + (
            f" (tech prefix {account.tech_prefix!r} stripped)"
            if account and account.tech_prefix
            else ""
        ),
        called=raw,
        normalized=normalize_number(raw),
        rated=digits_only(number),
    )


def _no_rate_step(out: Explanation, client: Client, number: str | None, arrived: datetime) -> None:
    table = client.rate_table_id
    out.add(
        "rate",
        f"no rate for {number!r} in rate table {table} at {arrived.isoformat()}"
        if table
        else "the client has no rate table",
        rate_table_id=table,
    )


def _pending_steps(
    out: Explanation, pending: PendingHold, peek: Peek, arrived: datetime
) -> Decision:
    """A request that got as far as the live state: its rate, balance, holds, capacity, and
    the decision ``decide`` makes on them."""
    terms = pending.hold.terms
    if terms.rate is not None:
        _rate_step(out, terms.rate, pending.client)
    live = peek(pending.client, arrived)
    c = pending.client
    available = live.balance + c.credit
    out.add(
        "balance",
        f"live {display(live.balance)}, credit {display(c.credit)}, available"
        f" {display(available)} {c.currency}"
        + (" (postpaid: funds are not checked)" if c.postpaid else ""),
        live_balance=display(live.balance),
        credit=display(c.credit),
        available=display(available),
        postpaid=c.postpaid,
        read_from=live.source,
    )
    out.add(
        "holds",
        f"{display(live.held)} held by {live.calls} call(s) in progress ({live.active} active);"
        f" funds {display(available - live.held)}",
        held=display(live.held),
        funds=display(available - live.held),
    )
    if terms.rate is not None:
        _capacity_step(out, c, available, live)
    return decide(terms, LiveSnapshot(live.balance, live.held, live.calls))


def _rate_step(out: Explanation, rate: Rate, client: Client) -> None:
    g1 = first_grid_point(rate)
    out.add(
        "rate",
        f"prefix {rate.code!r}{f' ({rate.name})' if rate.name else ''}:"
        f" {display(rate.rate)}/min, setup"
        f" {display(rate.setup_fee)}, {rate.min_volume}/{rate.interval} s, grace"
        f" {rate.grace_volume} s; first grid point {g1} s costs {display(cost(rate, g1))}",
        rate_table_id=client.rate_table_id,
        prefix=rate.code,
        name=rate.name,
        rate=display(rate.rate),
        setup_fee=display(rate.setup_fee),
        min_volume=rate.min_volume,
        interval=rate.interval,
        grace_volume=rate.grace_volume,
        effective_date=rate.effective_date.isoformat(),
        end_date=rate.end_date.isoformat() if rate.end_date else None,
        first_grid_point=g1,
        first_grid_cost=display(cost(rate, g1)),
    )


def _capacity_step(out: Explanation, c: Client, available: Decimal, live: LivePeek) -> None:
    capacity = c.effective_capacity(available)
    low = capacity is not None and capacity != c.capacity
    out.add(
        "capacity",
        f"{live.calls} of "
        + ("unlimited" if capacity is None else str(capacity))
        + (" (the low-balance capacity)" if low else "")
        + " in use",
        in_use=live.calls,
        capacity=capacity,
        low_balance=low,
    )
