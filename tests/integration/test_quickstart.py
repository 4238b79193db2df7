"""The README's quick start works as written: ``make dev``'s corpus root holds the demo corpus on a fresh
clone, and the README's curl lines, run by curl against the real stack, are answered as it says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec
import redis

from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizers import SentencePieceConfig, resolve_config
from mt_storage.embedded_redis import EmbeddedRedis, free_port
from tests.conftest import SHAKESPEARE

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from demo import RUN_REQUEST
from stack import DEMO_CORPUS, Stack, prepare_corpus_root

README = Path(__file__).resolve().parents[2] / "README.md"


def _quickstart_commands() -> list[str]:
    """The curl lines of the README's quick start, continuation lines joined."""
    section = README.read_text(encoding="utf-8").split("### Quick start", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_make_devs_corpus_root_holds_the_demo_corpus_on_a_fresh_clone(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    root = prepare_corpus_root(env, tmp_path / "clone" / "corpus", SHAKESPEARE.parent)
    assert root == tmp_path / "clone" / "corpus"
    assert env["APP__CORPUS_ROOT"] == str(root.resolve())
    assert (root / DEMO_CORPUS).read_bytes() == SHAKESPEARE.read_bytes()
    # A root the user set is neither created nor filled.
    mine = tmp_path / "mine"
    env = {"APP__CORPUS_ROOT": str(mine)}
    prepare_corpus_root(env, tmp_path / "unused", SHAKESPEARE.parent)
    assert not mine.exists() and not (tmp_path / "unused").exists()


def _curl(command: str, base: str, ids: dict[str, str]) -> dict[str, object]:
    assert command.startswith("curl -s "), command
    line = command.replace("localhost:8000", base)
    for placeholder, value in ids.items():
        line = line.replace(placeholder, value)
    result = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=60, check=True)
    answer = json.loads(result.stdout)
    assert isinstance(answer, dict), result.stdout
    return answer


def test_the_readmes_curl_lines_work_against_make_devs_stack(tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    # A fresh stack on the session's Redis: forget what earlier tests stored there (the storage marker of
    # their artifact roots above all, which this stack's new root would not match).
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()
    env = {
        **os.environ,
        "REDIS__URL": redis_server.url,
        "APP__ARTIFACTS_ROOT": str(tmp_path / "artifacts"),
        "APP__RUNS_ROOT": str(tmp_path / "runs"),
        "HTTP__PORT": str(free_port()),
        "WORKER__HEALTH_CHECK_INTERVAL": "1",
    }
    env.pop("APP__CORPUS_ROOT", None)
    prepare_corpus_root(env, tmp_path / "corpus", SHAKESPEARE.parent)
    commands = _quickstart_commands()
    assert len(commands) == 5
    with Stack(env, tmp_path / "data", log_dir=tmp_path / "logs") as stack:
        base = stack.api_url.removeprefix("http://")
        ids: dict[str, str] = {}
        bpe = _curl(commands[0], base, ids)
        assert (bpe["status"], bpe["location"]) == ("queued", f"/tokenizers/{bpe['id']}")
        ids["tok_…"] = str(bpe["id"])
        sentencepiece = _curl(commands[1], base, ids)
        assert sentencepiece["status"] == "queued" and re.fullmatch(r"tok_[0-9A-Z]{26}", str(sentencepiece["id"]))
        deadline = time.monotonic() + 120
        while (job := _curl(commands[2], base, ids))["status"] != "succeeded":
            assert job["status"] in {"queued", "running"} and time.monotonic() < deadline, job
            time.sleep(0.5)
        run = _curl(commands[3], base, ids)
        assert (run["status"], run["location"]) == ("queued", f"/runs/{run['id']}")
        ids["run_…"] = str(run["id"])
        shown = _curl(commands[4], base, ids)
        assert shown["id"] == run["id"] and shown["status"] in {"queued", "running"}
        # Not part of the quick start: stop the long jobs rather than wait for them at shutdown.
        for location in (f"/runs/{run['id']}", f"/tokenizers/{sentencepiece['id']}"):
            assert httpx.post(f"{stack.api_url}{location}/cancel").status_code in {200, 409}


def test_the_defaults_the_readme_states_are_the_real_ones() -> None:
    text = " ".join(README.read_text(encoding="utf-8").split())
    request = TrainTokenizerRequest(corpus_path="x")
    config = resolve_config(msgspec.structs.replace(request, method="sentencepiece"))
    assert isinstance(config, SentencePieceConfig)
    assert f"(default `{json.dumps(request.special_tokens)}`;" in text
    assert config.byte_fallback is True and "`byte_fallback` (default on)" in text
    assert config.normalization == "identity" and "`normalization` `identity` (default," in text
    assert config.input_sentence_size == 2_000_000 and "(lines sampled, default 2,000,000;" in text
    assert "`make demo DEMO_STEPS=200` trains for 200 steps instead of 1,000" in text
    assert RUN_REQUEST["max_steps"] == 1000
