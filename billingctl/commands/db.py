"""``db upgrade`` and ``load``: the schema, and a provisioning file applied."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from billing_core.errors import UserError
from billingctl import context
from billingctl.parsing import add_command, add_group


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from billing_core.adapters.sql.db import current_revision, upgrade

    engine = context.engine(args)
    upgrade(engine)
    print(f"database at revision {current_revision(engine)}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from billingctl.progress import for_terminal
    from billingctl.provisioning import ProvisioningError
    from billingctl.provisioning_file import load_provisioning_file

    progress = for_terminal(f"load {Path(args.file).name}", unit="rates and clients")
    with progress:
        progress.stage("reading and validating the file")
        try:
            spec = load_provisioning_file(Path(args.file))
        except ProvisioningError as exc:
            raise UserError(str(exc)) from None
    if args.dry_run:
        print(
            f"{args.file}: valid ({len(spec.rate_tables)} rate tables, "
            f"{sum(len(t.rates) for t in spec.rate_tables)} rates, {len(spec.clients)} clients)"
        )
        return 0
    from billingctl.adapters.admin import LiveMove
    from billingctl.commands.money import payments_made
    from billingctl.services.load import apply_provisioning
    from billingctl.services.rates import write_index_snapshots

    moved: list[LiveMove] = []
    progress.total = sum(len(t.rates) for t in spec.rate_tables) + len(spec.clients)
    progress.stage("")
    with progress:
        counts = apply_provisioning(
            context.engine(args),
            spec,
            context.audit(args),
            payments_applied=moved,
            cipher=context.cipher(args),
            progress=progress,
        )
        if spec.rate_tables:
            progress.stage("writing rate index snapshots")
            write_index_snapshots(context.engine(args))
    payments_made(args, context.live(args), moved)
    print("loaded " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    return 0


def register(groups: Any) -> None:
    db_sub = add_group(groups, "db", "database schema")
    add_command(db_sub, "upgrade", "apply schema migrations (idempotent)", cmd_db_upgrade)

    load = add_command(groups, "load", "apply a provisioning file (YAML or JSON)", cmd_load)
    load.add_argument("file")
    load.add_argument("--dry-run", action="store_true", help="validate only")
