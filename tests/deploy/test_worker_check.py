"""The workers' ``--check`` flag, the liveness probe of compose and Kubernetes, for each of the three workers
(tokenizer, trainer, webhook): it follows this host's own worker's health key of a real worker process on the
private Redis (healthy while the worker runs, unhealthy once it stopped and the key expired, whatever other
hosts' workers do) and reports an unreachable Redis as unhealthy. A worker that reads artifacts refuses to
start when its storage is not the deployment's; the webhook worker reads none."""

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
from mt_storage.marker import marker_key
from mt_storage.queue import health_key
from mt_tokenizer_worker.__main__ import main as tokenizer_main
from mt_trainer_worker.__main__ import main as trainer_main
from mt_webhook_worker.__main__ import main as webhook_main

Main = Callable[[Sequence[str] | None], int]
# The workers that read the artifact storage, and every worker with a liveness probe.
WORKERS = [
    ("mt_tokenizer_worker", "mt:queue:tokenizer", tokenizer_main),
    ("mt_trainer_worker", "mt:queue:training", trainer_main),
]
PROBED = [*WORKERS, ("mt_webhook_worker", "mt:queue:webhooks", webhook_main)]


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
    for name in ("QUEUE__TOKENIZER", "QUEUE__TRAINING", "QUEUE__WEBHOOKS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.mark.parametrize(("module", "queue", "main"), PROBED, ids=[module for module, _, _ in PROBED])
def test_check_follows_a_running_workers_health_key(
    module: str, queue: str, main: Main, settings_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(settings_env["REDIS__URL"])
    client.delete(health_key(queue))
    # Another pod's worker on the same queue is alive: this host's probe must not count it.
    client.set(health_key(queue, "another-pod"), "alive", px=60_000)
    client.close()
    assert main(["--check"]) == 1
    assert capsys.readouterr().err == (
        f"unhealthy: this host's worker on queue {queue} is not alive ({health_key(queue)} missing or expired)\n"
    )

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


@pytest.mark.parametrize("main", [main for _, _, main in PROBED], ids=[module for module, _, _ in PROBED])
def test_check_reports_an_unreachable_redis_as_unhealthy(
    main: Main, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS__URL", f"redis://127.0.0.1:{free_port()}/0")
    assert main(["--check"]) == 1
    assert capsys.readouterr().err.startswith("unhealthy: redis did not answer: ")


@pytest.mark.parametrize(("module", "queue", "main"), WORKERS, ids=[module for module, _, _ in WORKERS])
def test_a_worker_on_other_storage_than_the_deployment_refuses_to_start(
    module: str, queue: str, main: Main, settings_env: dict[str, str]
) -> None:
    root = Path(settings_env["APP__ARTIFACTS_ROOT"]).resolve()
    client = redis.Redis.from_url(settings_env["REDIS__URL"])
    client.set(marker_key(root), "0123456789abcdef0123456789abcdef")
    client.close()
    result = subprocess.run(
        [sys.executable, "-m", module],
        env={**os.environ, **settings_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.endswith(
        f"{module}: storage: {root} holds no marker, but the other services' storage is marked "
        "0123456789abcdef0123456789abcdef: this process does not mount the shared artifact storage "
        "(give it the same volume or claim)\n"
    )


def test_a_worker_whose_bucket_is_missing_refuses_to_start(settings_env: dict[str, str], s3_server: str) -> None:
    env = {
        **os.environ,
        **settings_env,
        "STORAGE__BACKEND": "s3",
        "STORAGE__S3_BUCKET": "no-such-bucket",
        "STORAGE__S3_ENDPOINT_URL": s3_server,
        "STORAGE__S3_ACCESS_KEY_ID": "test-access-key",
        "STORAGE__S3_SECRET_ACCESS_KEY": "test-secret-key",
    }
    result = subprocess.run(
        [sys.executable, "-m", "mt_tokenizer_worker"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith("mt_tokenizer_worker: storage: bucket no-such-bucket is not usable: ")
    assert "test-secret-key" not in result.stderr
