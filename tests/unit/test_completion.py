"""Shell completion (argcomplete) through the installed ``billingctl`` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import billingctl.__main__

BIN = Path(sys.executable).parent


def _complete(line: str) -> list[str]:
    """What the shell hook gets for ``line`` (argcomplete answers on file descriptor 8)."""
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\n",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
    }
    done = subprocess.run(
        ["sh", "-c", '"$0" 8>&1 9>/dev/null', str(BIN / "billingctl")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # a single match ends with a space (the word is complete)
    return sorted(word.strip() for word in done.stdout.split("\n")) if done.stdout else []


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("billingctl cl", ["clients"]),
        ("billingctl payments ", ["--help", "-h", "add", "list"]),
        ("billingctl clients list --status ", ["active", "all", "deleted", "stop"]),
        ("billingctl events list --kind live_", ["live_healed", "live_rebuilt"]),
    ],
)
def test_billingctl_completes_groups_commands_and_choices(line: str, expected: list[str]) -> None:
    assert _complete(line) == expected


def test_the_entry_point_carries_the_argcomplete_marker() -> None:
    """argcomplete's global hook completes a script only when the module of its entry point
    says so in its first 1024 bytes."""
    head = Path(billingctl.__main__.__file__).read_text(encoding="utf-8")[:1024]
    assert "PYTHON_ARGCOMPLETE_OK" in head


def test_without_a_completion_request_argcomplete_is_not_imported() -> None:
    """``billingctl --help`` and every command start without it."""
    probe = (
        "import sys\nfrom billingctl.cli import _complete, build_parser\n"
        "_complete(build_parser())\nprint('argcomplete' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "_ARGCOMPLETE"}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.strip() == "False"
