from typing import Any

def frame(data: bytes, malformed: type[Exception], /) -> tuple[int, int]: ...
def walk(
    packet: bytes,
    standard: tuple[Any, ...],
    vendors: dict[int, Any],
    raw_kinds: bytes,
    malformed: type[Exception],
    /,
) -> tuple[dict[str, list[Any]], dict[int, list[bytes]], list[str], int]: ...
