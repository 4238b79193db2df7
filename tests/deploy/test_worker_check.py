"""The workers' ``--check`` flag, the liveness probe of compose and Kubernetes: it follows arq's health key of a
real worker process on the private Redis (healthy while the worker runs, unhealthy once it stopped and the
key expired) and reports an unreachable Redis as unhealthy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import redis

from mt_storage.embedded_redis import EmbeddedRedis, free_port
from mt_storage.queue import HEALTH_CHECK_SUFFIX
from mt_tokenizer_worker.__main__ import main as tokenizer_main
from mt_trainer_worker.__main__ import main as trainer_main

Main = Callable[[Sequence[str] | None], int]
WORKERS = [
    ("mt_tokenizer_worker", "mt:queue:tokenizer", tokenizer_main),
    ("mt_trainer_worker", "mt:queue:training", trainer_main),
]


def _wait_for_exit_code(check: Callable[[], int], expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (code := check()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"--check kept answering {code}, not {expected}, for {timeout} s")
        time.sleep(0.2)


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, redis_server: EmbeddedRedis, tmp_path: Path) -> dict[str, str]:
    """The environment of a worker on the private Redis that refreshes its health key every second."""
    env = {
        "REDIS__URL": redis_server.url,
        "WORKER__HEALTH_CHECK_INTERVAL": "1",
        "APP__ARTIFACTS_ROOT": str(tmp_path / "artifacts"),
        "APP__RUNS_ROOT": str(tmp_path / "runs"),
        "APP__CORPUS_ROOT": str(tmp_path / "corpus"),
        "APP__LOG_LEVEL": "WARNING",
    }
    for name in ("QUEUE__TOKENIZER", "QUEUE__TRAINING"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.mark.parametrize(("module", "queue", "main"), WORKERS, ids=[module for module, _, _ in WORKERS])
def test_check_follows_a_running_workers_health_key(
    module: str, queue: str, main: Main, settings_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(settings_env["REDIS__URL"])
    client.delete(queue + HEALTH_CHECK_SUFFIX)
    client.close()
    assert main(["--check"]) == 1
    assert capsys.readouterr().err == f"unhealthy: no live worker on queue {queue} (health key missing or expired)\n"

    worker = subprocess.Popen(
        [sys.executable, "-m", module], env={**os.environ, **settings_env}, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_exit_code(lambda: main(["--check"]), 0, timeout=30)
        assert capsys.readouterr().out.startswith(f"healthy: {queue}: ")
    finally:
        worker.terminate()
        assert worker.wait(timeout=30) == 0
    # The key expires one second after the interval (1 s) once nothing refreshes it.
    _wait_for_exit_code(lambda: main(["--check"]), 1, timeout=10)


@pytest.mark.parametrize("main", [main for _, _, main in WORKERS], ids=[module for module, _, _ in WORKERS])
def test_check_reports_an_unreachable_redis_as_unhealthy(
    main: Main, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS__URL", f"redis://127.0.0.1:{free_port()}/0")
    assert main(["--check"]) == 1
    assert capsys.readouterr().err.startswith("unhealthy: redis did not answer: ")
