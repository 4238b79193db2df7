"""The Kubernetes manifests, checked statically: each object against the Kubernetes OpenAPI schema
(kubernetes-validate ships the schemas, so nothing is downloaded), and the wiring between objects against
the code: settings keys, queue names, ports, probes, volumes and grace periods."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import kubernetes_validate
import msgspec
import pytest
from stack import SERVICES

from mt_contracts.settings import ApiSettings, WorkerServiceSettings, from_env
from tests.deploy.manifests import (
    K8S_BASE,
    K8S_KEDA,
    KUSTOMIZATION,
    Autoscaler,
    ClaimObject,
    Container,
    Document,
    Header,
    Objects,
    ScaledObject,
    Secret,
    Service,
    Trigger,
    Workload,
    load_kustomization,
    render,
    settings_keys,
)

BASE = Objects(render(K8S_BASE))
CONFIG = BASE.config_map("model-trainer-config")
NAMESPACE = "model-trainer"
# The oldest Kubernetes release docs/deploy.md promises, and the newest the installed schemas know.
VERSIONS = ("1.29", kubernetes_validate.latest_version())
WORKERS = {"tokenizer-worker": "QUEUE__TOKENIZER", "trainer-worker": "QUEUE__TRAINING"}


def _label(document: Document) -> str:
    header = msgspec.convert(document, Header)
    return f"{header.kind}/{header.metadata.name}"


def _app_container(workload: Workload) -> Container:
    (container,) = workload.spec.template.spec.containers
    return container


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("document", BASE.documents, ids=_label)
def test_every_base_object_matches_the_kubernetes_schema(document: Document, version: str) -> None:
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{_label(document)} at {'.'.join(map(str, exc.path))}: {exc.message}")


@pytest.mark.parametrize("directory", [K8S_BASE, K8S_KEDA], ids=["base", "keda"])
def test_each_kustomization_lists_every_manifest_in_its_folder(directory: Path) -> None:
    local = {entry for entry in load_kustomization(directory).resources if "/" not in entry}
    on_disk = {path.name for path in directory.glob("*.yaml")} - {KUSTOMIZATION}
    assert local == on_disk


def test_base_holds_the_deployment() -> None:
    assert sorted(f"{header.kind}/{header.metadata.name}" for header in BASE.headers) == sorted(
        [
            "Namespace/model-trainer",
            "ConfigMap/model-trainer-config",
            "Secret/model-trainer-api-keys",
            "PersistentVolumeClaim/model-trainer-data",
            "PersistentVolumeClaim/model-trainer-corpus",
            "Service/redis",
            "StatefulSet/redis",
            "Deployment/api",
            "Service/api",
            "HorizontalPodAutoscaler/api",
            "Deployment/tokenizer-worker",
            "Deployment/trainer-worker",
        ]
    )
    assert load_kustomization(K8S_BASE).namespace == NAMESPACE


def test_config_map_sets_only_settings_keys_with_valid_values() -> None:
    assert set(CONFIG.data) <= settings_keys(), sorted(set(CONFIG.data) - settings_keys())
    api = from_env(ApiSettings, CONFIG.data)
    worker = from_env(WorkerServiceSettings, CONFIG.data)
    assert (api.redis.url, worker.redis.url) == ("redis://redis:6379/0", "redis://redis:6379/0")
    assert api.http.host == "0.0.0.0"


def test_api_keys_secret_is_reserved_and_optional_for_the_api() -> None:
    secret = msgspec.convert(BASE.raw("Secret", "model-trainer-api-keys"), Secret)
    assert list(secret.string_data) == ["API__KEYS", "API__READ_ONLY_KEYS"]
    api = _app_container(BASE.workload("Deployment", "api"))
    assert [source.secret_ref.name for source in api.env_from if source.secret_ref] == ["model-trainer-api-keys"]


def test_containers_read_settings_from_the_config_map_and_set_no_other_keys() -> None:
    config_maps = set(BASE.names("ConfigMap"))
    secrets = set(BASE.names("Secret"))
    for workload in BASE.workloads():
        for container in workload.spec.template.spec.containers:
            assert {var.name for var in container.env} <= settings_keys(), container.name
            for source in container.env_from:
                assert source.config_map_ref is None or source.config_map_ref.name in config_maps
                assert source.secret_ref is None or source.secret_ref.name in secrets
            if container.image == "model-trainer":
                assert [s.config_map_ref.name for s in container.env_from if s.config_map_ref] == [
                    "model-trainer-config"
                ]


def test_each_service_runs_its_module_from_the_image() -> None:
    for name, module in SERVICES.items():
        container = _app_container(BASE.workload("Deployment", name))
        assert (container.image, container.command) == ("model-trainer", ["python", "-m", module])


def test_api_is_probed_on_readyz_and_healthz_and_served_on_the_configured_port() -> None:
    api = _app_container(BASE.workload("Deployment", "api"))
    (port,) = api.ports
    assert (port.name, port.container_port) == ("http", int(CONFIG.data["HTTP__PORT"]))
    assert api.readiness_probe is not None and api.readiness_probe.http_get is not None
    assert (api.readiness_probe.http_get.path, api.readiness_probe.http_get.port) == ("/readyz", "http")
    assert api.liveness_probe is not None and api.liveness_probe.http_get is not None
    assert (api.liveness_probe.http_get.path, api.liveness_probe.http_get.port) == ("/healthz", "http")
    service = msgspec.convert(BASE.raw("Service", "api"), Service)
    assert [p.target_port for p in service.spec.ports] == ["http"]


def test_api_autoscaler_targets_the_api_deployment() -> None:
    autoscaler = msgspec.convert(BASE.raw("HorizontalPodAutoscaler", "api"), Autoscaler)
    assert (autoscaler.spec.scale_target_ref.kind, autoscaler.spec.scale_target_ref.name) == ("Deployment", "api")
    assert 1 < autoscaler.spec.min_replicas < autoscaler.spec.max_replicas
    assert BASE.workload("Deployment", "api").spec.replicas is None  # the autoscaler owns the count


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_workers_have_arq_liveness_resources_and_a_grace_period_longer_than_the_shutdown_grace(name: str) -> None:
    workload = BASE.workload("Deployment", name)
    container = _app_container(workload)
    assert container.liveness_probe is not None and container.liveness_probe.exec is not None
    assert container.liveness_probe.exec.command == [*container.command, "--check"]
    # The probe reads a key that expires one second after the health check interval; probing less often is fine.
    interval = from_env(WorkerServiceSettings, CONFIG.data).worker.health_check_interval
    assert container.liveness_probe.period_seconds > interval
    assert set(container.resources.requests) == {"cpu", "memory"} == set(container.resources.limits)
    shutdown_grace = from_env(WorkerServiceSettings, CONFIG.data).worker.shutdown_grace
    assert workload.spec.template.spec.termination_grace_period_seconds >= 2 * shutdown_grace


def test_services_select_the_pods_of_a_workload() -> None:
    templates = [workload.spec.template.metadata.labels for workload in BASE.workloads()]
    for name in BASE.names("Service"):
        selector = msgspec.convert(BASE.raw("Service", name), Service).spec.selector
        matching = [labels for labels in templates if selector.items() <= labels.items()]
        assert len(matching) == 1, name
    for workload in BASE.workloads():
        assert workload.spec.selector.match_labels.items() <= workload.spec.template.metadata.labels.items()


def test_redis_persists_an_append_only_file_on_its_own_claim() -> None:
    redis = BASE.workload("StatefulSet", "redis")
    container = _app_container(redis)
    assert container.image.startswith("redis:7")
    assert container.args[container.args.index("--appendonly") + 1] == "yes"
    (claim,) = redis.spec.volume_claim_templates
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [(claim.metadata.name, "/data")]
    assert container.readiness_probe is not None and container.readiness_probe.exec is not None


def test_pods_run_as_non_root_with_read_only_root_and_writable_tmp_and_caches() -> None:
    for workload in BASE.workloads():
        pod = workload.spec.template.spec
        assert pod.security_context.run_as_non_root is True, workload.metadata.name
        assert pod.automount_service_account_token is False, workload.metadata.name
        for container in pod.containers:
            assert container.security_context.read_only_root_filesystem is True, container.name
            assert container.security_context.allow_privilege_escalation is False, container.name
        if workload.kind == "Deployment":
            empty_dirs = {volume.name for volume in pod.volumes if volume.empty_dir is not None}
            writable = {m.mount_path for m in _app_container(workload).volume_mounts if m.name in empty_dirs}
            # HOME (and with it XDG_CACHE_HOME and HF_HOME) is /home/mt in the image.
            assert writable == {"/tmp", "/home/mt/.cache"}, workload.metadata.name


def test_shared_storage_is_read_write_many_and_mounted_where_the_settings_point() -> None:
    claims = {
        name: msgspec.convert(BASE.raw("PersistentVolumeClaim", name), ClaimObject)
        for name in BASE.names("PersistentVolumeClaim")
    }
    assert {name: claim.spec.access_modes for name, claim in claims.items()} == {
        "model-trainer-data": ["ReadWriteMany"],
        "model-trainer-corpus": ["ReadWriteMany"],
    }
    data_root = PurePosixPath(CONFIG.data["APP__ARTIFACTS_ROOT"]).parent
    assert PurePosixPath(CONFIG.data["APP__RUNS_ROOT"]).parent == data_root
    for name in SERVICES:
        pod = BASE.workload("Deployment", name).spec.template.spec
        sources = {v.name: v.persistent_volume_claim for v in pod.volumes if v.persistent_volume_claim is not None}
        assert {source.claim_name for source in sources.values()} <= set(claims)
        mounts = {
            m.mount_path: (sources[m.name].claim_name, m.read_only)
            for m in pod.containers[0].volume_mounts
            if m.name in sources
        }
        assert mounts[CONFIG.data["APP__CORPUS_ROOT"]] == ("model-trainer-corpus", True)
        if name in WORKERS:
            assert mounts[str(data_root)] == ("model-trainer-data", False)


def test_keda_overlay_scales_each_worker_on_its_own_queue() -> None:
    kustomization = load_kustomization(K8S_KEDA)
    assert kustomization.resources[0] == "../base"
    assert load_kustomization(K8S_BASE).resources.count("scaledobjects.yaml") == 0  # base needs no KEDA CRDs
    overlay = Objects(render(K8S_KEDA))
    assert overlay.documents[: len(BASE.documents)] == BASE.documents
    scaled = [msgspec.convert(d, ScaledObject) for d in overlay.documents[len(BASE.documents) :]]
    redis_address = f"redis.{NAMESPACE}.svc.cluster.local:6379"
    assert {s.spec.scale_target_ref.name: s.spec.triggers for s in scaled} == {
        name: [
            Trigger(
                type="redis",
                metadata={
                    "address": redis_address,
                    "databaseIndex": "0",
                    "listName": CONFIG.data[queue_key],
                    "listLength": "1",
                },
            )
        ]
        for name, queue_key in WORKERS.items()
    }
    for scaled_object in scaled:
        assert scaled_object.api_version == "keda.sh/v1alpha1"
        assert scaled_object.spec.scale_target_ref.name in overlay.names("Deployment")
        # The API is ready only while a worker of each kind is alive: never scale a kind to zero.
        assert 1 <= scaled_object.spec.min_replica_count < scaled_object.spec.max_replica_count
    assert sorted(patch.target.name for patch in kustomization.patches) == sorted(WORKERS)
    for patch in kustomization.patches:
        assert patch.target.kind == "Deployment"
        assert overlay.workload("Deployment", patch.target.name).spec.replicas is not None
        assert "path: /spec/replicas" in patch.patch
