"""The OpenAPI document matches the API: schemathesis (the CLI, as a user runs it) fuzzes every operation of the
real gateway (``python -m mt_api`` under uvicorn on a free port, the harness's Redis), with a succeeded
tokenizer and a succeeded run in place so that id paths reach real items. A fixed seed and a bounded number
of examples per operation keep it reproducible and about a minute long."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from mt_storage.embedded_redis import EmbeddedRedis, free_port
from tests.conftest import SHAKESPEARE
from tests.helpers import worker_process

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
)
SEED = 20261201
MAX_EXAMPLES = 8


class LiveApi:
    def __init__(self, url: str, tokenizer_id: str, run_id: str, webhook_id: str, log: Path) -> None:
        self.url = url
        self.tokenizer_id = tokenizer_id
        self.run_id = run_id
        self.webhook_id = webhook_id
        self.log = log


def _wait_status(client: httpx.Client, location: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(location).raise_for_status().json()
        if isinstance(body, dict) and body.get("status") in {"succeeded", "failed", "cancelled"}:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{location} not finished within {timeout} s: {body}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def live_api(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    root = tmp_path_factory.mktemp("fuzz")
    # A fresh deployment on the session's Redis: forget what earlier tests stored there (their storage marker
    # above all, which this deployment's new artifact root would not match).
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()
    corpus = root / "corpus"
    (corpus / "books").mkdir(parents=True)
    (corpus / "small.txt").write_text(SHAKESPEARE.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    (corpus / "books" / "a.txt").write_text("To be, or not to be, that is the question.\n", encoding="utf-8")
    port = free_port()
    env = {
        **os.environ,
        "REDIS__URL": redis_server.url,
        "APP__ARTIFACTS_ROOT": str(root / "artifacts"),
        "APP__RUNS_ROOT": str(root / "runs"),
        "APP__CORPUS_ROOT": str(corpus),
        "APP__LOG_LEVEL": "WARNING",
        "HTTP__PORT": str(port),
        "INFERENCE__TIMEOUT": "60",
        "WORKER__HEALTH_CHECK_INTERVAL": "2",
        "WORKER__NICENESS": "0",
    }
    log = root / "api.log"
    with log.open("wb") as output:
        api = subprocess.Popen([sys.executable, "-m", "mt_api"], env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    if api.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"the API did not start: {log.read_text()}") from None
                time.sleep(0.2)
            # Real workers only while the fixtures are made: jobs the fuzzer queues stay queued.
            with (
                worker_process("mt_tokenizer_worker", env),
                worker_process("mt_trainer_worker", env),
            ):
                tokenizer = client.post(
                    "/tokenizers/train", json={"corpus_path": "small.txt", "vocab_size": 300}
                ).raise_for_status()
                tokenizer_id = tokenizer.json()["id"]
                assert _wait_status(client, f"/tokenizers/{tokenizer_id}", 120)["status"] == "succeeded"
                run = client.post(
                    "/runs/train",
                    json={
                        "tokenizer_id": tokenizer_id,
                        "corpus_path": "small.txt",
                        "n_layer": 1,
                        "n_head": 1,
                        "n_embd": 8,
                        "block_size": 8,
                        "batch_size": 2,
                        "max_steps": 2,
                        "warmup_steps": 0,
                        "eval_interval": 1,
                        "eval_iters": 1,
                        "checkpoint_interval": 1,
                        "threads": 1,
                        "device": "cpu",
                    },
                ).raise_for_status()
                run_id = run.json()["id"]
                assert _wait_status(client, f"/runs/{run_id}", 300)["status"] == "succeeded"
            # A public address literal: registered without a DNS lookup; no webhook worker runs to call it.
            webhook = {"url": "https://93.184.215.14/hook", "events": ["run.succeeded"]}
            webhook_id = client.post("/webhooks", json=webhook).raise_for_status().json()["webhook"]["id"]
        yield LiveApi(url, tokenizer_id, run_id, webhook_id, log)
    finally:
        api.terminate()
        try:
            api.wait(30)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait()


def test_the_api_conforms_to_its_openapi_document(live_api: LiveApi, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f"""
seed = {SEED}
[generation]
max-examples = {MAX_EXAMPLES}
database = "none"
[phases.stateful]
enabled = false
[parameters]
"path.tokenizer_id" = "{live_api.tokenizer_id}"
"path.run_id" = "{live_api.run_id}"
"path.item_id" = "{live_api.tokenizer_id}"
"path.webhook_id" = "{live_api.webhook_id}"
# /readyz answers 503 by design here: the workers stopped once the fixtures were made.
[[operations]]
include-path = "/readyz"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
""",
        encoding="utf-8",
    )
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{live_api.url}/schema/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--no-color",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.txt").write_text(output, encoding="utf-8")
    assert result.returncode == 0, _shortened(output + "\n--- API log ---\n" + live_api.log.read_text())
    counts = re.search(r"(\d+) generated, (\d+) passed\n", output)
    assert counts is not None and counts[1] == counts[2] and int(counts[1]) > 500, _shortened(output)
    assert f"Seed: {SEED}" in output


def _shortened(text: str) -> str:
    """``text`` with runs of one character (the fuzzer's long strings) cut to 20."""
    return re.sub(r"(.)\1{200,}", lambda match: match.group(1) * 20 + "[...]", text)
