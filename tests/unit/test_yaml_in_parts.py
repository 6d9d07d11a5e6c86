"""A large YAML file's clients parsed in two processes give what one parse gives (issue 19),
and whatever the split cannot vouch for is parsed as one, with one parse's error message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from billingctl import provisioning_file as pf
from billingctl.provisioning import ProvisioningError


@pytest.fixture(autouse=True)
def _split_every_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pf, "SPLIT_BYTES", 0)


def _both(tmp_path: Path, text: str) -> tuple[object, object]:
    """(the split parse, or _NOT_SPLIT; one parse, or the error's text)."""
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        whole: object = pf._load_yaml(text, path.name)
    except ProvisioningError as exc:
        whole = str(exc)
    return pf._load_yaml_in_parts(path, text), whole


CLIENTS = """settings:
  max_call_length: 60
clients:   # three of them
  - name: "a"
    accounts:
      - {name: a-1, ident: login, value: u1, password: "p w"}
  # a comment between items
  - name: b
    tags: [x, y]
    note: |
      two lines
      - not an item
  - name: c
    postpaid: yes
rate_tables: []
"""


def test_a_document_split_in_three_parts_is_the_one_parse(tmp_path: Path) -> None:
    split, whole = _both(tmp_path, CLIENTS)
    assert split is not pf._NOT_SPLIT
    assert split == whole
    assert isinstance(whole, dict) and [c["name"] for c in whole["clients"]] == ["a", "b", "c"]
    assert whole["clients"][2]["postpaid"] is True  # YAML 1.1 booleans, as one parse reads


@pytest.mark.parametrize(
    "text",
    [
        CLIENTS.replace('name: "a"', "name: &n a").replace("name: b", "name: *n"),  # aliases
        "%YAML 1.1\n---\n" + CLIENTS,  # a directive, document markers
        CLIENTS.replace("clients:   # three of them", "clients: []"),  # not a block list
        "clients:\n- name: a\n- name: b\n",  # items at column 0
        "clients:\n  - name: a\n",  # one item
        CLIENTS + "clients:\n  - name: d\n  - name: e\n",  # a second clients list
    ],
)
def test_what_the_split_cannot_vouch_for_is_not_split(tmp_path: Path, text: str) -> None:
    split, _whole = _both(tmp_path, text)
    assert split is pf._NOT_SPLIT


@pytest.mark.parametrize(
    "text",
    [
        # a quoted scalar over two lines, cut in the middle: the head part fails to parse
        'clients:\n  - name: a\n  - name: "b\n  - c"\n  - name: d\n',
        # a flow mapping over lines, cut inside it
        "clients:\n  - name: a\n  - {name: b,\n  - x: 1}\n  - name: d\n",
        # a repeated key in the rest of the document
        "settings: {}\nsettings: {}\nclients:\n  - name: a\n  - name: b\n",
        # a repeated key in an item of the child's part
        "clients:\n  - name: a\n  - name: b\n    name: c\n",
    ],
)
def test_a_part_that_fails_means_one_parse(tmp_path: Path, text: str) -> None:
    split, _whole = _both(tmp_path, text)
    assert split is pf._NOT_SPLIT


def test_the_loader_gives_one_parses_error_for_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("clients:\n  - name: a\n  - name: b\n    name: c\n", encoding="utf-8")
    with pytest.raises(ProvisioningError, match="duplicate key 'name'") as caught:
        pf.load_provisioning_file(path)
    assert "p.yaml line 4" in str(caught.value)


_scalar = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12),
    st.integers(-5, 5),
    st.booleans(),
    st.none(),
)
_item = st.dictionaries(st.sampled_from(["name", "note", "x", "tags"]), _scalar, min_size=1)


@settings(max_examples=40, deadline=None)
@given(items=st.lists(_item, min_size=2, max_size=8), flow=st.booleans())
def test_any_list_of_clients_reads_as_one_parse_reads_it(
    tmp_path_factory: pytest.TempPathFactory, items: list[dict[str, object]], flow: bool
) -> None:
    body = yaml.safe_dump(items, default_flow_style=None if flow else False, allow_unicode=True)
    indented = "".join(f"  {line}" for line in body.splitlines(keepends=True))
    text = "settings: {}\nclients:\n" + indented
    tmp_path = tmp_path_factory.mktemp("split")
    split, whole = _both(tmp_path, text)
    if "&" in text or "*" in text:  # perhaps an anchor: never split
        assert split is pf._NOT_SPLIT
    else:  # the dumper's items are whole at their indentation: always split, same result
        assert split == whole
