"""Reading a provisioning file from disk (CONTRACT §4); validation is in ``provisioning``.

YAML is read with a safe loader (libyaml's ``CSafeLoader`` when present) that also
refuses a key repeated in one mapping (plain ``safe_load`` would silently keep the last
one); a ``.json`` file is read with ``json``, refusing repeated keys too. Rates CSV files
are resolved relative to the provisioning file.
"""

from __future__ import annotations

import csv
import json
import pickle
import re
import subprocess
import sys
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import yaml

from billingctl.provisioning import (
    RATE_COLUMNS,
    RATE_REQUIRED_COLUMNS,
    ProvisioningError,
    ProvisioningSpec,
    parse_provisioning,
)

__all__ = ["load_provisioning_file", "read_rates_csv"]


def load_provisioning_file(path: Path) -> ProvisioningSpec:
    """Read, parse and validate ``path``; raise ProvisioningError (one line) on any fault."""
    name = path.name
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ProvisioningError(name, f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ProvisioningError(name, f"cannot read: not UTF-8 text (byte {exc.start})") from exc

    if path.suffix.lower() == ".json":
        data = _load_json(text, name)
    else:
        data = _load_yaml_in_parts(path, text)
        if data is _NOT_SPLIT:
            data = _load_yaml(text, name)
    base = path.parent

    def read_csv(relpath: str) -> Iterator[tuple[int, dict[str, str]]]:
        return _read_rates_csv(base / relpath, relpath)

    return parse_provisioning(data, read_csv)


# --- YAML and JSON -------------------------------------------------------------------------


_STR_TAG = "tag:yaml.org,2002:str"


def _construct_unique_mapping(
    loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Hashable, object]:
    """SafeConstructor's mapping, refusing a key repeated within it."""
    seen: set[object] = set()
    for key_node, _value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # '<<' merge keys may be overridden on purpose
        if key_node.tag == _STR_TAG and isinstance(key_node, yaml.ScalarNode):
            key: object = key_node.value  # a plain string key: no need to construct it
        else:
            key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            continue  # the base class reports unhashable keys
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


class _StrictSafeLoader(yaml.SafeLoader):
    """SafeLoader (pure Python) that refuses a key repeated within one mapping."""

    construct_mapping = _construct_unique_mapping


#: The same with libyaml's parser (C), when PyYAML was built with it: several times faster
#: on a carrier's 10 MB file. Its error messages are worded differently, so a document it
#: refuses is read again by the pure-Python loader for the message (errors only).
_StrictCLoader: type[Any] | None = None
if hasattr(yaml, "CSafeLoader"):

    class _StrictC(yaml.CSafeLoader):
        construct_mapping = _construct_unique_mapping

    _StrictCLoader = _StrictC


def _load_yaml(text: str, name: str) -> object:
    if _StrictCLoader is not None:
        try:
            return _read_yaml(_StrictCLoader, text, name)
        except ProvisioningError as fast_error:
            _read_yaml(_StrictSafeLoader, text, name)  # raises, with PyYAML's own message
            raise fast_error from None  # pragma: no cover - the two parsers disagree
    return _read_yaml(_StrictSafeLoader, text, name)


def _read_yaml(loader_class: type[Any], text: str, name: str) -> object:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            return _build(loader, node)
        except RecursionError:  # an alias inside itself: the general constructor copes
            return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "malformed"
        where = f"{name} line {mark.line + 1}" if mark is not None else name
        raise ProvisioningError(where, f"invalid YAML: {problem}") from exc
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        # e.g. an unquoted timestamp that is no date: "2026-13-01"
        raise ProvisioningError(name, f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()


_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _build(loader: Any, node: yaml.Node) -> object:
    """The document's value, as the loader's constructor would make it, without its per-node
    generators: plain strings, lists and mappings (which refuse a repeated key) are built
    here directly; any other node (a number, a date, a merge key, a tag) by the constructor.
    Most of a provisioning file is strings, so this halves the time after parsing."""
    if isinstance(node, yaml.ScalarNode):
        return node.value if node.tag == _STR_TAG else loader.construct_object(node, deep=True)
    if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
        return [_build(loader, child) for child in node.value]
    if (
        isinstance(node, yaml.MappingNode)
        and node.tag == _MAP_TAG
        and all(isinstance(k, yaml.ScalarNode) and k.tag != _MERGE_TAG for k, _v in node.value)
    ):
        result: dict[object, object] = {}
        for key_node, value_node in node.value:
            key = _build(loader, key_node)
            if key in result:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            result[key] = _build(loader, value_node)
        return result
    return loader.construct_object(node, deep=True)


# --- a large YAML file's clients, parsed on two cores -----------------------------------------

#: Below this size one parse is quicker than starting a second process.
SPLIT_BYTES = 2_000_000
_NOT_SPLIT = object()
_CLIENTS_LINE = re.compile(r"clients:[ \t]*(#.*)?")


def _clients_split(lines: list[str]) -> tuple[int, int, int] | None:
    """(the ``clients:`` line, the first line of its list's second half, the line after the
    list) when the document can be parsed in three parts with the same result: the rest
    of the document with an empty ``clients:``, and the list's items cut in two at an item
    of its own indentation. Directives, several documents or an unusual layout mean no
    split (None). A cut inside a quoted scalar or a flow collection leaves a part that
    fails to parse, and a failed part means the whole file is parsed again as one."""
    starts = [i for i, line in enumerate(lines) if _CLIENTS_LINE.fullmatch(line)]
    if len(starts) != 1:
        return None
    if any(line.startswith(("%", "---", "...")) for line in lines):
        return None
    first = starts[0]
    end, indent, items = len(lines), -1, []
    for i in range(first + 1, len(lines)):
        body = lines[i].lstrip(" ")
        if not body or body.startswith("#"):
            continue
        depth = len(lines[i]) - len(body)
        if depth == 0:
            end = i
            break
        if indent < 0:
            indent = depth
        if depth < indent:
            return None
        if depth == indent:
            if not (body == "-" or body.startswith("- ")):
                return None
            items.append(i)
    if len(items) < 2:
        return None
    middle = items[len(items) // 2]
    return first, middle, end


def _load_yaml_in_parts(path: Path, text: str) -> object:
    """The document of a large YAML file, its ``clients`` list's second half parsed by a
    second process while this one parses the rest (``_clients_split``): 10 MB take libyaml
    about 8 s on one core. ``_NOT_SPLIT`` when the file is small or cannot be split, or
    when any part fails: the whole file is then parsed as one, for its own error message."""
    if _StrictCLoader is None or len(text) < SPLIT_BYTES:
        return _NOT_SPLIT
    if "&" in text or "*" in text:  # perhaps an anchor and its aliases
        return _NOT_SPLIT
    lines = text.split("\n")
    split = _clients_split(lines)
    if split is None:
        return _NOT_SPLIT
    first, middle, end = split
    child = subprocess.Popen(
        [sys.executable, "-m", "billingctl.provisioning_file", str(path), str(middle), str(end)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        rest = _read_yaml(_StrictCLoader, "\n".join(lines[: first + 1] + lines[end:]), path.name)
        head = _read_yaml(_StrictCLoader, "\n".join(lines[first + 1 : middle]), path.name)
    except ProvisioningError:
        rest = head = None
    finally:
        out, _ = child.communicate()  # reaped whatever happened here
    if child.returncode != 0 or not isinstance(rest, dict) or not isinstance(head, list):
        return _NOT_SPLIT
    tail = pickle.loads(out)  # noqa: S301 - our own child's answer, on our own pipe
    if rest.get("clients", _NOT_SPLIT) is not None or not isinstance(tail, list):
        return _NOT_SPLIT
    rest["clients"] = head + tail
    return rest


def _part(path: Path, start: int, end: int) -> object:
    """Lines ``start`` to ``end`` of ``path``, read and parsed as ``_load_yaml_in_parts``
    reads the file."""
    lines = path.read_text(encoding="utf-8-sig").split("\n")
    assert _StrictCLoader is not None
    return _read_yaml(_StrictCLoader, "\n".join(lines[start:end]), path.name)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"found duplicate key {key!r}")
        result[key] = value
    return result


def _load_json(text: str, name: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ProvisioningError(f"{name} line {exc.lineno}", f"invalid JSON: {exc.msg}") from exc
    except ValueError as exc:
        raise ProvisioningError(name, f"invalid JSON: {exc}") from exc


# --- rates CSV -----------------------------------------------------------------------------


def read_rates_csv(file: Path, name: str) -> Iterator[tuple[int, dict[str, str]]]:
    """The rows of a rates CSV as ``load`` reads them (``billingctl rates import`` too):
    (line number, cells by column); errors name ``name`` and the line."""
    return _read_rates_csv(file, name)


def _read_rates_csv(file: Path, name: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row; the header is line 1; blank lines are skipped.

    Cells are stripped. A row shorter than the header gets empty cells (null/default);
    a cell beyond the header, or under an unnamed header cell, must be empty. The column
    names are checked by ``parse_provisioning``. OSError and UnicodeDecodeError propagate:
    ``parse_provisioning`` reports them at the table's ``csv`` path.
    """
    with file.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, strict=True)
        try:
            header = [cell.strip() for cell in next(reader, [])]
            _check_header(header, name)
            named = [column for column in header if column]
            last_line = reader.line_num
            for cells in reader:
                line = last_line + 1  # a quoted cell may span lines: report the first
                last_line = reader.line_num
                if not any(cell.strip() for cell in cells):
                    continue  # a blank line
                row = dict.fromkeys(named, "")
                for index, cell in enumerate(cells):
                    value = cell.strip()
                    column = header[index] if index < len(header) else ""
                    if column:
                        row[column] = value
                    elif value:
                        raise ProvisioningError(
                            f"{name} line {line}: column {index + 1}", "has no name in the header"
                        )
                yield line, row
        except csv.Error as exc:
            raise ProvisioningError(
                f"{name} line {reader.line_num}", f"invalid CSV: {exc}"
            ) from exc


def _check_header(header: list[str], name: str) -> None:
    where = f"{name} line 1"
    required = ", ".join(RATE_REQUIRED_COLUMNS)
    if not any(header):
        raise ProvisioningError(where, f"must be a header naming at least {required}")
    missing = [column for column in RATE_REQUIRED_COLUMNS if column not in header]
    if missing:
        raise ProvisioningError(where, f"header lacks {', '.join(missing)} (needs {required})")
    named = [column for column in header if column]
    for column in named:
        if column not in RATE_COLUMNS:
            raise ProvisioningError(f"{where}: {column}", "unknown column")
        if named.count(column) > 1:
            raise ProvisioningError(f"{where}: {column}", "repeated column")


if __name__ == "__main__":  # the second process of ``_load_yaml_in_parts``
    _path, _start, _end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sys.stdout.buffer.write(pickle.dumps(_part(Path(_path), _start, _end), protocol=5))
