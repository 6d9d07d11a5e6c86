"""A command whose reader went away (``billingctl ... | head -1``) ends quietly.

Python ignores SIGPIPE, so a write into a closed pipe raises ``BrokenPipeError`` and, left
alone, prints a traceback (and another one when the interpreter flushes stdout at exit).
:func:`quiet_broken_pipe` wraps a console script's ``main``: it flushes stdout inside the
wrapper, and on a broken pipe points stdout at ``/dev/null`` (so the exit flush is silent)
and returns 141, the status a shell reports for a program ended by SIGPIPE (128 + 13), as
``yes | head -1`` does. SIGPIPE itself stays ignored: restoring its default action would
let a write to a dropped database or Redis socket kill the process without a word.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec

__all__ = ["BROKEN_PIPE_EXIT", "quiet_broken_pipe"]

BROKEN_PIPE_EXIT = 128 + 13  # 128 + SIGPIPE

_P = ParamSpec("_P")


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a file (captured in tests)
        pass


def quiet_broken_pipe(main: Callable[_P, int]) -> Callable[_P, int]:
    """``main`` that returns 141 without a traceback when stdout's reader has gone."""

    @functools.wraps(main)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> int:
        try:
            try:
                code = main(*args, **kwargs)
            except SystemExit:  # argparse's --help / --version / usage error: flush, then exit
                sys.stdout.flush()
                raise
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            return BROKEN_PIPE_EXIT
        return code

    return wrapper
