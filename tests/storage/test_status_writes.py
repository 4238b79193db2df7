"""Only the lifecycle writes a job's status: no other module in the tree builds a record with a new status."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIFECYCLE = ROOT / "libs" / "storage" / "mt_storage" / "lifecycle.py"
# Modules whose ``status`` is not a job's: a webhook delivery's (pending, succeeded, failed).
NOT_JOBS = {ROOT / "libs" / "storage" / "mt_storage" / "webhooks.py"}


def _status_writes(path: Path) -> list[int]:
    """Lines of ``path`` that call ``replace(..., status=...)`` (a record moved to a new status)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and any(keyword.arg == "status" for keyword in node.keywords):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == "replace":
                lines.append(node.lineno)
    return lines


def test_the_lifecycle_is_the_only_writer_of_status() -> None:
    sources = [p for folder in ("libs", "services") for p in (ROOT / folder).rglob("*.py")]
    writers = {str(p.relative_to(ROOT)): _status_writes(p) for p in sources if p != LIFECYCLE and p not in NOT_JOBS}
    assert {path: lines for path, lines in writers.items() if lines} == {}
    assert "Job" not in {
        name.id for path in NOT_JOBS for name in ast.walk(ast.parse(path.read_text())) if isinstance(name, ast.Name)
    }
    assert _status_writes(LIFECYCLE)  # the check sees real writes where they are
