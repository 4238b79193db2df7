"""``make dev``'s launcher: the real service processes with an embedded Redis, up and ready, then all
stopped."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest
import redis

from mt_storage.embedded_redis import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from stack import Stack


def test_stack_starts_ready_and_stops_every_process(tmp_path: Path, corpus_root: Path) -> None:
    env = {
        **os.environ,
        "APP__CORPUS_ROOT": str(corpus_root),
        "APP__ARTIFACTS_ROOT": str(tmp_path / "artifacts"),
        "APP__RUNS_ROOT": str(tmp_path / "runs"),
        "HTTP__PORT": str(free_port()),
        "WORKER__HEALTH_CHECK_INTERVAL": "1",
    }
    env.pop("REDIS__URL", None)
    stack = Stack(env, tmp_path / "data", log_dir=tmp_path / "logs")
    with stack:
        assert stack.redis is not None
        redis_url = stack.redis.url
        response = httpx.get(f"{stack.api_url}/readyz")
        assert (response.status_code, response.json()) == (
            200,
            {
                "status": "ok",
                "reasons": [],
                "workers": {
                    "tokenizer": {"queue": "mt:queue:tokenizer", "live": 1},
                    "trainer": {"queue": "mt:queue:training", "live": 1},
                    "webhook": {"queue": "mt:queue:webhooks", "live": 1},
                },
            },
        )
        processes = list(stack.processes.values())
        assert len(processes) == 4  # the API and three workers
    assert all(process.poll() is not None for process in processes)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
    assert (tmp_path / "data" / "redis" / "appendonlydir").is_dir()
    log = (tmp_path / "logs" / "api.log").read_text()
    assert '"level":"info"' in log
