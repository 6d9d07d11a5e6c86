"""``accounts`` (how a client's calls are recognized) and ``security`` (the server key of
account secrets)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from billing_core.errors import UserError
from billingctl import context
from billingctl.output import print_one, print_rows
from billingctl.parsing import add_command, add_format, add_group, yes_no

ACCOUNT_COLUMNS = (
    "id",
    "name",
    "client",
    "ident",
    "value",
    "tech_prefix",
    "password",
    "auth_methods",
    "enabled",
    "originate",
    "terminate",
)


def _password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    value: str | None = args.password
    return value


def cmd_accounts_add(args: argparse.Namespace) -> int:
    from billingctl.services.accounts import add_account

    account = add_account(
        context.engine(args),
        args.client,
        args.account,
        ident=args.ident,
        value=args.value,
        tech_prefix=args.tech_prefix,
        password=_password(args),
        auth_methods=args.auth_methods,
        enabled=not args.disabled,
        audit=context.audit(args),
        cipher=context.cipher(args),
    )
    print(f"account {account['name']} added to {account['client']}")
    return 0


def cmd_accounts_list(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_accounts import list_accounts

    print_rows(list_accounts(context.engine(args), args.client), args.format, ACCOUNT_COLUMNS)
    return 0


def _set_enabled(args: argparse.Namespace, enabled: bool) -> int:
    from billingctl.adapters.admin_accounts import AccountChange
    from billingctl.services.accounts import edit_account

    account, changed = edit_account(
        context.engine(args),
        args.account,
        AccountChange(enabled=enabled),
        audit=context.audit(args),
    )
    state = "enabled" if enabled else "disabled"
    print(f"account {account['name']} {state}" + ("" if changed else " already"))
    return 0


def cmd_accounts_edit(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_accounts import AccountChange
    from billingctl.services.accounts import edit_account

    change = AccountChange(
        ident=args.ident,
        value=args.value,
        tech_prefix=args.tech_prefix,
        password=_password(args),
        clear_password=args.no_password,
        auth_methods=args.auth_methods,
        enabled=args.enabled,
        originate=args.originate,
        terminate=args.terminate,
        new_name=args.name,
    )
    if change == AccountChange():
        raise UserError("nothing to change: give an option (see --help)")
    account, changed = edit_account(
        context.engine(args),
        args.account,
        change,
        audit=context.audit(args),
        cipher=context.cipher(args),
    )
    what = f"updated: {', '.join(changed)}" if changed else "unchanged"
    print(f"account {account['name']} {what}")
    return 0


def cmd_accounts_show(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_accounts import show_account

    print_one(show_account(context.engine(args), args.account), args.format)
    return 0


def cmd_security_rotate_key(args: argparse.Namespace) -> int:
    from billing_core.adapters.secretbox import KeySettingError, cipher_for, read_key_file
    from billingctl.adapters.account_secrets import rotate_key

    try:
        new_key = read_key_file(args.new_key_file, "--new-key-file")
    except KeySettingError as exc:
        raise UserError(str(exc)) from None
    count = rotate_key(context.engine(args), context.cipher(args), cipher_for(new_key))
    print(
        f"{count} account secrets re-encrypted under the new key; now point"
        " [security] secrets_key_file (or secrets_key_env) at it and send SIGHUP to radiusd"
    )
    return 0


def cmd_accounts_disable(args: argparse.Namespace) -> int:
    return _set_enabled(args, enabled=False)


def cmd_accounts_enable(args: argparse.Namespace) -> int:
    return _set_enabled(args, enabled=True)


def cmd_accounts_delete(args: argparse.Namespace) -> int:
    from billingctl.adapters.admin_accounts import delete_account

    client = delete_account(context.engine(args), args.account, audit=context.audit(args))
    print(f"account {args.account} of {client} deleted")
    return 0


def _password_options(parser: Any, *, edit: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--password", help="login accounts only; hashed (pap) or encrypted (chap, digest)"
    )
    group.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (one line)"
    )
    if edit:
        group.add_argument("--no-password", action="store_true", help="remove the password")


def _methods_option(parser: Any) -> None:
    parser.add_argument(
        "--auth-methods",
        metavar="pap,chap,digest",
        help="how a login account's password may be proven (default pap); chap and digest"
        " keep it encrypted under [security] secrets_key_file",
    )


def _register_security(groups: Any) -> None:
    s_sub = add_group(groups, "security", "the server key of account secrets")
    rotate = add_command(
        s_sub,
        "rotate-key",
        "re-encrypt every account secret under a new key, in one transaction",
        cmd_security_rotate_key,
    )
    rotate.add_argument(
        "--new-key-file", required=True, metavar="FILE", help="mode 0600, 64 hex digits"
    )


def _register_accounts(groups: Any) -> None:
    a_sub = add_group(groups, "accounts", "accounts: how a client's calls are recognized")
    add = add_command(a_sub, "add", "a new account of a client", cmd_accounts_add)
    add.add_argument("client", metavar="CLIENT")
    add.add_argument("account", metavar="NAME")
    add.add_argument("--ident", required=True, choices=("login", "ip", "ani"))
    add.add_argument("--value", required=True, help="the login, IP address or number")
    add.add_argument("--tech-prefix", metavar="PREFIX")
    _password_options(add, edit=False)
    _methods_option(add)
    add.add_argument("--disabled", action="store_true", help="add it disabled")
    show = add_command(a_sub, "show", "one account (never its password)", cmd_accounts_show)
    show.add_argument("account", metavar="NAME")
    add_format(show, ("table", "json"))
    lst = add_command(a_sub, "list", "accounts", cmd_accounts_list)
    lst.add_argument("--client")
    add_format(lst, ("table", "json", "csv"))
    edit = add_command(a_sub, "edit", "change an account", cmd_accounts_edit)
    edit.add_argument("account", metavar="NAME")
    edit.add_argument("--name", metavar="NEW_NAME", help="rename the account")
    edit.add_argument("--ident", choices=("login", "ip", "ani"))
    edit.add_argument("--value")
    edit.add_argument("--tech-prefix", metavar="PREFIX", help="'' removes it")
    _password_options(edit, edit=True)
    _methods_option(edit)
    for flag in ("enabled", "originate", "terminate"):
        edit.add_argument(f"--{flag}", type=yes_no, metavar="yes|no")
    for name, text, fn in (
        ("disable", "stop recognizing the account (it stays)", cmd_accounts_disable),
        ("enable", "recognize the account again", cmd_accounts_enable),
        ("delete", "remove the account (its CDRs stay)", cmd_accounts_delete),
    ):
        parser = add_command(a_sub, name, text, fn)
        parser.add_argument("account", metavar="NAME")


def register(groups: Any) -> None:
    _register_accounts(groups)
    _register_security(groups)
