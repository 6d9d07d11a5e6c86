"""The Lua scripts of the live state in Redis, one ``.lua`` file each beside this module
(read with ``importlib.resources``, so an installed package finds them as the source tree
does). ``common.lua`` holds the functions several scripts share: it goes before them."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def _source(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def script(*names: str) -> str:
    """The script made of these files, in this order (``script("common", "apply")``)."""
    return "".join(_source(name) for name in names)
