"""Evaluation, generation and export through the real stack (the app's test client, real arq workers, the
real training and evaluation subprocesses, the app's inference process) at toy scale, for a BPE and a
SentencePiece tokenizer, on both storage backends (with the object store the API and the workers have roots of
their own); eval numbers are checked against plain ``transformers`` code."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import torch
import torch.nn.functional as F
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, pipeline

from mt_api.app import create_app
from mt_contracts import codec
from mt_contracts.generation import ExportResponse, GenerateResponse
from mt_contracts.jobs import EvalJob, EvalMetrics, JobAccepted, RunJob, TokenizerJob
from mt_contracts.manifests import ModelManifest
from mt_contracts.settings import ApiSettings, WorkerServiceSettings
from mt_storage.files import sha256_file
from tests.helpers import running_workers, wait_for
from tests.integration.backends import api_settings, storage, worker_settings

TERMINAL = {"succeeded", "failed", "cancelled"}
BLOCK_SIZE = 32
RUN = {
    "corpus_path": "small.txt",
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 32,
    "block_size": BLOCK_SIZE,
    "batch_size": 4,
    "max_steps": 30,
    "warmup_steps": 5,
    "eval_interval": 100,
    "eval_iters": 2,
    "checkpoint_interval": 10,
    "keep_checkpoints": 3,
    "learning_rate": 3e-3,
    "device": "cpu",
}
TOKENIZERS = {
    "bpe": {"corpus_path": "small.txt", "vocab_size": 300},
    "sentencepiece": {"corpus_path": "small.txt", "method": "sentencepiece", "vocab_size": 400},
}
__all__ = ["api_settings", "storage", "worker_settings"]  # both backends (tests.integration.backends)


@pytest.fixture
async def client(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(api_settings), timeout=120) as client:
        yield client


async def _finished_run(client: AsyncTestClient[Litestar], method: str) -> tuple[RunJob, int]:
    """A succeeded toy run on a ``method`` tokenizer; also returns the 409 status seen while it trained."""
    response = await client.post("/tokenizers/train", json=TOKENIZERS[method])
    tokenizer_id = codec.decode(response.content, JobAccepted).id

    async def tokenizer() -> TokenizerJob:
        return codec.decode((await client.get(f"/tokenizers/{tokenizer_id}")).content, TokenizerJob)

    assert (await wait_for(tokenizer, lambda j: j.status in TERMINAL, 60)).status == "succeeded"
    response = await client.post("/runs/train", json={**RUN, "tokenizer_id": tokenizer_id})
    run_id = codec.decode(response.content, JobAccepted).id
    unfinished = (await client.post(f"/runs/{run_id}/evaluate", json={})).status_code

    async def run() -> RunJob:
        return codec.decode((await client.get(f"/runs/{run_id}")).content, RunJob)

    job = await wait_for(run, lambda j: j.status in TERMINAL, 180)
    assert job.status == "succeeded", job.error
    return job, unfinished


async def _evaluate(client: AsyncTestClient[Litestar], run_id: str, body: dict[str, object]) -> EvalJob:
    response = await client.post(f"/runs/{run_id}/evaluate", json=body)
    assert response.status_code == 202, response.text
    accepted = codec.decode(response.content, JobAccepted)
    assert accepted.id.startswith("eval_") and response.headers["location"] == f"/runs/{run_id}/evals/{accepted.id}"

    async def fetch() -> EvalJob:
        return codec.decode((await client.get(accepted.location)).content, EvalJob)

    job = await wait_for(fetch, lambda j: j.status in TERMINAL, 120)
    assert job.status == "succeeded", job.error
    return job


def _independent_loss(model: PreTrainedModel, tokenizer_file: Path, text: str) -> tuple[float, int]:
    """Mean NLL (nats per token) of ``text`` after an end-of-text token, in non-overlapping windows of
    ``BLOCK_SIZE``, with plain transformers and torch; and the number of tokens scored."""
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    ids = [tokenizer.token_to_id("<|endoftext|>"), *tokenizer.encode(text, add_special_tokens=False).ids]
    tokens = torch.tensor(ids)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(tokens) - 1, BLOCK_SIZE):
            window = tokens[start : start + BLOCK_SIZE + 1]
            logits = model(input_ids=window[None, :-1]).logits[0]
            total += F.cross_entropy(logits.double(), window[1:], reduction="sum").item()
            count += len(window) - 1
    return total / count, count


def _held_out(corpus_root: Path) -> str:
    lines = (corpus_root / "small.txt").read_text().splitlines(keepends=True)
    return "".join(lines[len(lines) - int(len(lines) * 0.1) :])


def _loads_offline_and_generates(directory: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
    out = generator("ROMEO:", max_new_tokens=8, do_sample=False)
    assert isinstance(out, list) and out[0]["generated_text"].startswith("ROMEO:")


@pytest.mark.parametrize("method", ["bpe", "sentencepiece"])
async def test_evaluate_generate_and_export_a_run(
    method: str,
    client: AsyncTestClient[Litestar],
    worker_settings: WorkerServiceSettings,
    api_settings: ApiSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    corpus_root = Path(api_settings.app.corpus_root)
    (corpus_root / "other.txt").write_text("First Citizen:\nWe are accounted poor citizens.\n" * 20)
    async with running_workers(worker_settings):
        run, unfinished = await _finished_run(client, method)
        val = await _evaluate(client, run.id, {})
        corpus = await _evaluate(client, run.id, {"split": "corpus", "corpus_path": "other.txt"})
        partial = await _evaluate(client, run.id, {"split": "train", "checkpoint": 20, "max_tokens": 100})
    assert unfinished == 409
    assert run.artifact_dir is not None and run.metrics is not None
    model_dir = Path(run.artifact_dir)

    # Final weights on the validation split: the same numbers as plain transformers code.
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    metrics = val.result
    assert metrics is not None
    expected_loss, expected_tokens = _independent_loss(model, model_dir / "tokenizer.json", _held_out(corpus_root))
    assert (metrics.tokens, metrics.split, metrics.checkpoint, metrics.step) == (expected_tokens, "val", None, 30)
    assert metrics.loss == pytest.approx(expected_loss, abs=1e-5)
    assert metrics.bytes == len(_held_out(corpus_root).encode()) == run.metrics.val_bytes
    assert metrics.bits_per_byte == pytest.approx(metrics.loss * metrics.tokens / math.log(2) / metrics.bytes, rel=1e-9)
    assert metrics.perplexity == pytest.approx(math.exp(metrics.loss))
    assert metrics.loss == pytest.approx(run.metrics.val_loss, abs=1e-5)

    other = (corpus_root / "other.txt").read_text()
    assert corpus.result is not None
    other_loss, other_tokens = _independent_loss(model, model_dir / "tokenizer.json", other)
    assert (corpus.result.tokens, corpus.result.bytes) == (other_tokens, len(other.encode()))
    assert corpus.result.loss == pytest.approx(other_loss, abs=1e-5)

    assert partial.result is not None
    assert (partial.result.tokens, partial.result.step, partial.result.checkpoint) == (100, 20, 20)

    # Result files: one per evaluation, metrics.json the latest; the API lists them newest first.
    eval_dir = model_dir / "eval"
    assert codec.decode((eval_dir / f"{val.id}.json").read_bytes(), EvalMetrics) == metrics
    assert codec.decode((eval_dir / "metrics.json").read_bytes(), EvalMetrics) == partial.result
    listed = msgspec.json.decode((await client.get(f"/runs/{run.id}/evals")).content, type=list[EvalJob])
    assert [job.id for job in listed] == [partial.id, corpus.id, val.id]
    assert codec.decode((await client.get(f"/runs/{run.id}/eval")).content, EvalJob) == partial

    # Generation: deterministic by seed, prompt excluded, bounded, from a checkpoint too.
    body = {"prompt": "ROMEO:", "max_new_tokens": 12, "seed": 7, "num_samples": 3, "top_k": 50, "top_p": 0.9}
    first = await client.post(f"/runs/{run.id}/generate", json=body)
    assert first.status_code == 200, first.text
    again = await client.post(f"/runs/{run.id}/generate", json=body)
    generated = codec.decode(first.content, GenerateResponse)
    assert codec.decode(again.content, GenerateResponse).samples == generated.samples
    assert (generated.seed, generated.step, len(generated.samples)) == (7, 30, 3)
    assert all(0 < s.tokens <= 12 and (s.tokens == 12) == (s.finish_reason == "length") for s in generated.samples)
    response = await client.post(f"/runs/{run.id}/generate", json={"max_new_tokens": 5, "checkpoint": 20, "seed": 1})
    empty_prompt = codec.decode(response.content, GenerateResponse)
    assert (empty_prompt.prompt_tokens, empty_prompt.checkpoint, empty_prompt.step) == (1, 20, 20)
    greedy = {"prompt": "ROMEO:", "max_new_tokens": 6, "temperature": 0}
    text = codec.decode((await client.post(f"/runs/{run.id}/generate", json=greedy)).content, GenerateResponse)
    hf_tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt_ids = hf_tokenizer("ROMEO:", return_tensors="pt").input_ids
    with torch.no_grad():
        reference = model.generate(prompt_ids, max_new_tokens=6, do_sample=False, eos_token_id=0, pad_token_id=0)
    new_ids = [int(t) for t in reference[0, prompt_ids.shape[1] :] if int(t) != 0]
    assert text.samples[0].tokens == len(new_ids)

    # Export: the final model folder and a checkpoint's export load offline and generate; digests agree.
    final = codec.decode((await client.post(f"/runs/{run.id}/export", json={})).content, ExportResponse)
    manifest = codec.decode((model_dir / "manifest.json").read_bytes(), ModelManifest)
    api_model_dir = Path(api_settings.app.artifacts_root).resolve() / "models" / run.id
    assert (final.directory, final.files) == (str(api_model_dir), manifest.files)
    assert all(sha256_file(api_model_dir / f.path) == f.sha256 for f in manifest.files)
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= {
        f.path for f in manifest.files
    }
    assert all(sha256_file(model_dir / f.path) == f.sha256 for f in manifest.files)
    _loads_offline_and_generates(api_model_dir)
    response = await client.post(f"/runs/{run.id}/export", json={"checkpoint": 20})
    assert response.status_code == 200, response.text
    exported = codec.decode(response.content, ExportResponse)
    export_dir = Path(exported.directory)
    assert export_dir == api_model_dir / "export" / "step-20" and (export_dir / "manifest.json").is_file()
    assert all(sha256_file(export_dir / f.path) == f.sha256 for f in exported.files)
    checkpoint = torch.load(Path(worker_settings.app.runs_root) / run.id / "checkpoints" / "step-000000020.pt")
    saved = load_file(export_dir / "model.safetensors")
    assert all(torch.equal(saved[name], checkpoint["model"][name]) for name in saved)
    _loads_offline_and_generates(export_dir)


async def test_evaluation_and_generation_errors_name_the_problem(
    client: AsyncTestClient[Litestar], worker_settings: WorkerServiceSettings
) -> None:
    unknown = "run_01JDQ8ZQ0000000000000000AA"
    assert (await client.post(f"/runs/{unknown}/evaluate", json={})).status_code == 404
    assert (await client.post(f"/runs/{unknown}/generate", json={})).status_code == 404
    assert (await client.get(f"/runs/{unknown}/eval")).status_code == 404
    async with running_workers(worker_settings):
        run, _ = await _finished_run(client, "bpe")
    cases: list[tuple[str, dict[str, object], int, str]] = [
        ("evaluate", {"split": "corpus"}, 400, "corpus_path"),
        ("evaluate", {"corpus_path": "small.txt"}, 400, "corpus_path"),
        ("evaluate", {"split": "corpus", "corpus_path": "../etc/passwd"}, 400, "corpus_path"),
        ("evaluate", {"split": "test"}, 400, "split"),
        ("evaluate", {"checkpoint": 5}, 404, "checkpoint"),
        ("generate", {"max_new_tokens": 1025}, 400, "max_new_tokens"),
        ("generate", {"num_samples": 17}, 400, "num_samples"),
        ("generate", {"top_p": 0}, 400, "top_p"),
        ("generate", {"checkpoint": 5}, 404, "checkpoint"),
        ("export", {"checkpoint": 5}, 404, "checkpoint"),
    ]
    for action, body, status, field in cases:
        response = await client.post(f"/runs/{run.id}/{action}", json=body)
        assert (response.status_code, response.json()["errors"][0]["field"]) == (status, field), (action, body)
    assert (await client.get(f"/runs/{run.id}/eval")).status_code == 404
