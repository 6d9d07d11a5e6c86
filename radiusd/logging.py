"""structlog set-up: JSON lines when not on a TTY, one ``radius_request`` event per request."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(log_format: str = "auto", level: str = "info") -> None:
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # pyrad logs every drop at ERROR; we count drops ourselves
    logging.getLogger("pyrad").setLevel(logging.CRITICAL)


def get_logger(name: str = "radiusd") -> Any:
    return structlog.get_logger(name)
