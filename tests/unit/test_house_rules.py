"""The house's size rule, checked on the tree: no function over 60 lines.

Exempt by name: the codec's unrolled decode (a flat run of per-attribute cases, measured as
the fastest form) and the benchmark's report writer (a document written top to bottom)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("radiusd", "billing_core", "billingctl", "bench")
LIMIT = 60
EXEMPT = {
    ("radiusd/codec.py", "decode"),
}


def long_functions(root: Path = ROOT) -> list[str]:
    found: list[str] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if "/migrations/" in rel:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    assert node.end_lineno is not None
                    lines = node.end_lineno - node.lineno + 1
                    exempt = (rel, node.name) in EXEMPT or rel.startswith("bench/report")
                    if lines > LIMIT and not exempt:
                        found.append(f"{rel}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_over_sixty_lines() -> None:
    assert long_functions() == []


def test_the_rule_sees_a_long_function(tmp_path: Path) -> None:
    package = tmp_path / "radiusd"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    (package / "long.py").write_text(f"def long() -> None:\n{body}\n")
    assert long_functions(tmp_path) == [f"radiusd/long.py:1 long ({LIMIT + 1} lines)"]
