"""Errors the commands turn into one line on stderr and a non-zero exit."""

from __future__ import annotations


class UserError(Exception):
    """A problem the operator can fix (bad argument, unknown name, unreachable database)."""

    exit_code = 1


class NotFoundError(UserError):
    """Something the command looked up does not exist."""


class ConfigFileError(UserError):
    """The configuration file is invalid: exit 2, as ``radiusd check-config`` does."""

    exit_code = 2
