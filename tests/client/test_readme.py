"""The README's "From a terminal" and "From Python" examples, run as written against the real stack; only
the URL and the step budget (200 → 30, to keep the suite short) are changed, and the corpus is a slice of
Tiny Shakespeare under the README's file name."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from redis.asyncio import Redis

from mt_contracts import codec
from mt_contracts.jobs import RunJob
from mt_contracts.settings import ApiSettings, GatewaySettings, WorkerServiceSettings
from tests.client.stack import MT, serving
from tests.helpers import running_workers

README = Path(__file__).resolve().parents[2] / "README.md"
README_URL = "http://127.0.0.1:8000"
STEPS = ("max_steps 200", "max_steps 30"), ("max_steps=200", "max_steps=30")


def _block(section: str, language: str) -> str:
    text = README.read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"```{language}\n(.*?)```", body, re.DOTALL)
    assert match is not None, f"no {language} block under {section}"
    code = match.group(1)
    assert README_URL in code
    for old, new in STEPS:
        code = code.replace(old, new)
    return code


@pytest.fixture
async def server(api_settings: ApiSettings, redis: Redis, corpus_root: Path, shakespeare: str) -> AsyncIterator[str]:
    (corpus_root / "tinyshakespeare.txt").write_text(shakespeare[:200_000], encoding="utf-8")
    settings = msgspec.structs.replace(api_settings, api=GatewaySettings(keepalive_seconds=0.3))
    async with serving(settings) as url:
        yield url


async def test_terminal_example(server: str, worker_settings: WorkerServiceSettings, tmp_path: Path) -> None:
    script = _block("From a terminal", "bash").replace(README_URL, server)
    env = {**os.environ, "PATH": f"{Path(MT).parent}{os.pathsep}{os.environ['PATH']}"}
    async with running_workers(worker_settings) as _:
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            script,
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 600)
    assert process.returncode == 0, stderr.decode()[-3000:]
    out = stdout.decode()
    assert "status succeeded" in out and "train_loss" in out and "val_loss" in out
    assert "sample 1:" in out and "ROMEO:" in out
    run = codec.decode(out.strip().splitlines()[-1], RunJob)
    assert run.status == "succeeded" and run.metrics is not None and run.metrics.steps == 30
    assert sorted(path.name for path in (tmp_path / "model").iterdir()) == [
        "config.json",
        "generation_config.json",
        "logs.jsonl",
        "manifest.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


def _run_python(code: str, cwd: Path) -> str:
    printed = io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        # The README's own code, as a reader would paste it.
        with contextlib.redirect_stdout(printed):
            exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    finally:
        os.chdir(previous)
    return printed.getvalue()


async def test_python_example(server: str, worker_settings: WorkerServiceSettings, tmp_path: Path) -> None:
    code = _block("From Python", "python").replace(README_URL, server)
    async with running_workers(worker_settings) as _:
        printed = await asyncio.to_thread(_run_python, code, tmp_path)
    assert "step 30/30 loss" in printed
    assert re.search(r"val_loss \d+\.\d{3}", printed)
    assert "RunMetrics(val_loss=" in printed and "steps=30" in printed
    assert (tmp_path / "model.safetensors").stat().st_size > 100_000


def _outside_code(text: str) -> list[str]:
    """The README's lines that are not inside a fenced code block; fails on a fence left open."""
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    assert not fenced, "a code block is never closed"
    return lines


def test_sections_are_whole() -> None:
    """Headings sit outside code blocks, every table opens with a header row, and the Corpora, Dry runs and
    Webhooks sections each hold their own table (a bad merge once interleaved them)."""
    text = README.read_text(encoding="utf-8")
    for line in text.splitlines():
        # A heading inside a code block is the usual trace of a merge that lost a fence.
        if line.startswith("## "):
            assert line in _outside_code(text), line
    sections: dict[str, list[str]] = {}
    name = ""
    for line in _outside_code(text):
        if line.startswith("## "):
            name = line[3:]
            sections[name] = []
        else:
            sections.setdefault(name, []).append(line)
    for name, lines in sections.items():
        for previous, line, following in zip(["", *lines[:-1]], lines, [*lines[1:], ""], strict=True):
            if line.startswith("|") and not previous.startswith("|"):
                assert following.startswith("| ---"), f"a table under {name!r} has no header row: {line[:60]}"
    titles = list(sections)
    assert titles.index("Corpora") + 1 == titles.index("Dry runs") == titles.index("Webhooks") - 1

    def routes(section: str) -> set[str]:
        rows = [line for line in sections[section] if line.startswith("| `")]
        return {route for row in rows for route in re.findall(r"`(?:GET|PUT|POST|DELETE) (/\w+)", row)}

    assert routes("Corpora") == {"/corpora"}
    assert routes("Dry runs") == set()
    assert routes("Webhooks") == {"/webhooks"}
