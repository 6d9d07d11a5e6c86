"""One configuration loader for both commands: billingctl refuses exactly the files radiusd
refuses (one line naming the key, exit 2); both print the package's version."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from billingctl import cli
from radiusd import __main__ as radiusd_main

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

BAD_FILES = [
    ('[database]\nurl = "sqlite:///x.db"\nbogus = 1\n', "database.bogus: unknown key"),
    ('[billing]\nmax_call_length = "7200s"\n', "billing.max_call_length: expected a whole number"),
    ("[billing]\nmax_call_length = 0\n", "billing.max_call_length: must be at least 1"),
    ('[server]\nauth_listen = "1812"\n', "server.auth_listen: expected host:port"),
    ('[nas]\naddress = "10.0.0.1"\n', "nas: expected an array of tables"),
    ('[[nas]]\naddress = "10.0.0.300"\nsecret = "s"\n', "nas[0].address: not an IP address"),
    ("[radius]\nport = 1\n", "radius: unknown section"),
    ("[billing\n", "invalid TOML"),
]


def _run(main: object, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    assert callable(main)
    try:
        code = int(main(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert out == ""
    return code, err


@pytest.mark.parametrize(("text", "fragment"), BAD_FILES)
def test_billingctl_refuses_what_radiusd_refuses(
    text: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "radiusd.toml"
    path.write_text(text, encoding="utf-8")
    code, daemon = _run(radiusd_main.main, ["check-config", "--config", str(path)], capsys)
    assert code == 2
    # every command checks the file first, even one that needs no database
    for argv in (["db", "upgrade"], ["load", str(path), "--dry-run"], ["clients", "list"]):
        code, ctl = _run(cli.main, ["--config", str(path), *argv], capsys)
        assert code == 2, ctl
        assert len(ctl.splitlines()) == 1, ctl
        assert fragment in ctl
        assert ctl.removeprefix("billingctl: ") == daemon.removeprefix("radiusd: ")


def test_billingctl_takes_environment_overrides_like_radiusd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "radiusd.toml"
    path.write_text("", encoding="utf-8")
    monkeypatch.setenv("RADIUSD_BILLING_MAX_CALL_LENGTH", "long")
    code, err = _run(cli.main, ["--config", str(path), "db", "upgrade"], capsys)
    assert (code, err) == (
        2,
        "billingctl: RADIUSD_BILLING_MAX_CALL_LENGTH: expected a whole number, got 'long'\n",
    )


def test_billingctl_does_not_read_the_daemons_nas_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """secret_env / secret_file are checked for form, not read: they may belong to the
    daemon's user; radiusd reads them."""
    monkeypatch.delenv("NAS_SECRET_UNSET", raising=False)
    monkeypatch.delenv("RADIUSD_DATABASE_URL", raising=False)
    path = tmp_path / "radiusd.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/b.db"\n'
        '[[nas]]\naddress = "10.0.0.1"\nsecret_env = "NAS_SECRET_UNSET"\n'
        '[[nas]]\naddress = "10.0.0.2"\nsecret_file = "/nonexistent/secret"\n',
        encoding="utf-8",
    )
    code, err = _run(radiusd_main.main, ["check-config", "--config", str(path)], capsys)
    assert code == 2
    assert "nas[0].secret_env: environment variable 'NAS_SECRET_UNSET' is not set" in err
    assert cli.main(["--config", str(path), "db", "upgrade"]) == 0
    capsys.readouterr()
    path.write_text('[[nas]]\naddress = "10.0.0.1"\nsecret_env = ""\n', encoding="utf-8")
    code, err = _run(cli.main, ["--config", str(path), "db", "upgrade"], capsys)
    assert (code, err) == (2, "billingctl: nas[0].secret_env: must name an environment variable\n")


def test_versions_come_from_the_package_metadata_and_agree_with_the_changelog() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    installed = version("voip-radiusd")
    assert installed == project["version"]
    for command in ("radiusd", "billingctl"):
        result = subprocess.run(
            [str(BIN / command), "--version"], capture_output=True, text=True, timeout=30
        )
        assert (result.returncode, result.stdout, result.stderr) == (
            0,
            f"{command} {installed}\n",
            "",
        )
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\]", changelog, flags=re.MULTILINE)
    assert headings[0] == "Unreleased"
    # the version the unreleased section leads to, or else the latest release, is pyproject's
    stated = re.search(r"^Next release: ([0-9][^ \n]*)", changelog, flags=re.MULTILINE)
    released = [h for h in headings if h != "Unreleased"]
    assert (stated.group(1) if stated else released[0]) == installed
