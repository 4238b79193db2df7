"""Model families and ``init_from`` through the real stack (the app's test client, real arq workers, the real
training, evaluation and inference subprocesses) at toy scale: a Llama-style run trains, evaluates, generates
and exports, its export loads in plain ``transformers`` with our model's logits, and a new run starts from its
weights on a second corpus, naming its parent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, pipeline

from mt_api.app import create_app
from mt_contracts import codec
from mt_contracts.families import count_parameters
from mt_contracts.generation import ExportResponse, GenerateResponse
from mt_contracts.jobs import EvalJob, JobAccepted, RunPage, RunSeries
from mt_contracts.manifests import ModelManifest, ParentRun
from mt_contracts.settings import ApiSettings, WorkerServiceSettings
from mt_storage.files import sha256_file
from mt_trainer_worker.training.models import build_model
from tests.helpers import running_workers, wait_for
from tests.integration.jobs import TERMINAL, finished_run, submit_run, trained_tokenizer

# One Llama block with grouped-query attention (4 query heads share 2 key/value heads).
LLAMA: dict[str, object] = {
    "corpus_path": "small.txt",
    "model": "llama",
    "n_layer": 1,
    "n_head": 4,
    "n_embd": 32,
    "model_options": {"n_kv_head": 2, "intermediate_size": 64},
    "block_size": 32,
    "batch_size": 4,
    "max_steps": 20,
    "warmup_steps": 5,
    "eval_interval": 100,
    "eval_iters": 2,
    "checkpoint_interval": 10,
    "learning_rate": 3e-3,
    "device": "cpu",
}
CHECKPOINT_10 = "checkpoints/step-000000010.pt"


@pytest.fixture
async def client(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(api_settings), timeout=120) as client:
        yield client


async def _evaluated(client: AsyncTestClient[Litestar], run_id: str) -> EvalJob:
    response = await client.post(f"/runs/{run_id}/evaluate", json={})
    assert response.status_code == 202, response.text
    location = codec.decode(response.content, JobAccepted).location

    async def fetch() -> EvalJob:
        return codec.decode((await client.get(location)).content, EvalJob)

    job = await wait_for(fetch, lambda j: j.status in TERMINAL, 120)
    assert job.status == "succeeded", job.error
    return job


async def _run_count(client: AsyncTestClient[Litestar]) -> int:
    return len(codec.decode((await client.get("/runs?limit=100")).content, RunPage).items)


async def test_llama_trains_evaluates_generates_exports_and_a_run_starts_from_it(
    client: AsyncTestClient[Litestar],
    worker_settings: WorkerServiceSettings,
    api_settings: ApiSettings,
    shakespeare: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    corpus_root = Path(api_settings.app.corpus_root)
    # A second corpus: Tiny Shakespeare past the part small.txt holds.
    (corpus_root / "second.txt").write_text(shakespeare[60_000:90_000], encoding="utf-8")
    runs_root = Path(api_settings.app.runs_root)
    async with running_workers(worker_settings):
        tokenizer_id = await trained_tokenizer(client)
        parent = await finished_run(client, await submit_run(client, {**LLAMA, "tokenizer_id": tokenizer_id}))
        assert parent.status == "succeeded", parent.error
        evaluated = await _evaluated(client, parent.id)

        # Generation: the same seed gives the same samples.
        body = {"prompt": "ROMEO:", "max_new_tokens": 8, "seed": 7, "num_samples": 2}
        first = await client.post(f"/runs/{parent.id}/generate", json=body)
        assert first.status_code == 200, first.text
        again = await client.post(f"/runs/{parent.id}/generate", json=body)
        generated = codec.decode(first.content, GenerateResponse)
        assert codec.decode(again.content, GenerateResponse).samples == generated.samples
        assert (generated.step, len(generated.samples)) == (20, 2)
        assert all(0 < s.tokens <= 8 for s in generated.samples)
        response = await client.post(f"/runs/{parent.id}/export", json={"checkpoint": 10})
        assert response.status_code == 200, response.text
        exported = codec.decode(response.content, ExportResponse)

        # init_from refusals, before anything is queued.
        other_tokenizer = await trained_tokenizer(client)
        start = {**LLAMA, "tokenizer_id": tokenizer_id, "init_from": {"run_id": parent.id}}
        runs_before = await _run_count(client)
        refusals: list[tuple[dict[str, object], int, str, str]] = [
            ({"n_embd": 64}, 400, "n_embd", "has n_embd=32 and this run n_embd=64"),
            (
                {"model_options": {"intermediate_size": 64}},
                400,
                "model_options.n_kv_head",
                "has model_options.n_kv_head=2 and this run model_options.n_kv_head=4",
            ),
            ({"tokenizer_id": other_tokenizer}, 400, "tokenizer_id", f"trained with tokenizer {tokenizer_id}"),
            ({"model": "gpt2", "model_options": {}}, 400, "model", "is a 'llama' model"),
            ({"init_from": {"run_id": "run_01JDQ8ZQ0000000000000000AA"}}, 404, "init_from.run_id", "no run"),
            ({"init_from": {"run_id": parent.id, "checkpoint": 5}}, 404, "init_from.checkpoint", "kept steps: 10, 20"),
        ]
        for changes, status, field, message in refusals:
            response = await client.post("/runs/train", json={**start, **changes})
            assert response.status_code == status, (changes, response.text)
            assert response.json()["errors"][0]["field"] == field and message in response.text, response.text
        assert await _run_count(client) == runs_before

        # From the checkpoint at step 10, on the second corpus, with a longer context (rotary positions have no
        # weights) and a learning rate too small to move the weights: they stay the parent's.
        still = {"corpus_path": "second.txt", "block_size": 48, "max_steps": 1, "warmup_steps": 0}
        still |= {"learning_rate": 1e-9, "min_learning_rate": 0.0, "weight_decay": 0.0}
        still |= {"init_from": {"run_id": parent.id, "checkpoint": 10}}
        kept = await finished_run(client, await submit_run(client, {**start, **still}))
        # From the final weights, trained on further on the second corpus.
        continued_body = {**start, "corpus_path": "second.txt", "max_steps": 10}
        continued = await finished_run(client, await submit_run(client, continued_body))
    assert kept.status == "succeeded", kept.error
    assert continued.status == "succeeded", continued.error
    assert parent.artifact_dir is not None and parent.metrics is not None
    model_dir = Path(parent.artifact_dir)

    # The parameter count the API can give without torch is the trained model's.
    assert parent.metrics.n_params == count_parameters(parent.request, 300)
    assert evaluated.result is not None
    assert evaluated.result.loss == pytest.approx(parent.metrics.val_loss, abs=1e-5)

    # The final folder and the checkpoint's export load offline as Llama models and generate.
    for directory in (model_dir, Path(exported.directory)):
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
        assert isinstance(model, LlamaForCausalLM) and model.config.num_key_value_heads == 2
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        out = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")("ROMEO:", max_new_tokens=4)
        assert isinstance(out, list) and out[0]["generated_text"].startswith("ROMEO:")
    # The export gives the logits of our model with the checkpoint's weights.
    checkpoint = torch.load(runs_root / parent.id / CHECKPOINT_10, weights_only=True)
    ours = build_model(parent.request, vocab_size=300, end_of_text_id=0)
    ours.load_state_dict(checkpoint["model"])
    ours.train(False)
    theirs = AutoModelForCausalLM.from_pretrained(exported.directory, local_files_only=True)
    ids = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids).logits, ours(input_ids=ids).logits, rtol=0, atol=1e-6)

    # The runs started from the parent name it, with the digest of the file they loaded.
    parent_manifest = codec.decode((model_dir / "manifest.json").read_bytes(), ModelManifest)
    assert parent_manifest.parent is None and parent_manifest.dataset is not None
    kept_manifest = codec.decode((Path(kept.artifact_dir or "") / "manifest.json").read_bytes(), ModelManifest)
    assert kept_manifest.parent == ParentRun(
        run_id=parent.id,
        checkpoint=10,
        step=10,
        weights=CHECKPOINT_10,
        sha256=sha256_file(runs_root / parent.id / CHECKPOINT_10),
    )
    assert kept_manifest.dataset is not None
    assert kept_manifest.dataset.corpus_sha256 != parent_manifest.dataset.corpus_sha256
    saved = load_file(Path(kept.artifact_dir or "") / "model.safetensors")
    assert saved.keys() <= checkpoint["model"].keys()
    for name, tensor in saved.items():
        torch.testing.assert_close(tensor, checkpoint["model"][name], rtol=0, atol=1e-6)
    logs = (await client.get(f"/runs/{kept.id}/logs?tail=200")).json()["lines"]
    assert [line["fields"]["step"] for line in logs if line["event"] == "init_from"] == [10]

    continued_manifest = codec.decode(
        (Path(continued.artifact_dir or "") / "manifest.json").read_bytes(), ModelManifest
    )
    weights_entry = next(f for f in parent_manifest.files if f.path == "model.safetensors")
    assert continued_manifest.parent == ParentRun(
        run_id=parent.id, checkpoint=None, step=20, weights="model.safetensors", sha256=weights_entry.sha256
    )
    assert continued_manifest.request.init_from is not None
    assert continued.metrics is not None and continued.metrics.steps == 10
    # It starts from trained weights: its first training report is below the parent's first, from scratch.
    first_losses = [
        codec.decode((await client.get(f"/runs/{run_id}/metrics")).content, RunSeries).train[0].train_loss
        for run_id in (continued.id, parent.id)
    ]
    assert first_losses[0] < first_losses[1], first_losses
