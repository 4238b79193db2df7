"""Both storage backends for the job tests: ``local``, where the API and the workers share one set of roots
(one volume), and ``s3``, where each has roots of its own (a pod with an emptyDir each) and they share nothing
but Redis and a bucket on the harness's S3-compatible server. A module opts in by importing ``storage``,
``api_settings`` and ``worker_settings`` from here: each of its tests then runs on both."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import msgspec
import pytest

from mt_contracts.settings import ApiSettings, StorageSettings, WorkerServiceSettings

BACKENDS = ["local", "s3"]
Service = TypeVar("Service", ApiSettings, WorkerServiceSettings)


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest) -> StorageSettings:
    """The storage of the test: the default filesystem one, or a fresh bucket on the private S3 server."""
    if request.param == "local":
        return StorageSettings()
    settings = request.getfixturevalue("s3_settings")
    assert isinstance(settings, StorageSettings)
    return settings


def on_backend(settings: Service, storage: StorageSettings, pod: Path) -> Service:
    """``settings`` on ``storage``; with an object store, with artifacts and runs roots of its own under
    ``pod`` (the corpus root stays shared: corpora are read-only inputs mounted into every pod)."""
    if storage.backend == "local":
        return settings
    app = msgspec.structs.replace(settings.app, artifacts_root=str(pod / "artifacts"), runs_root=str(pod / "runs"))
    return msgspec.structs.replace(settings, app=app, storage=storage)


def storage_env(storage: StorageSettings) -> dict[str, str]:
    """The ``STORAGE__*`` environment of a worker process on ``storage``."""
    return {f"STORAGE__{name.upper()}": str(value) for name, value in msgspec.structs.asdict(storage).items()}


@pytest.fixture
def api_settings(api_settings: ApiSettings, storage: StorageSettings, tmp_path: Path) -> ApiSettings:
    """The harness's API settings on ``storage`` (overrides the conftest fixture of the same name)."""
    return on_backend(api_settings, storage, tmp_path / "api-pod")


@pytest.fixture
def worker_settings(
    worker_settings: WorkerServiceSettings, storage: StorageSettings, tmp_path: Path
) -> WorkerServiceSettings:
    """The harness's worker settings on ``storage``: with the object store, a pod of its own."""
    return on_backend(worker_settings, storage, tmp_path / "worker-pod")
