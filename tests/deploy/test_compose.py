"""``deploy/compose.yml`` and the Makefile targets around it, checked statically (no Docker engine here):
the compose specification's JSON schema (vendored in check-jsonschema, so nothing is downloaded), then the
structure the deployment relies on (the API and both workers share the storage volumes), the settings keys
it sets and where its secrets come from. Redis's start script and health check are run for real, against a
local redis-server, since they are shell."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import redis
from stack import SERVICES

from mt_api.app import create_app
from mt_contracts.settings import ApiSettings, WorkerServiceSettings, from_env
from tests.deploy.manifests import (
    COMPOSE,
    ROOT,
    ComposeService,
    load_compose,
    redis_cli,
    seconds,
    settings_keys,
    start_redis_script,
    wait_for_redis,
)

COMPOSE_FILE = load_compose()
APP = {name: COMPOSE_FILE.services[name] for name in SERVICES}
WORKERS = {
    "tokenizer-worker": "TOKENIZER_WORKERS",
    "trainer-worker": "TRAINER_WORKERS",
    "webhook-worker": "WEBHOOK_WORKERS",
}
# The services that read or write artifacts; the webhook worker needs only Redis and the network.
STORAGE_SERVICES = ("api", "tokenizer-worker", "trainer-worker")


def _named_volumes(service: ComposeService) -> dict[str, str]:
    """Named-volume mounts of ``service``: volume name -> container path (bind mounts left out)."""
    mounts = {}
    for entry in service.volumes:
        source, target = entry.split(":")[:2]
        if not source.startswith((".", "/", "~")):
            mounts[source] = target
    return mounts


def test_compose_file_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_stack_is_redis_and_one_service_per_module_from_one_image() -> None:
    assert COMPOSE_FILE.name == "model-trainer"
    default = sorted(name for name, service in COMPOSE_FILE.services.items() if not service.profiles)
    assert default == sorted(["redis", *SERVICES])
    optional = {name: service.profiles for name, service in COMPOSE_FILE.services.items() if service.profiles}
    assert optional == {"minio": ["s3"], "minio-bucket": ["s3"]}
    for name, module in SERVICES.items():
        service = APP[name]
        assert service.command == ["python", "-m", module]
        assert service.build is not None and (service.build.context, service.build.dockerfile) == (".", "Dockerfile")
        assert service.image is None  # compose names the built images after the project, so `make clean` finds them
        assert service.restart == "unless-stopped"
    assert (ROOT / "Dockerfile").is_file()


def _shell(script: str) -> str:
    """A compose string as the container's shell receives it (``$$`` is compose's escape of ``$``)."""
    return script.replace("$$", "$")


def test_redis_7_keeps_an_append_only_file_on_a_volume_and_reads_its_password_from_env_file() -> None:
    service = COMPOSE_FILE.services["redis"]
    assert service.image is not None and service.image.startswith("redis:7")
    assert service.command[:2] == ["sh", "-c"]
    assert "exec redis-server --appendonly yes --appendfsync everysec - <<EOF" in service.command[2]
    assert _named_volumes(service) == {"redis-data": "/data"}
    assert [(f.path, f.required) for f in service.env_file] == [(".env", False)]
    assert "REDIS__PASSWORD" not in service.environment  # from .env only, never written here
    assert service.healthcheck is not None and service.healthcheck.test[0] == "CMD-SHELL"


def _redis_script() -> str:
    return _shell(COMPOSE_FILE.services["redis"].command[2])


def test_redis_refuses_to_start_without_a_password(tmp_path: Path) -> None:
    process, _ = start_redis_script(_redis_script(), tmp_path, "")
    _, stderr = process.communicate(timeout=10)
    assert (process.returncode, stderr) == (1, b"redis: set REDIS__PASSWORD in .env (docs/deploy.md)\n")


def test_redis_requires_the_password_that_never_appears_on_its_command_line(tmp_path: Path) -> None:
    password = "0123456789abcdef-compose-secret"
    process, port = start_redis_script(_redis_script(), tmp_path, password)
    try:
        client = wait_for_redis(process, port, password)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.close()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port).ping()
        # sh exec'd redis-server, which holds the password in memory only.
        assert password.encode() not in Path(f"/proc/{process.pid}/cmdline").read_bytes()
        # The health check, as compose runs it (CMD-SHELL), with redis-cli pointed at this port.
        healthcheck = COMPOSE_FILE.services["redis"].healthcheck
        assert healthcheck is not None
        check = _shell(healthcheck.test[1]).replace("redis-cli ping", f"{redis_cli()} -p {port} ping")
        for sent, expected in ((password, 0), ("wrong", 1), ("", 1)):
            result = subprocess.run(["sh", "-c", check], env={**os.environ, "REDIS__PASSWORD": sent}, check=False)
            assert result.returncode == expected, sent
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_app_services_start_after_redis_is_healthy_and_read_settings_from_env_file() -> None:
    for name, service in APP.items():
        assert {dep: (d.condition, d.required) for dep, d in service.depends_on.items()} == {
            "redis": ("service_healthy", True),
            # The bucket exists before they start, when the s3 profile runs MinIO; nothing otherwise.
            "minio-bucket": ("service_completed_successfully", False),
        }, name
        assert [(f.path, f.required) for f in service.env_file] == [(".env", False)], name


def test_secrets_come_only_from_the_git_ignored_env_file() -> None:
    secrets = {"REDIS__PASSWORD", "API__KEYS", "API__READ_ONLY_KEYS", "STORAGE__S3_SECRET_ACCESS_KEY"}
    for name, service in COMPOSE_FILE.services.items():
        assert not secrets & set(service.environment), name
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_api_health_is_readyz_on_the_published_port() -> None:
    api = APP["api"]
    assert "/readyz" in {route.path for route in create_app(ApiSettings()).routes}
    assert api.healthcheck is not None
    assert api.healthcheck.test[:3] == ["CMD", "python", "-c"]
    assert f"http://127.0.0.1:{api.environment['HTTP__PORT']}/readyz" in api.healthcheck.test[3]
    assert [port.rsplit(":", 1)[1] for port in api.ports] == [api.environment["HTTP__PORT"]]
    assert api.environment["HTTP__HOST"] == "0.0.0.0"


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_workers_check_arq_health_and_scale_by_variable(name: str) -> None:
    worker = APP[name]
    assert worker.healthcheck is not None and worker.healthcheck.test == ["CMD", *worker.command, "--check"]
    assert worker.deploy is not None and worker.deploy.replicas == f"${{{WORKERS[name]}:-1}}"


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_workers_stop_grace_outlasts_the_shutdown_grace(name: str) -> None:
    worker = APP[name]
    shutdown_grace = from_env(WorkerServiceSettings, worker.environment).worker.shutdown_grace
    assert seconds(worker.stop_grace_period) >= 2 * shutdown_grace


def test_environment_sets_only_settings_keys_with_valid_values() -> None:
    for name, service in APP.items():
        assert set(service.environment) <= settings_keys(), (name, sorted(set(service.environment) - settings_keys()))
        settings_type = ApiSettings if name == "api" else WorkerServiceSettings
        from_env(settings_type, service.environment)


def test_the_api_and_both_workers_share_the_storage_volumes_and_only_the_api_writes_the_corpus() -> None:
    assert sorted(COMPOSE_FILE.volumes) == ["artifacts", "minio-data", "redis-data", "runs"]
    assert APP["webhook-worker"].volumes == []
    for name in STORAGE_SERVICES:
        service = APP[name]
        env = service.environment
        # The API commits uploads (PUT /corpora/{name}) into the corpus root; the workers only read it.
        corpus = f"./corpus:{env['APP__CORPUS_ROOT']}" + ("" if name == "api" else ":ro")
        assert corpus in service.volumes, name
        # Read-write for the API too: it writes exports into the model folders.
        expected = {"artifacts": env["APP__ARTIFACTS_ROOT"], "runs": env["APP__RUNS_ROOT"]}
        assert _named_volumes(service) == expected, name
        assert not [
            entry for entry in service.volumes if entry.startswith(("artifacts:", "runs:")) and entry.endswith(":ro")
        ], name
    # The image creates these folders owned by its user, so fresh named volumes are writable.
    assert PurePosixPath(APP["trainer-worker"].environment["APP__RUNS_ROOT"]) == PurePosixPath("/data/runs")


def test_every_variable_the_compose_file_reads_is_documented() -> None:
    variables = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    assert variables == {
        "API_BIND",
        "API_PORT",
        *WORKERS.values(),
        "STORAGE__S3_ACCESS_KEY_ID",
        "STORAGE__S3_SECRET_ACCESS_KEY",
    }
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert [name for name in sorted(variables) if f"`{name}`" not in docs] == []


def test_makefile_runs_this_compose_file_from_the_repository_root() -> None:
    makefile = (ROOT / "Makefile").read_text()
    compose = "docker compose --project-directory . -f deploy/compose.yml"
    assert f"COMPOSE := {compose}" in makefile
    recipes = {
        "start": "$(COMPOSE) up -d --build",
        "stop": "$(COMPOSE) down",
        "clean": "$(COMPOSE) down --volumes --rmi local --remove-orphans",
        "logs": "$(COMPOSE) logs",
    }
    for target, recipe in recipes.items():
        assert re.search(rf"^{target}: .*## .+\n\t{re.escape(recipe)}", makefile, re.MULTILINE), target
    assert re.search(r"^restart: .*## ", makefile, re.MULTILINE)
