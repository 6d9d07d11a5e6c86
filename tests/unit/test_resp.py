"""Our RESP packer sends what redis-py's packer sends (no server needed)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.connection import Connection

from billing_core.adapters.resp import command, python_command

ARGS = st.lists(st.one_of(st.text(max_size=60), st.integers(-(2**63), 2**63 - 1)), max_size=30)
PACKER = Connection()  # type: ignore[no-untyped-call] # packs; never connects


@given(ARGS)
def test_packed_like_redis_py(args: list[str | int]) -> None:
    # (redis-py splits a first argument with spaces, "CONFIG GET"; ours is always EVALSHA)
    packed: list[str | int] = ["EVALSHA", *args]
    expected = b"".join(PACKER.pack_command(*packed))  # type: ignore[no-untyped-call]
    assert command(packed) == expected
    assert python_command(packed) == expected  # the twin for a hiredis without pack_command
