"""`billingctl explain`: the decision the daemon would make now for a caller, step by step,
on the current data, holding nothing (README: Explain a decision)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from datetime import UTC, datetime
from typing import Any

from billing_core.errors import UserError
from billingctl import context

PASSWORD_CHECKS = ("require", "skip", "stdin")


def cmd_explain(args: argparse.Namespace) -> int:
    from billing_core.adapters.live_peek import peek
    from billing_core.adapters.sql.store import SqlStore
    from billing_core.domain.identification import CallerFacts
    from billing_core.domain.nas import longest_first, match_source, nas_key
    from billing_core.explain import Explanation, explain, nas_step
    from billing_core.services.authorization import AuthorizationService, AuthorizeCall

    config = context.config(args.config)
    source = args.nas.strip()
    try:
        ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        raise UserError(f"--nas: not an IP address: {args.nas!r}") from None
    password: bytes | None = None
    if args.password_check == "stdin":  # noqa: S105 - a mode, not a password
        password = sys.stdin.readline().rstrip("\r\n").encode()
    explanation = Explanation()
    entry = match_source(longest_first(config.nas), source)
    key = nas_key(entry.name, (), source) if entry is not None else None
    nas_step(explanation, source, (entry.name, str(entry.address)) if entry else None, key)
    if entry is not None and key is not None:
        engine = context.engine(args)
        store = SqlStore(engine)
        live = context.live(args) or store
        catalog = store.load_catalog()
        service = AuthorizationService(
            lambda: catalog,
            live,
            max_call_length=config.billing.max_call_length,
            auth_hold_seconds=0,
        )
        request = AuthorizeCall(
            nas_key=key,
            caller=CallerFacts(user_name=args.user, calling=args.calling, called=args.called),
            password=password,
            chap=None,
            identifiers=(),
            arrived=datetime.now(UTC),
        )
        explain(
            service,
            request,
            lambda client, now: peek(live, store, client, now),
            verify_password=args.password_check != "skip",  # noqa: S105
            explanation=explanation,
        )
    if args.format == "json":
        print(json.dumps(explanation.as_json(), indent=2))
    else:
        width = max(len(step["step"]) for step in explanation.steps)
        for step in explanation.steps:
            print(f"{step['step']:<{width}}  {step['summary']}")
    return 0


def register(groups: Any) -> None:
    text = "the decision the daemon would make now for a caller, step by step (holds nothing)"
    parser = groups.add_parser("explain", help=text, description=text)
    parser.set_defaults(func=cmd_explain)
    parser.add_argument("--nas", required=True, metavar="ADDRESS", help="the switch's address")
    parser.add_argument("--user", required=True, metavar="NAME", help="User-Name")
    parser.add_argument("--called", metavar="N", help="Called-Station-Id (absent: auth only)")
    parser.add_argument("--calling", metavar="N", help="Calling-Station-Id")
    parser.add_argument(
        "--password-check",
        choices=PASSWORD_CHECKS,
        default="require",
        help="require (default): as a request without a password, so an account with one "
        "is refused (code 2); skip: take the password as right; stdin: check the password "
        "read from the first line of standard input",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
