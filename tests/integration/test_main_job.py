"""The main job end to end: the real Litestar app, real arq workers on a private Redis, the real training
subprocess, on a slice of Tiny Shakespeare."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import torch
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from transformers import AutoModelForCausalLM, AutoTokenizer

from mt_api.app import create_app
from mt_contracts import codec
from mt_contracts.jobs import JobAccepted, RunJob, TokenizerJob
from mt_contracts.manifests import ModelManifest, RunManifest, TokenizerManifest
from mt_contracts.settings import ApiSettings, WorkerServiceSettings
from mt_storage.files import sha256_file
from tests.helpers import running_workers, wait_for

TERMINAL = {"succeeded", "failed", "cancelled"}
VOCAB_SIZE = 512
RUN = {
    "corpus_path": "small.txt",
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "batch_size": 8,
    "max_steps": 120,
    "warmup_steps": 10,
    "eval_interval": 40,
    "eval_iters": 4,
    "learning_rate": 3e-3,
}


async def _tokenizer(client: AsyncTestClient[Litestar], job_id: str) -> TokenizerJob:
    return codec.decode((await client.get(f"/tokenizers/{job_id}")).content, TokenizerJob)


async def _run(client: AsyncTestClient[Litestar], job_id: str) -> RunJob:
    return codec.decode((await client.get(f"/runs/{job_id}")).content, RunJob)


async def test_tokenizer_and_gpt2_trained_through_the_api(
    api_settings: ApiSettings, worker_settings: WorkerServiceSettings, redis: Redis
) -> None:
    async with AsyncTestClient(app=create_app(api_settings)) as client, running_workers(worker_settings):
        # Ready at once (Redis and storage); the body reports each pool's live workers once they are up (no
        # webhook worker runs here, and its pool's absence does not make the API unready).
        ready = await wait_for(
            lambda: client.get("/readyz"),
            lambda r: [r.json()["workers"][pool]["live"] for pool in ("tokenizer", "trainer", "webhook")] == [1, 1, 0],
            timeout=15,
        )
        assert (ready.status_code, ready.json()["status"], ready.json()["reasons"]) == (200, "ok", [])

        # Tokenizer job: 202 with id and Location, then succeeded.
        response = await client.post("/tokenizers/train", json={"corpus_path": "small.txt", "vocab_size": VOCAB_SIZE})
        assert response.status_code == 202
        accepted = codec.decode(response.content, JobAccepted)
        assert accepted.id.startswith("tok_") and accepted.status == "queued"
        assert response.headers["location"] == accepted.location == f"/tokenizers/{accepted.id}"
        tokenizer = await wait_for(lambda: _tokenizer(client, accepted.id), lambda j: j.status in TERMINAL, 60)
        assert tokenizer.status == "succeeded", tokenizer.error
        assert tokenizer.result is not None and tokenizer.result.vocab_size == VOCAB_SIZE
        assert tokenizer.attempts == 1
        tokenizer_dir = Path(tokenizer.result.artifact_dir)
        manifest = codec.decode((tokenizer_dir / "manifest.json").read_bytes(), TokenizerManifest)
        assert [f.path for f in manifest.files] == [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ]
        assert all(sha256_file(tokenizer_dir / f.path) == f.sha256 for f in manifest.files)
        assert manifest.statistics.corpus.bytes == len((Path(api_settings.app.corpus_root) / "small.txt").read_bytes())

        # Training run: progress and heartbeat while running, metrics at the end.
        response = await client.post("/runs/train", json={**RUN, "tokenizer_id": tokenizer.id})
        assert response.status_code == 202, response.text
        run_id = codec.decode(response.content, JobAccepted).id
        running = await wait_for(
            lambda: _run(client, run_id), lambda j: j.progress is not None or j.status in TERMINAL, 120
        )
        assert running.heartbeat_at is not None
        run = await wait_for(lambda: _run(client, run_id), lambda j: j.status in TERMINAL, 300)

    assert run.status == "succeeded", run.error
    assert run.progress is not None and run.progress.step == run.progress.max_steps == 120
    metrics = run.metrics
    assert metrics is not None
    # The last validation is the final one, over the whole split, at the last step.
    assert run.last_eval is not None and (run.last_eval.step, run.last_eval.val_loss) == (120, metrics.val_loss)
    assert metrics.val_loss < math.log(VOCAB_SIZE)
    assert metrics.val_perplexity == math.exp(metrics.val_loss)
    assert math.isclose(
        metrics.val_bits_per_byte, metrics.val_loss * metrics.val_tokens / metrics.val_bytes / math.log(2), rel_tol=1e-9
    )
    # The validation split is the last 10% of lines, with every one of its tokens scored.
    corpus_lines = (Path(api_settings.app.corpus_root) / "small.txt").read_text().splitlines(keepends=True)
    held_out = corpus_lines[len(corpus_lines) - int(len(corpus_lines) * 0.1) :]
    assert metrics.val_bytes == len("".join(held_out).encode())

    # Artifacts: an HF checkpoint that transformers loads, a manifest with matching digests, the run manifest.
    assert run.artifact_dir is not None
    model_dir = Path(run.artifact_dir)
    model_manifest = codec.decode((model_dir / "manifest.json").read_bytes(), ModelManifest)
    assert model_manifest.metrics == metrics
    assert model_manifest.dataset is not None
    assert (model_manifest.dataset.val_bytes, model_manifest.dataset.val_tokens) == (
        metrics.val_bytes,
        metrics.val_tokens + 1,
    )
    assert model_manifest.total_steps == 120 and model_manifest.checkpoints[-1].step == 120
    assert model_manifest.timings is not None and model_manifest.timings.training > 0
    assert model_manifest.tokens_per_second > 0 and model_manifest.device == "cpu"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {f.path for f in model_manifest.files}
    assert all(sha256_file(model_dir / f.path) == f.sha256 for f in model_manifest.files)
    run_manifest = codec.decode((Path(api_settings.app.runs_root) / run_id / "manifest.json").read_bytes(), RunManifest)
    assert run_manifest.model_dir == str(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    hf_tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.vocab_size == VOCAB_SIZE and model.config.n_positions == 32
    ids = hf_tokenizer("ROMEO:", return_tensors="pt").input_ids
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape == (1, ids.shape[1], VOCAB_SIZE)

    # Each job's logs.jsonl holds that job's lines only.
    for path, job_id in ((model_dir / "logs.jsonl", run_id), (tokenizer_dir / "logs.jsonl", tokenizer.id)):
        lines = [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]
        assert lines and {line["job_id"] for line in lines} == {job_id}
        assert lines[-1]["event"] == "succeeded"


async def test_a_training_error_ends_the_run_failed_with_an_actionable_code(
    api_settings: ApiSettings, worker_settings: WorkerServiceSettings, redis: Redis
) -> None:
    corpus_root = Path(api_settings.app.corpus_root)
    (corpus_root / "tiny.txt").write_text("".join(f"line {i}\n" for i in range(40)))
    async with AsyncTestClient(app=create_app(api_settings)) as client, running_workers(worker_settings):
        response = await client.post("/tokenizers/train", json={"corpus_path": "small.txt", "vocab_size": 300})
        tokenizer_id = codec.decode(response.content, JobAccepted).id
        tokenizer = await wait_for(lambda: _tokenizer(client, tokenizer_id), lambda j: j.status in TERMINAL, 60)
        assert tokenizer.status == "succeeded"
        response = await client.post(
            "/runs/train", json={**RUN, "tokenizer_id": tokenizer_id, "corpus_path": "tiny.txt", "block_size": 256}
        )
        run_id = codec.decode(response.content, JobAccepted).id
        run = await wait_for(lambda: _run(client, run_id), lambda j: j.status in TERMINAL, 120)
    assert run.status == "failed"
    assert run.error is not None and run.error.code == "corpus_too_small"
    assert "block_size=256" in run.error.message
    assert not (Path(api_settings.app.artifacts_root) / "models" / run_id / "manifest.json").exists()
