"""Test harness: a private redis-server for the session (never the machine's shared one), settings that
point every root at a temporary folder, and a small slice of Tiny Shakespeare as the corpus."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from mt_contracts.settings import (
    ApiSettings,
    AppSettings,
    QueueSettings,
    RedisSettings,
    WorkerServiceSettings,
    WorkerSettings,
)
from mt_storage.embedded_redis import EmbeddedRedis

SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "tinyshakespeare.txt"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistent=False) as server:
        yield server


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
