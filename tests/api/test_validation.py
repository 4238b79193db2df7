"""Bad input answers 4xx naming the field, and nothing is enqueued or written."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from mt_api.app import create_app
from mt_contracts.settings import ApiSettings

GOOD_RUN = {"tokenizer_id": "tok_01JDQ8ZQ0000000000000000AA", "corpus_path": "small.txt"}
UNKNOWN_RUN = "run_01JDQ8ZQ0000000000000000AA"


@pytest.fixture
async def client(api_settings: ApiSettings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(api_settings)) as client:
        yield client


async def assert_nothing_written(redis: Redis, api_settings: ApiSettings) -> None:
    assert await redis.keys("*") == []
    assert not Path(api_settings.app.artifacts_root).exists()


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"corpus_path": "small.txt", "vocab_size": 4}, "vocab_size", ">= 8"),
        ({"corpus_path": "small.txt", "vocab_size": 2_000_000}, "vocab_size", "<= 1000000"),
        ({"corpus_path": "small.txt", "vocab_size": 258}, "vocab_size", "at least 259"),
        ({"corpus_path": "small.txt", "method": "sentencepiece", "vocab_size": 259}, "vocab_size", "at least 260"),
        (
            {"corpus_path": "small.txt", "method": "sentencepiece", "byte_fallback": False, "vocab_size": 3},
            "vocab_size",
            ">= 8",
        ),
        ({"corpus_path": "small.txt", "model_type": "unigram"}, "model_type", "applies to method 'sentencepiece' only"),
        (
            {"corpus_path": "small.txt", "method": "sentencepiece", "min_frequency": 3},
            "min_frequency",
            "applies to method 'bpe' only",
        ),
        (
            {"corpus_path": "small.txt", "method": "rustbpe", "min_frequency": 3},
            "min_frequency",
            "applies to method 'bpe' only",
        ),
        (
            {"corpus_path": "small.txt", "method": "rustbpe", "byte_fallback": True},
            "byte_fallback",
            "applies to method 'sentencepiece' only",
        ),
        ({"corpus_path": "small.txt", "method": "rustbpe", "vocab_size": 258}, "vocab_size", "at least 259"),
        ({"corpus_path": "small.txt", "method": "sentencepiece", "model_type": "char"}, "model_type", "Invalid enum"),
        ({"corpus_path": "small.txt", "encoding_errors": "ignore"}, "encoding_errors", "Invalid enum value"),
        ({"corpus_path": "small.txt", "holdout_fraction": 0.9}, "holdout_fraction", "<= 0.5"),
        ({"corpus_path": "small.txt", "text_field": ""}, "text_field", "length >= 1"),
        ({"corpus_path": "small.txt", "vocab_sise": 1000}, "vocab_sise", "unknown field"),
        ({"corpus_path": "small.txt", "special_tokens": ["<a>", "<a>"]}, "special_tokens", "unique"),
        ({"corpus_path": "small.txt", "special_tokens": ["  "]}, "special_tokens", "empty or whitespace"),
        (
            {"corpus_path": "small.txt", "method": "sentencepiece", "special_tokens": ["<unk>"]},
            "special_tokens",
            "'<unk>' is a piece SentencePiece reserves",
        ),
        (
            {"corpus_path": "small.txt", "method": "sentencepiece", "special_tokens": ["<0x41>"]},
            "special_tokens",
            "'<0x41>' is a piece SentencePiece reserves",
        ),
        ({"corpus_path": "small.txt", "max_token_length": 1}, "max_token_length", ">= 2"),
        ({"corpus_path": "small.txt", "method": "wordpiece"}, "method", "Invalid enum value"),
        (
            {"corpus_path": "small.txt", "method": "sentencepiece", "max_sentence_length": 4},
            "max_sentence_length",
            ">= 16",
        ),
        ({"corpus_path": "../etc/passwd"}, "corpus_path", "may not contain '..'"),
        ({"corpus_path": "/etc/passwd"}, "corpus_path", "relative path"),
        ({"corpus_path": "nope.txt"}, "corpus_path", "does not exist"),
        ({}, "corpus_path", "missing required field"),
    ],
)
async def test_bad_tokenizer_requests_are_refused(
    client: AsyncTestClient[Litestar],
    redis: Redis,
    api_settings: ApiSettings,
    body: dict[str, object],
    field: str,
    message: str,
) -> None:
    response = await client.post("/tokenizers/train", json=body)
    assert response.status_code == 400, response.text
    text = response.text
    assert field in text and message in text, text
    await assert_nothing_written(redis, api_settings)


async def test_symlink_out_of_the_corpus_root_is_refused(
    client: AsyncTestClient[Litestar], redis: Redis, api_settings: ApiSettings, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", Path(api_settings.app.corpus_root) / "escape.txt")
    response = await client.post("/tokenizers/train", json={"corpus_path": "escape.txt"})
    assert response.status_code == 400
    assert "outside the corpus root" in response.text
    assert str(tmp_path) not in response.text
    await assert_nothing_written(redis, api_settings)


@pytest.mark.parametrize(
    ("changes", "status", "field", "message"),
    [
        ({"n_embd": 130, "n_head": 4}, 400, "n_embd", "divisible by n_head"),
        ({"warmup_steps": 50, "max_steps": 10}, 400, "warmup_steps", "exceeds the run"),
        ({"min_learning_rate": 0.1, "learning_rate": 0.01}, 400, "min_learning_rate", "exceeds learning_rate"),
        ({"block_size": 4}, 400, "block_size", ">= 8"),
        ({"tokenizer_id": "tok_bad"}, 400, "tokenizer_id", "matching regex"),
        ({"learning_rate": 0}, 400, "learning_rate", "> 0.0"),
        ({"batch_size": "many"}, 400, "batch_size", "Expected `int`"),
        ({"nproc_per_node": 2}, 400, "nproc_per_node", "needs launcher torchrun"),
        ({"launcher": "local", "nnodes": 2}, 400, "nnodes", "launcher local runs one process"),
        ({"launcher": "mpirun"}, 400, "launcher", "Invalid enum value 'mpirun'"),
        ({}, 404, "tokenizer_id", "no tokenizer tok_01JDQ8ZQ0000000000000000AA"),
        ({"model": "mamba"}, 400, "model", "Invalid enum value 'mamba'"),
        ({"n_kv_head": 2}, 400, "n_kv_head", "unknown field; remove it"),
        (
            {"model_options": {"n_kv_head": 2}},
            400,
            "model_options.n_kv_head",
            "model 'gpt2' takes no option n_kv_head; its options are: (none); remove it or send model='llama'",
        ),
        (
            {"model": "llama", "n_head": 4, "model_options": {"n_kv_head": 3}},
            400,
            "model_options.n_kv_head",
            "n_head=4 must be divisible by n_kv_head",
        ),
        ({"model": "llama", "n_head": 4, "n_embd": 130}, 400, "n_embd", "n_embd=130 must be divisible by n_head=4"),
        ({"model": "llama", "n_head": 4, "n_embd": 20}, 400, "n_embd", "n_embd/n_head=5 must be even for rotary"),
        ({"model": "llama", "model_options": {"intermediate_size": 4}}, 400, "model_options.intermediate_size", ">= 8"),
        ({"model_options": {"n_kv_head": None}}, 400, "model_options.n_kv_head", "got `null`"),
        ({"model_options": [2]}, 400, "model_options", "Expected `object`, got `array`"),
        ({"init_from": {"run_id": "run_bad"}}, 400, "init_from.run_id", "matching regex"),
        ({"init_from": {"run_id": UNKNOWN_RUN, "step": 3}}, 400, "init_from", "unknown field `step`"),
        ({"init_from": {"run_id": UNKNOWN_RUN, "checkpoint": -1}}, 400, "init_from.checkpoint", ">= 0"),
    ],
)
async def test_bad_run_requests_are_refused(
    client: AsyncTestClient[Litestar],
    redis: Redis,
    api_settings: ApiSettings,
    changes: dict[str, object],
    status: int,
    field: str,
    message: str,
) -> None:
    response = await client.post("/runs/train", json={**GOOD_RUN, **changes})
    assert response.status_code == status, response.text
    assert field in response.text and message in response.text, response.text
    await assert_nothing_written(redis, api_settings)


async def test_every_bad_model_option_is_one_error_naming_it(
    client: AsyncTestClient[Litestar], redis: Redis, api_settings: ApiSettings
) -> None:
    options = {"n_kv_heads": 2, "n_kv_head": "2", "intermediate_size": 70_000}
    response = await client.post("/runs/train", json={**GOOD_RUN, "model": "llama", "model_options": options})
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == [
        {
            "field": "model_options.n_kv_heads",
            "message": "model 'llama' takes no option n_kv_heads; its options are: n_kv_head, intermediate_size; "
            "did you mean 'n_kv_head'?",
            "source": "body",
        },
        {
            "field": "model_options.n_kv_head",
            "message": "Expected `int`, got `str`: send an integer as JSON, not a string",
            "source": "body",
        },
        {"field": "model_options.intermediate_size", "message": "Expected `int` <= 65536", "source": "body"},
    ]
    # Values no option takes (null, arrays, objects) are refused when the body is read, each by its name too.
    options = {"n_kv_head": None, "intermediate_size": [64]}
    response = await client.post("/runs/train", json={**GOOD_RUN, "model": "llama", "model_options": options})
    assert response.status_code == 400, response.text
    wanted = (
        "Expected `bool | int | float | str`, got `{}`: send a value of type bool | int | float | str as JSON, not {}"
    )
    assert response.json()["errors"] == [
        {"field": "model_options.n_kv_head", "message": wanted.format("null", "null"), "source": "body"},
        {"field": "model_options.intermediate_size", "message": wanted.format("array", "an array"), "source": "body"},
    ]
    await assert_nothing_written(redis, api_settings)


@pytest.mark.parametrize(
    "path",
    ["/tokenizers/tok_01JDQ8ZQ0000000000000000AA", "/tokenizers/not-an-id", "/runs/run_01JDQ8ZQ0000000000000000AA"],
)
async def test_unknown_ids_answer_404(client: AsyncTestClient[Litestar], path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["detail"].startswith("no ")


async def test_health_and_readiness_without_workers(client: AsyncTestClient[Litestar]) -> None:
    # Readiness is the API's own (Redis, storage): no worker pool is alive, and the API still serves.
    assert (await client.get("/healthz")).json() == {"status": "ok", "reasons": []}
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "reasons": [],
        "workers": {
            "tokenizer": {"queue": "mt:queue:tokenizer", "live": 0},
            "trainer": {"queue": "mt:queue:training", "live": 0},
            "webhook": {"queue": "mt:queue:webhooks", "live": 0},
        },
    }


async def test_openapi_schema_lists_the_routes(client: AsyncTestClient[Litestar]) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert {
        "/tokenizers",
        "/tokenizers/train",
        "/tokenizers/{tokenizer_id}",
        "/tokenizers/{tokenizer_id}/encode",
        "/tokenizers/{tokenizer_id}/cancel",
        "/runs/train",
        "/runs/{run_id}",
    } <= set(schema["paths"])
    request = schema["components"]["schemas"]["TrainTokenizerRequest"]
    assert request["properties"]["method"]["enum"] == ["bpe", "rustbpe", "sentencepiece"]
    assert request["required"] == ["corpus_path"]
    sentencepiece = schema["components"]["schemas"]["SentencePieceTokenizerRequest"]
    model_type, _ = sentencepiece["properties"]["model_type"]["anyOf"]
    assert model_type == {"description": "sentencepiece only; default unigram.", "enum": ["bpe", "unigram"]}
    rust = schema["components"]["schemas"]["RustBpeTokenizerRequest"]["properties"]
    assert rust["method"] == {"enum": ["rustbpe"]}
    assert rust["min_frequency"]["type"] == rust["model_type"]["type"] == "null"


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=101", "limit"), ("status=done", "status"), ("cursor=x", "cursor")],
)
async def test_bad_list_queries_are_refused(client: AsyncTestClient[Litestar], query: str, field: str) -> None:
    response = await client.get(f"/tokenizers?{query}")
    assert response.status_code == 400, response.text
    assert field in response.text


async def test_encode_needs_a_succeeded_tokenizer(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post("/tokenizers/tok_01JDQ8ZQ0000000000000000AA/encode", json={"text": "x"})
    assert response.status_code == 404
    response = await client.post("/tokenizers/tok_01JDQ8ZQ0000000000000000AA/encode", json={"txt": "x"})
    assert response.status_code == 400 and "txt" in response.text
