"""``deploy/compose.yml`` and the Makefile targets around it, checked statically (no Docker engine here):
the compose specification's JSON schema (vendored in check-jsonschema, so nothing is downloaded), then the
structure the deployment relies on and the settings keys it sets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import PurePosixPath

import pytest
from stack import SERVICES

from mt_contracts.settings import ApiSettings, WorkerServiceSettings, from_env
from tests.deploy.manifests import COMPOSE, ROOT, ComposeService, load_compose, seconds, settings_keys

COMPOSE_FILE = load_compose()
APP = {name: COMPOSE_FILE.services[name] for name in SERVICES}
WORKERS = {"tokenizer-worker": "TOKENIZER_WORKERS", "trainer-worker": "TRAINER_WORKERS"}


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
    assert sorted(COMPOSE_FILE.services) == sorted(["redis", *SERVICES])
    for name, module in SERVICES.items():
        service = APP[name]
        assert service.command == ["python", "-m", module]
        assert service.build is not None and (service.build.context, service.build.dockerfile) == (".", "Dockerfile")
        assert service.image is None  # compose names the built images after the project, so `make clean` finds them
        assert service.restart == "unless-stopped"
    assert (ROOT / "Dockerfile").is_file()


def test_redis_7_keeps_an_append_only_file_on_a_volume_and_is_health_checked() -> None:
    redis = COMPOSE_FILE.services["redis"]
    assert redis.image is not None and redis.image.startswith("redis:7")
    assert redis.command[redis.command.index("--appendonly") + 1] == "yes"
    assert _named_volumes(redis) == {"redis-data": "/data"}
    assert redis.healthcheck is not None and redis.healthcheck.test == ["CMD", "redis-cli", "ping"]


def test_app_services_start_after_redis_is_healthy_and_read_settings_from_env_file() -> None:
    for name, service in APP.items():
        assert {dep: d.condition for dep, d in service.depends_on.items()} == {"redis": "service_healthy"}, name
        assert [(f.path, f.required) for f in service.env_file] == [(".env", False)], name


def test_api_health_is_readyz_on_the_published_port() -> None:
    api = APP["api"]
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


def test_data_lives_in_named_volumes_and_the_corpus_is_mounted_read_only() -> None:
    assert sorted(COMPOSE_FILE.volumes) == ["artifacts", "redis-data", "runs"]
    for name, service in APP.items():
        env = service.environment
        assert f"./corpus:{env['APP__CORPUS_ROOT']}:ro" in service.volumes, name
        expected = {}
        if name in WORKERS:
            expected["artifacts"] = env["APP__ARTIFACTS_ROOT"]
        if name == "trainer-worker":
            expected["runs"] = env["APP__RUNS_ROOT"]
        assert _named_volumes(service) == expected, name
    # The image creates these folders owned by its user, so fresh named volumes are writable.
    assert PurePosixPath(APP["trainer-worker"].environment["APP__RUNS_ROOT"]) == PurePosixPath("/data/runs")


def test_every_variable_the_compose_file_reads_is_documented() -> None:
    variables = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text()))
    assert variables == {"API_BIND", "API_PORT", *WORKERS.values()}
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
