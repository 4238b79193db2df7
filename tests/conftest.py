"""Test harness: a private redis-server for the session (never the machine's shared one), a private
S3-compatible server (moto's server mode, a real HTTP server speaking the S3 REST API) started on demand,
settings that point every root at a temporary folder, and a small slice of Tiny Shakespeare as the corpus."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from mt_contracts.settings import (
    ApiSettings,
    AppSettings,
    QueueSettings,
    RedisSettings,
    StorageSettings,
    WorkerServiceSettings,
    WorkerSettings,
)
from mt_storage.embedded_redis import EmbeddedRedis, free_port

SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "tinyshakespeare.txt"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistent=False) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a private S3-compatible server on a free port of 127.0.0.1: moto's server mode
    (``moto_server``), a separate process answering the S3 REST API over HTTP, state in memory. MinIO's
    server is on none of the registries this project installs from; moto is the best-known S3 server on
    PyPI and implements what the store uses (multipart uploads, ranged GETs, ListObjectsV2, DeleteObjects).
    """
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"the S3 server did not start: {log.read_text()}")
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def s3_settings(s3_server: str) -> StorageSettings:
    """Settings of a fresh bucket on the private S3 server (created here), keys under ``mt/``."""
    bucket = f"mt-{uuid.uuid4().hex[:12]}"
    settings = StorageSettings(
        backend="s3",
        s3_bucket=bucket,
        s3_prefix="mt/",
        s3_endpoint_url=s3_server,
        s3_access_key_id="test-access-key",
        s3_secret_access_key="test-secret-key",
    )
    from mt_storage.s3 import S3Store

    store = S3Store.from_settings(settings)
    store.client.create_bucket(Bucket=bucket)
    return settings


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def shakespeare() -> str:
    if not SHAKESPEARE.is_file():
        pytest.fail(f"test corpus missing: {SHAKESPEARE}")
    return SHAKESPEARE.read_text(encoding="utf-8")


@pytest.fixture
def corpus_root(tmp_path: Path, shakespeare: str) -> Path:
    """A corpus root holding ``small.txt``: the first 60,000 characters of Tiny Shakespeare."""
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "small.txt").write_text(shakespeare[:60_000], encoding="utf-8")
    return root


@pytest.fixture
def app_settings(tmp_path: Path, corpus_root: Path) -> AppSettings:
    return AppSettings(
        artifacts_root=str(tmp_path / "artifacts"),
        runs_root=str(tmp_path / "runs"),
        corpus_root=str(corpus_root),
        log_level="WARNING",
    )


@pytest.fixture
def api_settings(redis_server: EmbeddedRedis, app_settings: AppSettings) -> ApiSettings:
    return ApiSettings(redis=RedisSettings(url=redis_server.url), app=app_settings, queue=QueueSettings())


@pytest.fixture
def worker_settings(redis_server: EmbeddedRedis, app_settings: AppSettings) -> WorkerServiceSettings:
    return WorkerServiceSettings(
        redis=RedisSettings(url=redis_server.url),
        app=app_settings,
        queue=QueueSettings(),
        worker=WorkerSettings(health_check_interval=2, heartbeat_interval=0.5, progress_interval=0.2, niceness=0),
    )
