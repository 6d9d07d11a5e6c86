"""The installed package's version, as ``radiusd --version`` and ``billingctl --version``
print it: read from the package metadata (pyproject.toml's ``version``), never repeated in
the code."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

__all__ = ["DISTRIBUTION", "VersionAction", "package_version"]

DISTRIBUTION = "voip-radiusd"


def package_version() -> str:
    """The version of the installed distribution; ``unknown`` when it is not installed
    (run from a bare source tree)."""
    # imported here: reading the metadata costs every command's start about 20 ms
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


class VersionAction(argparse.Action):
    """``--version``: prints ``PROG VERSION`` and exits, the metadata read only then."""

    def __init__(
        self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any
    ) -> None:
        kwargs.setdefault("help", "show the version and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog} {package_version()}")
        parser.exit()
