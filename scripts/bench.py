"""``make bench``: run every benchmark module in ``scripts/benchmarks/`` (or those named on the command line)
and write their markdown sections to ``docs/benchmarks.md``.

Each module exposes ``main() -> str`` returning one markdown section. Benchmarks report medians of repeated
runs as ratios against a reference measured in the same run, so a noisy shared machine moves both sides.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "scripts" / "benchmarks"
OUTPUT = ROOT / "docs" / "benchmarks.md"


def machine() -> str:
    """One line naming the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def _existing_sections() -> dict[str, str]:
    """The sections already in docs/benchmarks.md, by heading, so running one benchmark keeps the others."""
    if not OUTPUT.is_file():
        return {}
    sections: dict[str, str] = {}
    for chunk in OUTPUT.read_text(encoding="utf-8").split("\n## ")[1:]:
        section = "## " + chunk.strip()
        sections[section.splitlines()[0]] = section
    return sections


def _write(sections: dict[str, str]) -> None:
    header = (
        "# Benchmarks\n\n"
        f"Last written by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n"
        "Numbers are medians of repeated runs; ratios compare against a reference measured in the same run.\n"
        "A section run on its own keeps the others as they were; each names the machine it was measured on.\n"
    )
    body = "\n\n".join(sections[heading] for heading in sorted(sections))
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(header + "\n" + body + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_"))
    sys.path.insert(0, str(BENCHMARKS.parent))
    sections = _existing_sections()
    for name in names:
        print(f"bench: {name}", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"benchmarks.{name}")
        heading, _, body = module.main().strip().partition("\n")
        # Sections are kept across runs, so each names the machine and the day its numbers come from.
        stamp = f"Measured on {datetime.now(UTC):%Y-%m-%d} on {machine()}."
        sections[heading] = "\n\n".join(part for part in (heading, stamp, body.strip()) if part)
        _write(sections)  # after each benchmark, so a later failure keeps what was measured
        print(f"bench: {name} done in {time.monotonic() - started:.0f} s", flush=True)
    print(f"bench: wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
