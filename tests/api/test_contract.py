"""The request contract: strict types (no coercion anywhere), JSON bodies only, every problem listed in one
answer, and an OpenAPI document that says all of it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from mt_api.app import create_app
from mt_api.openapi import EVENT_ID_PATTERN, STATIC_DIR
from mt_contracts.events import is_event_id
from mt_contracts.families import FAMILIES, OPTION_OWNERS, OPTIONS
from mt_contracts.requests import (
    EncodeRequest,
    EvaluateRequest,
    ExportRequest,
    GenerateRequest,
    ResumeRunRequest,
    TrainRunRequest,
    TrainTokenizerRequest,
)
from mt_contracts.settings import ApiSettings

TOK = "tok_01JDQ8ZQ0000000000000000AA"
RUN = "run_01JDQ8ZQ0000000000000000AA"
ROUTES: list[tuple[str, type[msgspec.Struct], dict[str, object]]] = [
    ("/tokenizers/train", TrainTokenizerRequest, {"corpus_path": "small.txt"}),
    (f"/tokenizers/{TOK}/encode", EncodeRequest, {"text": "x"}),
    ("/runs/train", TrainRunRequest, {"tokenizer_id": TOK, "corpus_path": "small.txt"}),
    (f"/runs/{RUN}/resume", ResumeRunRequest, {}),
    (f"/runs/{RUN}/evaluate", EvaluateRequest, {}),
    (f"/runs/{RUN}/generate", GenerateRequest, {}),
    (f"/runs/{RUN}/export", ExportRequest, {}),
]


@pytest.fixture
async def client(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(api_settings)) as client:
        yield client


async def assert_nothing_written(redis: Redis, api_settings: ApiSettings) -> None:
    assert await redis.keys("*") == []
    assert not Path(api_settings.app.artifacts_root).exists()


def _wrong_values(kind: msgspec.inspect.Type) -> list[object]:
    """JSON values of the wrong type for a field of ``kind``, each one a lax decoder would coerce or accept."""
    match kind:
        case msgspec.inspect.Metadata(type=inner):
            return _wrong_values(inner)
        case msgspec.inspect.UnionType(types=types):
            # Only ``X | None`` here: the wrong values of X (null is right).
            return [value for member in types for value in _wrong_values(member)]
        case msgspec.inspect.BoolType():
            return [1, "true"]
        case msgspec.inspect.IntType():
            return ["8", 8.5, 8.0, True]
        case msgspec.inspect.FloatType():
            return ["0.5", True]
        case msgspec.inspect.StrType() | msgspec.inspect.LiteralType():
            return [1, True, ["x"]]
        case msgspec.inspect.ListType() | msgspec.inspect.TupleType():
            return ["x", {"0": "x"}]
        case msgspec.inspect.StructType() | msgspec.inspect.DictType():
            return ["x", ["x"], 1]
        case msgspec.inspect.NoneType():
            return []
    raise AssertionError(f"no wrong values for {kind}")


def _wrong_fields(struct_type: type[msgspec.Struct]) -> list[tuple[str, object]]:
    """Every field of ``struct_type`` with each of its wrong values."""
    info = msgspec.inspect.type_info(struct_type)
    assert isinstance(info, msgspec.inspect.StructType)
    return [(field.encode_name, value) for field in info.fields for value in _wrong_values(field.type)]


@pytest.mark.parametrize(("url", "struct_type", "good"), ROUTES, ids=[route[1].__name__ for route in ROUTES])
async def test_every_request_field_refuses_a_wrong_type(
    client: AsyncTestClient[Litestar],
    redis: Redis,
    api_settings: ApiSettings,
    url: str,
    struct_type: type[msgspec.Struct],
    good: dict[str, object],
) -> None:
    cases = _wrong_fields(struct_type)
    assert {field for field, _ in cases} == set(struct_type.__struct_fields__)
    answers = []
    for field, value in cases:
        response = await client.post(url, json={**good, field: value})
        errors = response.json().get("errors") or [{}]
        typed = str(errors[0].get("message", "")).startswith("Expected `")
        answers.append((field, value, response.status_code, errors[0].get("field"), len(errors), typed))
    assert [answer for answer in answers if answer[2:] != (400, answer[0], 1, True)] == []
    await assert_nothing_written(redis, api_settings)


async def test_every_missing_unknown_and_invalid_field_is_listed_at_once(
    client: AsyncTestClient[Litestar], redis: Redis, api_settings: ApiSettings
) -> None:
    response = await client.post(
        "/runs/train",
        json={"n_layer": "4", "betas": [0.9, 2], "lerning_rate": 0.1, "special": 1},
    )
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"] == "urn:model-trainer:problem:validation"
    assert problem["detail"] == "the request body is not valid: 6 problems, see errors"
    assert problem["errors"] == [
        {
            "field": "n_layer",
            "message": "Expected `int`, got `str`: send an integer as JSON, not a string",
            "source": "body",
        },
        {"field": "betas[1]", "message": "Expected `float` < 1.0", "source": "body"},
        {
            "field": "lerning_rate",
            "message": "unknown field; remove it (did you mean 'learning_rate'?)",
            "source": "body",
        },
        {"field": "special", "message": _unknown_message(TrainRunRequest), "source": "body"},
        {"field": "tokenizer_id", "message": "missing required field", "source": "body"},
        {"field": "corpus_path", "message": "missing required field", "source": "body"},
    ]
    await assert_nothing_written(redis, api_settings)


def _unknown_message(struct_type: type[msgspec.Struct]) -> str:
    return f"unknown field; remove it (the fields are {', '.join(struct_type.__struct_fields__)})"


async def test_an_empty_run_request_names_both_required_fields(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post("/runs/train", json={})
    assert [error["field"] for error in response.json()["errors"]] == ["tokenizer_id", "corpus_path"]


async def test_checks_across_fields_are_listed_together(
    client: AsyncTestClient[Litestar], redis: Redis, api_settings: ApiSettings
) -> None:
    response = await client.post(
        "/tokenizers/train",
        json={
            "corpus_path": "missing.txt",
            "model_type": "bpe",
            "normalization": "nfkc",
            "special_tokens": ["<a>", " ", "<a>"],
            "vocab_size": 100,
        },
    )
    assert response.status_code == 400
    assert [(error["field"], error["message"]) for error in response.json()["errors"]] == [
        ("model_type", "model_type applies to method 'sentencepiece' only; remove it or send method='sentencepiece'"),
        (
            "normalization",
            "normalization applies to method 'sentencepiece' only; remove it or send method='sentencepiece'",
        ),
        ("special_tokens[1]", "special tokens may not be empty or whitespace"),
        ("special_tokens[2]", "special tokens must be unique; remove the duplicate '<a>'"),
        ("vocab_size", "vocab_size must be at least 261: 256 byte symbols, 4 special token(s) and one merge"),
        (
            "corpus_path",
            "corpus_path 'missing.txt' does not exist in the corpus root (APP__CORPUS_ROOT); it holds: small.txt",
        ),
    ]
    await assert_nothing_written(redis, api_settings)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "the body must be a JSON object, not an array"),
        (b'"text"', "the body must be a JSON object, not a string"),
        (b'{"corpus_path": ', "the body is not valid JSON (Input data was truncated); send a JSON object"),
        (b"", "the body is not valid JSON (the body is empty); send a JSON object"),
        (b"[]x", "the body is not valid JSON (JSON is malformed: trailing characters (byte 3)); send a JSON object"),
    ],
)
async def test_a_body_that_is_no_object_is_refused(
    client: AsyncTestClient[Litestar], redis: Redis, api_settings: ApiSettings, body: bytes, message: str
) -> None:
    response = await client.post("/tokenizers/train", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "", "message": message, "source": "body"}]
    await assert_nothing_written(redis, api_settings)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/json; charset=latin-1",
    ],
)
async def test_a_body_that_is_not_json_is_415_and_nothing_is_queued(
    client: AsyncTestClient[Litestar], redis: Redis, api_settings: ApiSettings, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/tokenizers/train", content=b'{"corpus_path": "small.txt"}', headers=headers)
    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:model-trainer:problem:unsupported-media-type"
    assert "Content-Type: application/json" in problem["detail"]
    await assert_nothing_written(redis, api_settings)


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
async def test_json_with_or_without_charset_is_accepted(client: AsyncTestClient[Litestar], content_type: str) -> None:
    response = await client.post(
        "/tokenizers/train", content=b'{"corpus_path": "small.txt"}', headers={"content-type": content_type}
    )
    assert response.status_code == 202, response.text


async def test_a_request_with_no_required_field_takes_an_empty_body(client: AsyncTestClient[Litestar]) -> None:
    # Decoded as {}: the run is unknown, so 404 (not 400 or 415).
    response = await client.post(f"/runs/{RUN}/export")
    assert response.status_code == 404, response.text
    assert response.json()["detail"] == f"no run {RUN}"


async def test_no_cors_headers_by_default(client: AsyncTestClient[Litestar]) -> None:
    preflight = await client.options(
        "/tokenizers/train",
        headers={"origin": "https://elsewhere.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    response = await client.get("/tokenizers", headers={"origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_cors_allow_list_admits_only_its_origins(api_settings: ApiSettings, redis: Redis) -> None:
    settings = msgspec.structs.replace(
        api_settings, api=msgspec.structs.replace(api_settings.api, cors_origins="https://ui.example")
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        allowed = await client.options(
            "/tokenizers/train",
            headers={"origin": "https://ui.example", "access-control-request-method": "POST"},
        )
        assert allowed.headers["access-control-allow-origin"] == "https://ui.example"
        other = await client.get("/tokenizers", headers={"origin": "https://elsewhere.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_the_document_declares_bodies_errors_and_unions(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    paths, schemas = document["paths"], document["components"]["schemas"]
    train = paths["/tokenizers/train"]["post"]
    body = train["requestBody"]["content"]["application/json"]["schema"]
    assert body == {
        "oneOf": [
            {"$ref": "#/components/schemas/BpeTokenizerRequest"},
            {"$ref": "#/components/schemas/SentencePieceTokenizerRequest"},
            {"$ref": "#/components/schemas/RustBpeTokenizerRequest"},
        ],
        "discriminator": {
            "propertyName": "method",
            "mapping": {
                "bpe": "#/components/schemas/BpeTokenizerRequest",
                "sentencepiece": "#/components/schemas/SentencePieceTokenizerRequest",
                "rustbpe": "#/components/schemas/RustBpeTokenizerRequest",
            },
        },
    }
    bpe, sentencepiece = schemas["BpeTokenizerRequest"], schemas["SentencePieceTokenizerRequest"]
    assert bpe["additionalProperties"] is False and sentencepiece["additionalProperties"] is False
    assert bpe["properties"]["model_type"] == {"type": "null", "description": "Not with method bpe: absent or null."}
    assert sentencepiece["properties"]["min_frequency"]["type"] == "null"
    assert bpe["properties"]["min_frequency"]["anyOf"][0]["type"] == "integer"
    assert sentencepiece["properties"]["model_type"]["anyOf"][0]["enum"] == ["bpe", "unigram"]
    assert bpe["required"] == ["corpus_path"] and sentencepiece["required"] == ["corpus_path", "method"]
    run_body = paths["/runs/train"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert run_body["oneOf"] == [
        {"$ref": "#/components/schemas/Gpt2RunRequest"},
        {"$ref": "#/components/schemas/LlamaRunRequest"},
    ]
    assert run_body["discriminator"]["propertyName"] == "model"
    gpt2, llama = schemas["Gpt2RunRequest"], schemas["LlamaRunRequest"]
    # Each family's model_options is its options Struct: exactly its options, never null, nothing else.
    for name, family in FAMILIES.items():
        variant = schemas[f"{name.capitalize()}RunRequest"]
        options = variant["properties"]["model_options"]
        assert options["$ref"] == f"#/components/schemas/{family.options_type.__name__}"
        component = schemas[family.options_type.__name__]
        assert list(component["properties"]) == list(OPTIONS[name]), name
        assert component["additionalProperties"] is False and component["required"] == []
        assert set(variant["properties"]) & set(OPTION_OWNERS) == set(), name
    assert schemas["Gpt2Options"]["properties"] == {}
    assert schemas["LlamaOptions"]["properties"]["n_kv_head"] == {
        "type": "integer", "minimum": 1, "maximum": 64,
        "description": "Key/value heads (grouped-query attention); default n_head.",
    }  # fmt: skip
    assert gpt2["properties"]["model_options"]["default"] == llama["properties"]["model_options"]["default"] == {}
    assert gpt2["required"] == ["tokenizer_id", "corpus_path"] and llama["required"][-1] == "model"
    assert gpt2["properties"]["init_from"] == llama["properties"]["init_from"]
    for name in ("TrainRunRequest", "EncodeRequest", "ResumeRunRequest", "GenerateRequest", "ExportRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    assert set(train["responses"]) == {"200", "202", "400", "401", "403", "413", "415", "503"}
    assert train["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TokenizerEstimate"
    }
    assert train["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobAccepted"
    }
    upload = paths["/corpora/{name}"]["put"]
    assert set(upload["responses"]) >= {"200", "201", "400", "409", "412", "413"}
    assert set(upload["requestBody"]["content"]) == {"application/octet-stream"}
    assert train["responses"]["400"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    download = paths["/artifacts/{kind}/{item_id}/download"]["get"]["responses"]
    assert {"200", "206", "404", "416"} <= set(download)
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}
    stream = paths["/runs/{run_id}/logs/stream"]["get"]["parameters"]
    assert {"name": "access_token", "in": "query"}.items() <= next(
        p for p in stream if p["name"] == "access_token"
    ).items()
    cursor = next(p for p in paths["/runs"]["get"]["parameters"] if p["name"] == "cursor")
    assert re.fullmatch(cursor["schema"]["pattern"].strip("^$"), RUN)


@pytest.mark.parametrize("value", ["1-0", "1796141181840-12", "9" * 19 + "-" + "9" * 19, "1-", "-1", "9" * 20 + "-0"])
def test_the_documented_event_id_pattern_is_what_the_api_accepts(value: str) -> None:
    assert (re.fullmatch(EVENT_ID_PATTERN, value) is not None) == is_event_id(value)


async def test_schema_page_works_offline(client: AsyncTestClient[Litestar]) -> None:
    page = await client.get("/schema")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert re.findall(r"https?://", page.text) == []
    assets = re.findall(r'(?:src|href)="(/schema/static/[^"]+)"', page.text)
    assert sorted(assets) == ["/schema/static/swagger-ui-bundle.js", "/schema/static/swagger-ui.css"]
    for asset in assets:
        response = await client.get(asset)
        assert response.status_code == 200
        assert response.content == (STATIC_DIR / asset.rsplit("/", 1)[1]).read_bytes()
    assert "fonts.googleapis" not in (STATIC_DIR / "swagger-ui.css").read_text(encoding="utf-8")
    assert (STATIC_DIR / "LICENSE").read_text(encoding="utf-8").split()[:3] == ["Apache", "License", "Version"]
    assert msgspec.json.decode((STATIC_DIR / "package.json").read_bytes())["version"] == "5.35.0"


@pytest.mark.parametrize("origin", ["https://elsewhere.example", "null", "http://localhost:8000"])
@pytest.mark.parametrize(
    ("url", "body"),
    [(f"/runs/{RUN}/evaluate", None), (f"/runs/{RUN}/cancel", None), ("/tokenizers/train", {"corpus_path": "x"})],
)
async def test_a_page_of_another_site_changes_nothing(
    client: AsyncTestClient[Litestar],
    redis: Redis,
    api_settings: ApiSettings,
    origin: str,
    url: str,
    body: dict[str, object] | None,
) -> None:
    # A "simple" cross-site POST, which browsers send without asking (CORS would only hide the answer).
    response = await client.post(url, json=body, headers={"origin": origin})
    assert response.status_code == 403, response.text
    assert response.json()["detail"] == (
        f"a page of {origin} may not change anything here; list that origin in API__CORS_ORIGINS to allow it"
    )
    await assert_nothing_written(redis, api_settings)


async def test_the_apis_own_pages_and_listed_origins_may_write(api_settings: ApiSettings, redis: Redis) -> None:
    settings = msgspec.structs.replace(
        api_settings, api=msgspec.structs.replace(api_settings.api, cors_origins="https://ui.example/")
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        body = {"corpus_path": "small.txt"}
        own = await client.post("/tokenizers/train", json=body, headers={"origin": "http://testserver.local"})
        assert own.status_code == 202, own.text
        listed = await client.post("/tokenizers/train", json=body, headers={"origin": "https://UI.example"})
        assert listed.status_code == 202, listed.text
        read = await client.get("/tokenizers", headers={"origin": "https://elsewhere.example"})
        assert read.status_code == 200


async def test_an_option_of_the_other_method_may_be_null_as_the_document_says(
    client: AsyncTestClient[Litestar],
) -> None:
    response = await client.post("/tokenizers/train", json={"corpus_path": "small.txt", "model_type": None})
    assert response.status_code == 202, response.text
    response = await client.post("/runs/not-a-run/evaluate", json={"split": "val", "corpus_path": None})
    assert response.status_code == 404, response.text
