"""What each kind of process imports: children (tokenizer training, training, evaluation, inference) never
import redis or arq; the gateway and the worker parents never import torch or transformers."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from mt_contracts.settings import SettingsError, WorkerServiceSettings
from mt_trainer_worker.worker import create_worker


def _loaded(module: str, names: tuple[str, ...]) -> str:
    code = f"import sys, {module}; print(sorted(m for m in {names!r} if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("module", ["mt_trainer_worker.worker", "mt_tokenizer_worker.worker", "mt_api.app"])
def test_service_processes_do_not_import_training_libraries(module: str) -> None:
    assert _loaded(module, ("torch", "transformers")) == "[]"


@pytest.mark.parametrize(
    "module",
    [
        "mt_tokenizer_worker.process",
        "mt_trainer_worker.training.__main__",
        "mt_trainer_worker.training.evaluate",
        "mt_api.inference",
        "mt_storage.warm",
    ],
)
def test_child_processes_import_neither_redis_nor_arq(module: str) -> None:
    # torch is listed so that the check is seen to see what a module does import; the warm standby imports it
    # only when told to (its modules are arguments).
    torch = [] if module in {"mt_tokenizer_worker.process", "mt_storage.warm"} else ["torch"]
    assert _loaded(module, ("redis", "arq", "litestar", "torch")) == str(torch)


def test_a_stall_limit_too_short_for_the_heartbeat_is_refused_at_start_up(
    worker_settings: WorkerServiceSettings,
) -> None:
    app = msgspec.structs.replace(worker_settings.app, stall_after_seconds=1.0)
    settings = msgspec.structs.replace(worker_settings, app=app)
    expected = r"APP__STALL_AFTER_SECONDS=1 is too short for WORKER__HEARTBEAT_INTERVAL=0\.5.*at least 3 intervals"
    with pytest.raises(SettingsError, match=expected):
        create_worker(settings)
