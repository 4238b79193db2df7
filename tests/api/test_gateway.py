"""The gateway's cross-cutting behaviour: one problem JSON error shape, request ids, API keys, /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from mt_api.app import create_app
from mt_contracts.settings import ApiSettings, GatewaySettings

TOK = "tok_01JDQ8ZQ0000000000000000AA"
KEYS = ("first-key-0123456789", "second-key-9876543210")


@pytest.fixture
async def client(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(api_settings)) as client:
        yield client


@pytest.fixture
async def keyed(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    settings = msgspec.structs.replace(api_settings, api=GatewaySettings(keys=",".join(KEYS)))
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


def _problem_keys(body: dict[str, object]) -> set[str]:
    return set(body) - {"errors"}


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "slug"),
    [
        ("POST", "/tokenizers/train", {"corpus_path": "small.txt", "vocab_size": 4}, 400, "validation"),
        ("POST", "/tokenizers/train", {"corpus_path": "../x.txt"}, 400, "invalid-field"),
        ("GET", "/tokenizers?limit=0", None, 400, "validation"),
        ("GET", f"/tokenizers/{TOK}", None, 404, "not-found"),
        ("GET", "/no/such/route", None, 404, None),
        ("DELETE", "/healthz", None, 405, None),
        ("POST", "/runs/train", {"tokenizer_id": TOK, "corpus_path": "small.txt"}, 404, "not-found"),
        ("GET", "/runs/run_01JDQ8ZQ0000000000000000AA/logs/stream", None, 404, "not-found"),
        ("GET", f"/tokenizers/{TOK}/logs?tail=0", None, 400, "validation"),
        ("GET", f"/tokenizers/{TOK}/logs?tail=10001", None, 400, "validation"),
    ],
)
async def test_every_error_is_problem_json(
    client: AsyncTestClient[Litestar],
    method: str,
    url: str,
    body: dict[str, object] | None,
    status: int,
    slug: str | None,
) -> None:
    response = await client.request(method, url, json=body, headers={"X-Request-ID": "req-42"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "req-42"
    problem = response.json()
    assert _problem_keys(problem) == {"type", "title", "status", "detail", "instance", "request_id"}
    assert problem["status"] == status and problem["request_id"] == "req-42"
    assert problem["instance"] == url.partition("?")[0]
    assert problem["type"] == (f"urn:model-trainer:problem:{slug}" if slug else "about:blank")
    if status == 400:
        assert problem["errors"] and all(set(e) == {"field", "message", "source"} for e in problem["errors"])


async def test_validation_errors_name_the_field_path(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post("/tokenizers/train", json={"corpus_path": "small.txt", "special_tokens": ["a", 3]})
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["field"] == "special_tokens[1]" and error["source"] == "body"


async def test_a_5xx_hides_the_cause(client: AsyncTestClient[Litestar], redis: Redis) -> None:
    await redis.set(f"mt:tokenizer:{TOK}", b'{"id": "/secret/path/traceback"}')
    response = await client.get(f"/tokenizers/{TOK}")
    assert response.status_code == 500
    problem = response.json()
    assert problem["type"] == "urn:model-trainer:problem:internal-error"
    assert "secret" not in response.text and "Traceback" not in response.text and "decode" not in response.text
    assert problem["request_id"] == response.headers["x-request-id"]


async def test_request_ids_are_generated_or_echoed(client: AsyncTestClient[Litestar]) -> None:
    first, second = await client.get("/healthz"), await client.get("/healthz")
    assert len(first.headers["x-request-id"]) == 32 and first.headers["x-request-id"] != second.headers["x-request-id"]
    assert (await client.get("/healthz", headers={"X-Request-ID": "abc-1"})).headers["x-request-id"] == "abc-1"
    # Not echoed when it could carry header injection or is absurdly long.
    assert (await client.get("/healthz", headers={"X-Request-ID": "a b"})).headers["x-request-id"] != "a b"
    assert (await client.get("/healthz", headers={"X-Request-ID": "x" * 500})).headers["x-request-id"] != "x" * 500


async def test_api_keys_guard_everything_but_health(keyed: AsyncTestClient[Litestar]) -> None:
    assert (await keyed.get("/healthz")).status_code == 200
    assert (await keyed.get("/readyz")).status_code == 200  # public
    missing = await keyed.get("/tokenizers")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="model-trainer"'
    assert missing.json()["type"] == "urn:model-trainer:problem:unauthorized"
    for header in ("Bearer wrong-key", "Basic Zmlyc3Qta2V5", f"Bearer {KEYS[0]}x", "Bearer "):
        wrong = await keyed.get("/tokenizers", headers={"Authorization": header})
        assert wrong.status_code == 401, header
        assert wrong.headers["www-authenticate"].startswith('Bearer realm="model-trainer"')
    for key in KEYS:
        ok = await keyed.get("/tokenizers", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200, ok.text
    assert (await keyed.get("/metrics")).status_code == 401
    assert (await keyed.get(f"/artifacts/tokenizers/{TOK}")).status_code == 401
    assert (await keyed.post("/tokenizers/train", json={})).status_code == 401


async def test_no_keys_leaves_the_api_open(client: AsyncTestClient[Litestar]) -> None:
    assert (await client.get("/tokenizers")).status_code == 200


async def test_metrics_parse_with_the_prometheus_parser(client: AsyncTestClient[Litestar]) -> None:
    await client.get("/healthz")
    await client.get(f"/tokenizers/{TOK}")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    assert {
        "mt_http_requests",
        "mt_http_request_duration_seconds",
        "mt_live_streams",
        "mt_jobs",
        "mt_queue_depth",
        "mt_training_tokens_per_second",
    } <= set(families)
    requests = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["mt_http_requests"].samples
        if s.name == "mt_http_requests_total"
    }
    assert requests[("/healthz", "200")] == 1
    assert requests[("/tokenizers/{tokenizer_id}", "404")] == 1
    queues = {s.labels["queue"]: s.value for s in families["mt_queue_depth"].samples}
    assert queues == {"mt:queue:tokenizer": 0, "mt:queue:training": 0}
    jobs = {(s.labels["kind"], s.labels["status"]) for s in families["mt_jobs"].samples}
    assert ("tokenizer", "succeeded") in jobs and ("run", "running") in jobs
