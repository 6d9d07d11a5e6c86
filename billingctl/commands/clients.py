"""``clients`` and ``templates``: the Clients section (README), every field an option."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from billing_core.errors import UserError
from billingctl import context
from billingctl.output import print_one, print_rows, write_csv
from billingctl.parsing import add_command, add_format, add_group

if TYPE_CHECKING:
    from billingctl.adapters.admin_clients import TagChange

CLIENT_COLUMNS = (
    "id",
    "name",
    "status",
    "available_balance",
    "live_balance",
    "fixed_balance",
    "payment_terms",
    "tags",
    "reseller",
)
#: Printed too by ``list --format csv`` (the table and ``export`` keep their columns).
NOTIFY_COLUMNS = ("notify_client_below", "notify_admin_below")


def cmd_clients_show(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import client_summary

    print_one(
        client_summary(context.engine(args), args.client, live=context.live(args)), args.format
    )
    return 0


def _client_filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": args.name,
        "email": args.email,
        "status": args.status,
        "tag": args.tag,
        "reseller": args.reseller,
    }


def cmd_clients_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import list_clients

    rows = list_clients(context.engine(args), **_client_filters(args), live=context.live(args))
    print_rows(
        rows,
        args.format,
        (*CLIENT_COLUMNS, *NOTIFY_COLUMNS) if args.format == "csv" else CLIENT_COLUMNS,
    )
    return 0


def cmd_clients_export(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin import list_clients

    rows = list_clients(context.engine(args), **_client_filters(args), live=context.live(args))
    write_csv(args.file, rows, CLIENT_COLUMNS)
    print(f"exported {len(rows)} clients to {args.file}")
    return 0


# Client fields as options: (field, metavar, help). Values are checked by
# billingctl.provisioning.validate_client_fields; an empty value clears an optional field.
CLIENT_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("status", "STATUS", "active, stop or deleted"),
    ("currency", "CODE", "3-letter currency code (default USD)"),
    ("timezone", "ZONE", "IANA time zone (default UTC)"),
    ("locale", "TAG", 'language tag sent as h323-preferred-lang, e.g. "es"'),
    ("bill_events_by", "EVENT", "setup, connect or disconnect (default)"),
    ("postpaid", "yes|no", "postpaid: granted max_call_length, no funds checked"),
    ("credit", "AMOUNT", "allowed credit, may be negative, at most 9 digits before the point"),
    ("rate_table", "TABLE", "origination rate table (must exist)"),
    ("capacity", "N", "concurrent calls (empty: unlimited)"),
    ("low_balance_threshold", "AMOUNT", "below this available balance ..."),
    ("low_balance_capacity", "N", "... this capacity applies"),
    ("notify_client_below", "AMOUNT", "e-mail the billing address below this available balance"),
    ("notify_admin_below", "AMOUNT", "a low_balance event below this available balance"),
    ("reseller", "NAME", "reseller"),
    ("tax_profile", "NAME", "tax profile name"),
    ("payment_terms", "TEXT", "payment terms"),
    ("hidden_numbers", "yes|no", "hide numbers in the client's CDRs"),
    ("autoinvoicing", "yes|no", "invoice automatically"),
    ("last_invoiced", "DATE", "last day invoiced (YYYY-MM-DD)"),
    ("company_name", "TEXT", "company name"),
    ("main_email", "EMAIL", "main e-mail (Latin characters only)"),
    ("billing_email", "EMAIL", "billing e-mail (Latin characters only)"),
    ("rates_email", "EMAIL", "rates e-mail (Latin characters only)"),
    ("address", "TEXT", "address"),
    ("zip_code", "TEXT", "zip code"),
    ("tax_id", "TEXT", "tax ID"),
    ("registration_id", "TEXT", "registration ID"),
    ("account_details", "TEXT", "bank account details"),
)


def _add_client_options(parser: Any, *, template: bool = False) -> None:
    group = parser.add_argument_group(
        "client fields" if not template else "template fields",
        "an empty value (--capacity '') clears an optional field"
        if not template
        else "an empty value makes a field not set by the template",
    )
    for name, metavar, text in CLIENT_OPTIONS:
        if template and name == "last_invoiced":
            continue
        group.add_argument(
            "--" + name.replace("_", "-"), dest=name, metavar=metavar, help=text, default=None
        )


def _add_tag_options(parser: Any, *, edit: bool) -> None:
    if not edit:
        parser.add_argument("--tag", action="append", metavar="TAG", help="a tag (repeat for more)")
        return
    parser.add_argument(
        "--tag", action="append", metavar="TAG", help="the tags become exactly these (repeat)"
    )
    parser.add_argument("--add-tag", action="append", metavar="TAG", help="add a tag (repeat)")
    parser.add_argument(
        "--remove-tag", action="append", metavar="TAG", help="remove a tag (repeat)"
    )
    parser.add_argument("--no-tags", action="store_true", help="remove every tag")


def _client_fields(args: argparse.Namespace, *, template: bool = False) -> dict[str, object]:
    from billingctl.provisioning import validate_client_fields

    given = {
        name: getattr(args, name)
        for name, _metavar, _text in CLIENT_OPTIONS
        if getattr(args, name, None) is not None
    }
    return validate_client_fields(given, clear_any=template)


def _tags(values: Sequence[str] | None) -> tuple[str, ...] | None:
    from billingctl.provisioning import check_tags

    return None if values is None else check_tags(values)


def _tag_change(args: argparse.Namespace) -> TagChange:
    from billingctl.adapters.admin_clients import TagChange

    replace = _tags(args.tag)
    if args.no_tags:
        if replace:
            raise UserError("--no-tags: not together with --tag")
        replace = ()
    return TagChange(
        replace=replace, add=_tags(args.add_tag) or (), remove=_tags(args.remove_tag) or ()
    )


def _client_name(value: str) -> str:
    from billingctl.provisioning import check_text

    return check_text(value, "name")


def cmd_clients_add(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import add_client

    client = add_client(
        context.engine(args),
        _client_name(args.client),
        _client_fields(args),
        tags=_tags(args.tag),
        template=args.template,
        audit=context.audit(args),
    )
    print(f"client {client['name']} added (id {client['id']})")
    return 0


def _nothing_given(fields: dict[str, object], tags: TagChange, *extra: object) -> bool:
    return not fields and not tags and all(e is None for e in extra)


def cmd_clients_edit(args: argparse.Namespace) -> int:
    from billingctl.services.clients import edit_client

    return _edit(args, "client", args.client, edit_client, template=False)


def cmd_clients_mass_edit(args: argparse.Namespace) -> int:
    from billingctl.services.clients import mass_edit_clients

    fields, tags = _client_fields(args), _tag_change(args)
    if _nothing_given(fields, tags):
        raise UserError("nothing to change: give a field option (see --help)")
    results = mass_edit_clients(
        context.engine(args), args.ids, fields, tags=tags, audit=context.audit(args)
    )
    changed = [name for name, fields_changed in results if fields_changed]
    print(
        f"{len(changed)} of {len(results)} clients updated"
        + (f": {', '.join(changed)}" if changed else "")
    )
    return 0


def cmd_clients_delete(args: argparse.Namespace) -> int:
    from billingctl.services.clients import delete_client

    name, stopped = delete_client(context.engine(args), args.client, audit=context.audit(args))
    if stopped == 0:
        print(f"client {name} is deleted; authorization rejects its calls")
    else:
        print(
            f"client {name} deleted: its {stopped} account(s) stay but no longer originate"
            " or terminate; authorization rejects its calls"
        )
    return 0


def cmd_clients_full_delete(args: argparse.Namespace) -> int:
    from billingctl.services.clients import full_delete_client

    if not args.yes:
        raise UserError(
            f"--yes: required to remove client {args.client!r} and everything it owns"
            " (accounts, transactions, invoices, CDRs) for good"
        )
    removed = full_delete_client(
        context.engine(args), args.client, audit=context.audit(args), live=context.live(args)
    )
    name = removed.pop("name")
    print(
        f"client {name} removed for good with "
        + ", ".join(f"{count} {what}" for what, count in removed.items())
    )
    return 0


# --- templates ----------------------------------------------------------------------------
TEMPLATE_COLUMNS = (
    "id",
    "name",
    "status",
    "currency",
    "rate_table",
    "credit",
    "capacity",
    "postpaid",
    "payment_terms",
    "reseller",
    "tags",
)


def cmd_templates_add(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import add_template

    shown = add_template(
        context.engine(args),
        _client_name(args.template),
        _client_fields(args, template=True),
        tags=_tags(args.tag),
        audit=context.audit(args),
    )
    print(f"template {shown['name']} added (id {shown['id']})")
    return 0


def cmd_templates_edit(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import edit_template

    return _edit(args, "template", args.template, edit_template, template=True)


def _edit(
    args: argparse.Namespace, kind: str, target: str, edit: Callable[..., Any], *, template: bool
) -> int:
    """`clients edit` and `templates edit`: the same options, the same answer."""
    fields, tags = _client_fields(args, template=template), _tag_change(args)
    new_name = None if args.name is None else _client_name(args.name)
    if _nothing_given(fields, tags, new_name):
        raise UserError("nothing to change: give a field option (see --help)")
    shown, changed = edit(
        context.engine(args),
        target,
        fields,
        new_name=new_name,
        tags=tags,
        audit=context.audit(args),
    )
    what = f"updated: {', '.join(changed)}" if changed else "unchanged"
    print(f"{kind} {shown['name']} {what}")
    return 0


def cmd_templates_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import list_templates

    columns = (*TEMPLATE_COLUMNS, *NOTIFY_COLUMNS) if args.format == "csv" else TEMPLATE_COLUMNS
    print_rows(list_templates(context.engine(args)), args.format, columns)
    return 0


def cmd_templates_show(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import show_template

    print_one(show_template(context.engine(args), args.template), args.format)
    return 0


def cmd_templates_delete(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_clients import delete_template

    delete_template(context.engine(args), args.template, audit=context.audit(args))
    print(f"template {args.template} deleted (clients made from it keep their values)")
    return 0


def _client_filter_options(parser: Any) -> None:
    parser.add_argument("--name", help="name by first letters")
    parser.add_argument("--email", help="main e-mail, * as wildcard")
    parser.add_argument("--status", choices=("active", "stop", "deleted", "all"), default="active")
    parser.add_argument("--tag")
    parser.add_argument("--reseller")


def _register_clients(groups: Any) -> None:
    c_sub = add_group(groups, "clients", "clients")
    show = add_command(c_sub, "show", "one client with its balances", cmd_clients_show)
    show.add_argument("client", metavar="NAME_OR_ID")
    add_format(show, ("table", "json"))
    lst = add_command(c_sub, "list", "search clients", cmd_clients_list)
    _client_filter_options(lst)
    add_format(lst, ("table", "json", "csv"))
    export = add_command(
        c_sub, "export", "write the clients list, as filtered, to a CSV file", cmd_clients_export
    )
    export.add_argument("file", metavar="FILE.csv")
    _client_filter_options(export)

    add = add_command(c_sub, "add", "a new client (from a template, if given)", cmd_clients_add)
    add.add_argument("client", metavar="NAME")
    add.add_argument("--template", metavar="T", help="take T's values for fields not given")
    _add_tag_options(add, edit=False)
    _add_client_options(add)

    edit = add_command(c_sub, "edit", "change a client's fields", cmd_clients_edit)
    edit.add_argument("client", metavar="NAME_OR_ID")
    edit.add_argument("--name", metavar="NEW_NAME", help="rename the client")
    _add_tag_options(edit, edit=True)
    _add_client_options(edit)

    mass = add_command(
        c_sub,
        "mass-edit",
        "the same change to many clients, in one transaction (all or none)",
        cmd_clients_mass_edit,
    )
    mass.add_argument("ids", metavar="ID", nargs="+", help="client ids (or names)")
    _add_tag_options(mass, edit=True)
    _add_client_options(mass)

    delete = add_command(
        c_sub,
        "delete",
        "status deleted: calls rejected, accounts stop originating and terminating",
        cmd_clients_delete,
    )
    delete.add_argument("client", metavar="NAME_OR_ID")
    full = add_command(
        c_sub,
        "full-delete",
        "remove the client and everything it owns, for good (needs --yes)",
        cmd_clients_full_delete,
    )
    full.add_argument("client", metavar="NAME_OR_ID")
    full.add_argument("--yes", action="store_true", help="yes, remove it for good")


def _register_templates(groups: Any) -> None:
    t_sub = add_group(groups, "templates", "client templates")
    add = add_command(t_sub, "add", "a new client template", cmd_templates_add)
    add.add_argument("template", metavar="NAME")
    _add_tag_options(add, edit=False)
    _add_client_options(add, template=True)
    lst = add_command(t_sub, "list", "client templates", cmd_templates_list)
    add_format(lst, ("table", "json", "csv"))
    show = add_command(t_sub, "show", "one client template", cmd_templates_show)
    show.add_argument("template", metavar="NAME")
    add_format(show, ("table", "json"))
    edit = add_command(t_sub, "edit", "change a template's fields", cmd_templates_edit)
    edit.add_argument("template", metavar="NAME")
    edit.add_argument("--name", metavar="NEW_NAME", help="rename the template")
    _add_tag_options(edit, edit=True)
    _add_client_options(edit, template=True)
    delete = add_command(t_sub, "delete", "remove a template", cmd_templates_delete)
    delete.add_argument("template", metavar="NAME")


def register(groups: Any) -> None:
    _register_clients(groups)
    _register_templates(groups)
