"""Decoded request -> one billing_core call -> reply bytes; the outcome -> reply table."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from billing_core.config import NasConfig
from billing_core.domain.accounting_packets import AccountingEvent
from billing_core.domain.model import Client
from billing_core.domain.money import floor2
from billing_core.domain.policy import Accept, Reject
from billing_core.domain.replies import REJECT_REPLIES
from billing_core.services.accounting import AcctOutcome
from billing_core.services.authorization import AuthorizeCall, AuthOutcome

from . import attributes
from .codec import ACCESS_REQUEST, STATUS_SERVER, Codec, Request
from .logging import get_logger, request_logger
from .metrics import Metrics
from .trace import Tracer
from .transport import LogThrottle

# the dialects whose Access-Accept carries the grant in SIP-AVP too (Kamailio's auth_radius
# stores it as an AVP: $avp(credit_time))
SIP_AVP_DIALECTS = frozenset(("kamailio", "opensips"))
# the dialects whose NASes send Sip-* on RFC 5090's Digest numbers (101-105): their digest is
# draft-sterman only (README: Credentials)
NO_RFC5090 = frozenset(("kamailio", "opensips"))

Authorize = Callable[[AuthorizeCall], Awaitable[AuthOutcome]]
Record = Callable[[AccountingEvent], Awaitable[AcctOutcome]]


class Handler:
    """A decoded request -> one billing_core call -> the reply's bytes (None: no reply).

    ``authorize`` is ``AuthorizationService.authorize``; ``record`` answers once the event is
    recorded (the group committer's ``submit``). Either raising leaves the request unanswered
    (the transport counts and logs it)."""

    def __init__(
        self,
        codec: Codec,
        authorize: Authorize,
        record: Record,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        codecs: Mapping[str, Codec] | None = None,
    ) -> None:
        self.codec = codec
        self.codecs: Mapping[str, Codec] = codecs or {}  # by [[nas]] dialect
        self._drop_log = LogThrottle(1.0)
        self.authorize = authorize
        self.record = record
        self.metrics = metrics
        self.clock = clock
        self.log = request_logger("radiusd.request")
        self.drop_log = get_logger("radiusd.transport")
        self.trace: Tracer | None = None  # on: --trace or SIGUSR1 (radiusd/trace.py)
        # low-balance notifications: a client whose money moved, checked later by a
        # background job (never on this path); None: notifications off
        self.notify: Callable[[int], None] | None = None

    async def handle(
        self, request: Request, nas: NasConfig, source_ip: str, accounting_port: bool
    ) -> bytes | None:
        started = time.perf_counter()
        if request.code == STATUS_SERVER:
            self.metrics.child(self.metrics.requests, "status", "answered").inc()
            return self.codec.status_reply(request, accounting_port=accounting_port)
        if request.code == ACCESS_REQUEST:
            return await self.handle_auth(request, nas, source_ip, started)
        return await self.handle_acct(request, nas, source_ip, started)

    async def handle_auth(
        self, request: Request, nas: NasConfig, source_ip: str, started: float
    ) -> bytes:
        key = attributes.nas_key(request, nas.name, source_ip)
        command = attributes.authorize_command(
            request, key, self.clock(), nas.strip_realm, rfc5090=nas.dialect not in NO_RFC5090
        )
        traced = None
        if self.trace is not None and self.trace.matches(nas, source_ip, key, command):
            traced = await self.trace.explain(command, nas, source_ip, key)
        outcome = await self.authorize(command)
        if outcome.failure is not None:
            failure = outcome.failure
            self.metrics.child(self.metrics.auth_failures, failure.method, failure.reason).inc()
        if traced is not None and self.trace is not None:
            self.trace.done(traced, outcome, command)
        decision = outcome.decision
        client = outcome.client
        codec = self.codecs.get(nas.dialect, self.codec)
        if isinstance(decision, Reject):
            code, message = REJECT_REPLIES[decision.reason]
            reply_attrs = [("h323-return-code", code), ("Reply-Message", message)]
            raw = codec.auth_reply(request, accept=False, attributes=reply_attrs)
            result, reason = "reject", decision.reason.value
            self.metrics.child(self.metrics.rejects, reason).inc()
        else:
            assert isinstance(decision, Accept) and client is not None
            raw = codec.auth_reply(
                request, accept=True, attributes=accept_attributes(decision, client, nas.dialect)
            )
            result, reason = "accept", None
            if self.notify is not None and decision.funds is not None:
                self.notify(client.id)  # a hold may have taken the funds below a threshold
        elapsed = time.perf_counter() - started
        self.metrics.answered("auth", result, elapsed)
        self.log.info(
            "radius_request",
            code="Access-Request",
            nas=key,
            user=command.caller.user_name,
            called=command.caller.called,
            session_id=(command.identifiers or (None,))[0],
            outcome=result,
            reason=reason,
            auth=outcome.method,
            auth_failure=outcome.failure.reason if outcome.failure else None,
            grant=decision.grant_seconds if isinstance(decision, Accept) else None,
            client=client.name if client else None,
            elapsed=round(elapsed, 6),
        )
        return raw

    async def handle_acct(
        self, request: Request, nas: NasConfig, source_ip: str, started: float
    ) -> bytes | None:
        key = attributes.nas_key(request, nas.name, source_ip)
        event = attributes.accounting_event(
            request,
            key,
            nas.bill_leg,
            self.clock(),
            realm=nas.strip_realm,
            zero_final=nas.zero_duration_stop == "final",
        )
        if event is None:
            self.metrics.child(self.metrics.dropped, "malformed_accounting").inc()
            self.metrics.child(self.metrics.nas_dropped, nas.name, "malformed_accounting").inc()
            self.metrics.child(self.metrics.requests, "acct", "dropped").inc()
            suppressed = self._drop_log.allow(f"{nas.name}|malformed_accounting")
            if suppressed is not None:
                self.drop_log.warning(
                    "dropped",
                    nas=nas.name,
                    reason="malformed_accounting",
                    kind="acct",
                    source=source_ip,
                    detail="no Acct-Status-Type or Acct-Session-Id",
                    suppressed_since_last=suppressed,
                )
            return None
        outcome = await self.record(event)
        if outcome.result == "unknown_account":
            self.metrics.child(self.metrics.rejects, "unknown_account").inc()
        if outcome.collision:
            self.metrics.collisions.inc()
        if self.notify is not None and outcome.client_id is not None and outcome.cost:
            self.notify(outcome.client_id)
        raw = self.codecs.get(nas.dialect, self.codec).acct_reply(request)
        elapsed = time.perf_counter() - started
        self.metrics.answered("acct", "answered", elapsed)
        self.log.info(
            "radius_request",
            code="Accounting-Request",
            nas=key,
            user=event.caller.user_name,
            called=event.caller.called,
            session_id=event.acct_session_id,
            status=event.status,
            outcome=outcome.result,
            duration=outcome.duration,
            cost=str(outcome.cost) if outcome.cost is not None else None,
            elapsed=round(elapsed, 6),
        )
        return raw


def accept_attributes(decision: Accept, client: Client, dialect: str) -> list[tuple[str, Any]]:
    """An Access-Accept's attributes: the grant (absent for authentication only), the
    billing model, the funds (prepaid), the currency and the client's language."""
    attrs: list[tuple[str, Any]] = [("h323-return-code", 0)]
    if decision.grant_seconds is not None:
        attrs += [
            ("h323-credit-time", decision.grant_seconds),
            ("Session-Timeout", decision.grant_seconds),
        ]
        if dialect in SIP_AVP_DIALECTS:
            attrs.append(("SIP-AVP", f"credit_time:{decision.grant_seconds}"))
    attrs.append(("h323-billing-model", 0 if client.postpaid else 1))
    if decision.funds is not None:
        attrs.append(("h323-credit-amount", f"{floor2(decision.funds):.2f}"))
    attrs.append(("h323-currency", client.currency))
    if client.locale:
        attrs.append(("h323-preferred-lang", client.locale))
    return attrs
