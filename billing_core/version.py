"""The installed package's version, as ``radiusd --version`` and ``billingctl --version``
print it: read from the package metadata (pyproject.toml's ``version``), never repeated in
the code."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["DISTRIBUTION", "package_version"]

DISTRIBUTION = "voip-radiusd"


def package_version() -> str:
    """The version of the installed distribution; ``unknown`` when it is not installed
    (run from a bare source tree)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"
