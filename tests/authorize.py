"""The daemon's one authorization call, run to its outcome from a test's plain function."""

from __future__ import annotations

import asyncio

from billing_core.services.authorization import AuthorizationService, AuthorizeCall, AuthOutcome


def decide(service: AuthorizationService, request: AuthorizeCall) -> AuthOutcome:
    """``await service.authorize(request)`` on an event loop of its own."""
    return asyncio.run(service.authorize(request))
