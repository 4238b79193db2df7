"""``/readyz`` depends on what the API itself needs (Redis and the shared artifact storage); worker pools are
reported in its body and in ``/metrics``, never in its status code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from mt_api.app import create_app
from mt_contracts.jobs import TokenizerJob, utcnow
from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.settings import ApiSettings, StorageSettings
from mt_storage.jobs import tokenizer_jobs
from mt_storage.lifecycle import Lifecycle
from mt_storage.marker import MARKER, check_storage, marker_key
from mt_storage.queue import health_key

TOK = "tok_01JDQ8ZQ0000000000000000AA"


@pytest.fixture
async def client(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(api_settings)) as client:
        yield client


def _live_workers(metrics_text: str) -> dict[str, float]:
    families = {family.name: family for family in text_string_to_metric_families(metrics_text)}
    return {sample.labels["kind"]: sample.value for sample in families["mt_workers_live"].samples}


async def test_worker_pools_are_counted_per_host_in_the_body_and_the_metrics(
    client: AsyncTestClient[Litestar], redis: Redis
) -> None:
    await redis.set(health_key("mt:queue:tokenizer", "pod-a"), "alive", px=10_000)
    await redis.set(health_key("mt:queue:tokenizer", "pod-b"), "alive", px=10_000)
    await redis.set(health_key("mt:queue:training", "pod-c"), "alive", px=10_000)
    await redis.set(health_key("mt:queue:other", "pod-d"), "alive", px=10_000)
    response = await client.get("/readyz")
    assert (response.status_code, response.json()["workers"]) == (
        200,
        {
            "tokenizer": {"queue": "mt:queue:tokenizer", "live": 2},
            "trainer": {"queue": "mt:queue:training", "live": 1},
            "webhook": {"queue": "mt:queue:webhooks", "live": 0},
        },
    )
    assert _live_workers((await client.get("/metrics")).text) == {"tokenizer": 2.0, "trainer": 1.0, "webhook": 0.0}
    # A pool with no live worker is reported, and the API stays ready.
    await redis.delete(health_key("mt:queue:training", "pod-c"))
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["workers"]["trainer"] == {"queue": "mt:queue:training", "live": 0}
    assert _live_workers((await client.get("/metrics")).text) == {"tokenizer": 2.0, "trainer": 0.0, "webhook": 0.0}


async def test_first_service_marks_the_storage_and_later_ones_must_see_the_mark(
    client: AsyncTestClient[Litestar], api_settings: ApiSettings, redis: Redis
) -> None:
    root = Path(api_settings.app.artifacts_root).resolve()
    assert not root.exists()
    assert (await client.get("/readyz")).status_code == 200
    mark = (root / MARKER).read_text().strip()
    assert len(mark) == 32 and await redis.get(marker_key(root)) == mark.encode()
    assert (await client.get("/readyz")).status_code == 200  # stable


async def test_an_api_on_other_storage_than_the_workers_is_not_ready(
    client: AsyncTestClient[Litestar], api_settings: ApiSettings, redis: Redis
) -> None:
    # What the workers wrote: a mark in Redis. This API's root has none (an unmounted, empty volume).
    root = Path(api_settings.app.artifacts_root).resolve()
    await redis.set(marker_key(root), "0123456789abcdef0123456789abcdef")
    response = await client.get("/readyz")
    assert response.status_code == 503
    (reason,) = response.json()["reasons"]
    assert reason == (
        f"storage: {root} holds no marker, but the other services' storage is marked "
        "0123456789abcdef0123456789abcdef: this process does not mount the shared artifact storage "
        "(give it the same volume or claim)"
    )
    assert not (root / MARKER).exists()  # never adopts another storage's mark
    # A different mark on disk is refused the same way; the same mark makes it ready.
    (root / MARKER).write_text("fedcba9876543210fedcba9876543210\n")
    assert "holds marker fedcba9876543210fedcba9876543210" in (await client.get("/readyz")).json()["reasons"][0]
    (root / MARKER).write_text("0123456789abcdef0123456789abcdef\n")
    assert (await client.get("/readyz")).status_code == 200
    # The worker pools are still reported while storage is wrong.
    await redis.delete(marker_key(root))
    await redis.set(marker_key(root), "ffffffffffffffffffffffffffffffff")
    body = (await client.get("/readyz")).json()
    assert set(body["workers"]) == {"tokenizer", "trainer", "webhook"} and body["status"] == "unavailable"


async def test_an_unwritable_storage_root_is_not_ready(
    client: AsyncTestClient[Litestar], api_settings: ApiSettings
) -> None:
    root = Path(api_settings.app.artifacts_root).resolve()
    root.parent.mkdir(parents=True, exist_ok=True)
    root.write_text("not a folder")
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reasons"] == [
        f"storage: {root} (APP__ARTIFACTS_ROOT) is not a folder; mount the shared storage there"
    ]


async def _succeeded_without_files(redis: Redis) -> None:
    """What an API without the workers' volume sees: tokenizer ``TOK`` succeeded, its folder absent."""
    now = utcnow()
    job = TokenizerJob(id=TOK, request=TrainTokenizerRequest(corpus_path="small.txt"), created_at=now, updated_at=now)
    lifecycle = Lifecycle(tokenizer_jobs(redis), "tokenizer", 60)
    await lifecycle.create(job)
    lease = await lifecycle.start(TOK)
    assert lease is not None
    await lease.succeed(lambda record: record)


async def test_encode_on_a_succeeded_tokenizer_whose_files_this_api_lacks_says_so(
    client: AsyncTestClient[Litestar], api_settings: ApiSettings, redis: Redis
) -> None:
    await _succeeded_without_files(redis)
    response = await client.post(f"/tokenizers/{TOK}/encode", json={"text": "hello"})
    assert response.status_code == 503
    directory = Path(api_settings.app.artifacts_root).resolve() / "tokenizers" / TOK
    assert response.json()["detail"] == (
        f"tokenizer {TOK} succeeded, but its files are not in this API's artifact storage ({directory}); "
        "the API must mount the workers' storage (see /readyz and docs/deploy.md)"
    )


async def test_a_run_on_a_succeeded_tokenizer_whose_files_this_api_lacks_is_queued_but_not_estimated(
    client: AsyncTestClient[Litestar], api_settings: ApiSettings, redis: Redis
) -> None:
    await _succeeded_without_files(redis)
    body = {"tokenizer_id": TOK, "corpus_path": "small.txt", "max_steps": 200}
    # A dry run is the estimate: it cannot be given without the tokenizer's files.
    dry = await client.post("/runs/train?dry_run=true", json=body)
    assert dry.status_code == 503, dry.text
    tokenizer_file = Path(api_settings.app.artifacts_root).resolve() / "tokenizers" / TOK / "tokenizer.json"
    detail = f"the run cannot be estimated: [Errno 2] No such file or directory: '{tokenizer_file}'; see /readyz"
    assert dry.json()["detail"] == detail
    # A real run is never refused for its estimate: the worker, which may see other storage, decides.
    submitted = await client.post("/runs/train", json=body)
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["status"] == "queued"


async def test_with_an_object_store_readiness_is_the_bucket_and_a_writable_cache(
    api_settings: ApiSettings, s3_settings: StorageSettings, redis: Redis
) -> None:
    settings = msgspec.structs.replace(api_settings, storage=s3_settings)
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.get("/readyz")
        assert (response.status_code, response.json()["reasons"]) == (200, [])
        # Each pod's root is its own cache there: no storage marker is asked for.
        assert not (Path(api_settings.app.artifacts_root) / MARKER).exists()
    missing = msgspec.structs.replace(s3_settings, s3_bucket="no-such-bucket")
    async with AsyncTestClient(app=create_app(msgspec.structs.replace(api_settings, storage=missing))) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        (reason,) = response.json()["reasons"]
        assert reason.startswith("storage: bucket no-such-bucket is not usable: ")


async def test_services_that_start_together_on_one_volume_agree_on_the_marker(
    api_settings: ApiSettings, redis: Redis
) -> None:
    root = Path(api_settings.app.artifacts_root).resolve()
    clients = [Redis.from_url(api_settings.redis.url) for _ in range(8)]
    try:
        reasons = await asyncio.gather(*(check_storage(client, root) for client in clients))
    finally:
        for client in clients:
            await client.aclose()
    assert reasons == [None] * 8
    assert await redis.get(marker_key(root)) == (root / MARKER).read_text().strip().encode()
    assert sorted(p.name for p in root.iterdir()) == [MARKER]  # no temporary file left


async def test_services_on_different_volumes_are_told_apart(
    api_settings: ApiSettings, redis: Redis, tmp_path: Path
) -> None:
    # Two roots at one path is what two unshared volumes look like; here one path, its content swapped.
    root = Path(api_settings.app.artifacts_root).resolve()
    assert await check_storage(redis, root) is None
    first = (root / MARKER).read_text()
    (root / MARKER).rename(tmp_path / "first-volume-marker")
    reason = await check_storage(redis, root)
    assert reason is not None and reason.startswith(f"storage: {root} holds no marker, but the other services'")
    assert not (root / MARKER).exists()
    (tmp_path / "first-volume-marker").rename(root / MARKER)
    assert (root / MARKER).read_text() == first and await check_storage(redis, root) is None
