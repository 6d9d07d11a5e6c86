"""``billingctl`` and ``python -m billingctl``."""

from __future__ import annotations

import sys

from billingctl.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
