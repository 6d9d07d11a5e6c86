"""The errors billing_core raises: the commands turn a ``UserError`` into one line on stderr
and a non-zero exit; the daemon leaves a request it could not decide (``Unavailable``)
unanswered."""

from __future__ import annotations

from typing import Literal

Dependency = Literal["database", "redis"]


class UserError(Exception):
    """A problem the operator can fix (bad argument, unknown name, unreachable database)."""

    exit_code = 1


class NotFoundError(UserError):
    """Something the command looked up does not exist."""


class ConfigFileError(UserError):
    """The configuration file is invalid: exit 2, as ``radiusd check-config`` does."""

    exit_code = 2


class Unavailable(Exception):
    """A dependency did not answer, so the request cannot be decided now (the switch sends
    it again or fails over). The adapters raise it in place of their libraries' outage
    errors; the library's exception is its ``__cause__``."""

    def __init__(self, dependency: Dependency) -> None:
        super().__init__(f"{dependency} unavailable")
        self.dependency: Dependency = dependency
