"""Fails on what the type checker and linter let through but the project forbids: the explicit-any type,
cast calls, ignore comments, to-do markers, and bare or silent ``except`` clauses.

Usage: ``python scripts/guard.py [DIR...]`` (default: every source folder).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIRS = ("libs", "services", "scripts", "tests", "stubs")
# Spelled in pieces so this file does not match itself.
_MARKERS = "|".join(("TO" + "DO", "FIX" + "ME", "X" + "XX", "HA" + "CK"))
PATTERNS = {
    "explicit-any type": re.compile(r"\b" + "A" + r"ny\b"),
    "cast call": re.compile(r"\b" + "ca" + r"st\("),
    "ignore comment": re.compile("type" + r":\s*ignore"),
    "to-do marker": re.compile(rf"\b({_MARKERS})\b"),
}


def check_file(path: Path) -> list[str]:
    """Problems in one file, each ``path:line: what``."""
    text = path.read_text(encoding="utf-8")
    problems = [
        f"{path}:{number}: {name}"
        for number, line in enumerate(text.splitlines(), start=1)
        for name, pattern in PATTERNS.items()
        if pattern.search(line)
    ]
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.ExceptHandler):
            if node.type is None:
                problems.append(f"{path}:{node.lineno}: bare except")
            elif all(isinstance(stmt, ast.Pass) or _is_ellipsis(stmt) for stmt in node.body):
                problems.append(f"{path}:{node.lineno}: silent except (handle, log or re-raise)")
    return problems


def _is_ellipsis(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and stmt.value.value is Ellipsis


def main(argv: list[str]) -> int:
    dirs = [Path(arg) for arg in argv] or [ROOT / name for name in DEFAULT_DIRS]
    files = sorted(p for d in dirs if d.exists() for p in d.rglob("*.py*") if p.suffix in {".py", ".pyi"})
    problems = [problem for path in files for problem in check_file(path)]
    for problem in problems:
        print(problem)
    print(f"guard: {len(files)} files, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
