"""What the run tests share: a small run request, and submitting and polling runs and tokenizers through the
API (the app's test client or a real HTTP client), and the environment of a worker run as a process."""

from __future__ import annotations

import os

import httpx

from mt_contracts import codec
from mt_contracts.jobs import JobAccepted, RunJob, TokenizerJob
from mt_contracts.settings import WorkerServiceSettings
from tests.helpers import wait_for
from tests.integration.backends import storage_env

TERMINAL = {"succeeded", "failed", "cancelled"}
EVAL_INTERVAL = 50
# A one-layer GPT-2 that trains a step in milliseconds, checkpointing every 20 steps.
RUN: dict[str, object] = {
    "corpus_path": "small.txt",
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "batch_size": 4,
    "warmup_steps": 5,
    "eval_interval": EVAL_INTERVAL,
    "eval_iters": 2,
    "checkpoint_interval": 20,
    "device": "cpu",
}


async def get_run(client: httpx.AsyncClient, run_id: str) -> RunJob:
    return codec.decode((await client.get(f"/runs/{run_id}")).content, RunJob)


async def finished_run(client: httpx.AsyncClient, run_id: str, timeout: float = 240) -> RunJob:
    """The run once it ended (failing after ``timeout`` seconds)."""
    return await wait_for(lambda: get_run(client, run_id), lambda j: j.status in TERMINAL, timeout)


async def submit_run(client: httpx.AsyncClient, body: dict[str, object]) -> str:
    response = await client.post("/runs/train", json=body)
    assert response.status_code == 202, response.text
    return codec.decode(response.content, JobAccepted).id


async def trained_tokenizer(client: httpx.AsyncClient) -> str:
    """The id of a succeeded BPE tokenizer (vocab 300) trained on ``small.txt``."""
    response = await client.post("/tokenizers/train", json={"corpus_path": "small.txt", "vocab_size": 300})
    assert response.status_code == 202, response.text
    tokenizer_id = codec.decode(response.content, JobAccepted).id

    async def fetch() -> TokenizerJob:
        return codec.decode((await client.get(f"/tokenizers/{tokenizer_id}")).content, TokenizerJob)

    job = await wait_for(fetch, lambda j: j.status in TERMINAL, 120)
    assert job.status == "succeeded", job.error
    return tokenizer_id


def worker_env(settings: WorkerServiceSettings, **extra: str) -> dict[str, str]:
    """The environment of a worker process on ``settings``' Redis, roots and storage, with fast heartbeats."""
    return {
        **os.environ,
        "REDIS__URL": settings.redis.url,
        "APP__ARTIFACTS_ROOT": settings.app.artifacts_root,
        "APP__RUNS_ROOT": settings.app.runs_root,
        "APP__CORPUS_ROOT": settings.app.corpus_root,
        "WORKER__HEARTBEAT_INTERVAL": "0.5",
        "WORKER__PROGRESS_INTERVAL": "0.2",
        "WORKER__NICENESS": "0",
        **storage_env(settings.storage),
        **extra,
    }
