# PYTHON_ARGCOMPLETE_OK
"""``billingctl`` and ``python -m billingctl``.

The marker above tells argcomplete's shell hook (``eval "$(register-python-argcomplete
billingctl)"``) that this entry point completes its own arguments (README: completion)."""

from __future__ import annotations

import sys

from billingctl.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
