"""Sending the mail queue through a real SMTP server (the standard library's smtplib).

Each round claims the due messages (see ``sql.notify.claim_mail``), sends each in its own
SMTP session and records the result: sent; a temporary failure (the server unreachable,
a 4xx answer, a timeout) queues it again after a backoff (doubling from ``retry_base``
seconds up to ``retry_cap``); a permanent failure (a 5xx answer) or a message still
unsent ``give_up_after`` seconds after it was queued is marked failed, with a
``notification_failed`` event.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from sqlalchemy import Engine

from .sql.notify import (
    Mail,
    backoff,
    claim_mail,
    fail_interrupted,
    mail_failed,
    mail_retry,
    mail_sent,
)


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int = 25
    sender: str = ""
    starttls: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    timeout_seconds: float = 10.0
    retry_base: float = 30.0
    retry_cap: float = 3600.0
    give_up_after: float = 86400.0


@dataclass(frozen=True, slots=True)
class Temporary(Exception):
    reason: str


@dataclass(frozen=True, slots=True)
class Permanent(Exception):
    reason: str


def _classify(exc: BaseException) -> Temporary | Permanent:
    """A failed SMTP conversation: 5xx is permanent, anything else (4xx, a connection
    refused or lost, a timeout) temporary."""
    code: int | None = None
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [c for c, _m in exc.recipients.values()]
        code = max(codes) if codes else None
        text = "; ".join(
            f"{r}: {c} {m.decode(errors='replace')}" for r, (c, m) in exc.recipients.items()
        )
    elif isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        err = exc.smtp_error
        shown = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
        text = f"{code} {shown}"
    if code is not None and 500 <= code < 600:
        return Permanent(text)
    return Temporary(text)


def send_one(settings: SmtpSettings, mail: Mail) -> None:
    """One SMTP session for one message; raises Temporary or Permanent on failure."""
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = mail.to_addr
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(idstring=f"radiusd-mail-{mail.id}")
    message.set_content(mail.body)
    try:
        with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_seconds) as smtp:
            if settings.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.username:
                smtp.login(settings.username, settings.password)
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise _classify(exc) from None


def deliver_due(engine: Engine, settings: SmtpSettings, now: datetime) -> dict[str, int]:
    """One round of the sender: what happened to the messages due at ``now``."""
    counts = {"sent": 0, "retry": 0, "failed": 0}
    # a claim older than two SMTP sessions' timeout belongs to a sender that died mid-way
    counts["failed"] += fail_interrupted(
        engine, now - timedelta(seconds=2 * settings.timeout_seconds + 60)
    )
    for mail in claim_mail(engine, now):
        try:
            send_one(settings, mail)
        except Permanent as exc:
            if mail_failed(engine, mail, exc.reason, now):
                counts["failed"] += 1
        except Temporary as exc:
            if (now - mail.created_at).total_seconds() >= settings.give_up_after:
                if mail_failed(engine, mail, f"given up: {exc.reason}", now):
                    counts["failed"] += 1
            else:
                wait = backoff(mail.attempts, settings.retry_base, settings.retry_cap)
                mail_retry(engine, mail, exc.reason, now + wait)
                counts["retry"] += 1
        else:
            mail_sent(engine, mail, now)
            counts["sent"] += 1
    return counts


class SmtpOutbox:
    """``Outbox``: the mail queue on ``engine`` sent through ``settings``."""

    def __init__(self, engine: Engine, settings: SmtpSettings) -> None:
        self._engine = engine
        self._settings = settings

    def deliver_due(self, now: datetime) -> dict[str, int]:
        return deliver_due(self._engine, self._settings, now)
