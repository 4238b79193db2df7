"""The Kubernetes manifests, checked statically: each object against the Kubernetes OpenAPI schema
(kubernetes-validate ships the schemas, so nothing is downloaded), and the wiring between objects against
the code: settings keys, queue names, ports, probes (at the app's real routes), volumes (the API and the
workers share the data claim), secrets (referenced, never shipped), NetworkPolicies (selecting the real pod
labels) and grace periods. Redis's start script is run for real against a local redis-server."""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath

import kubernetes_validate
import msgspec
import pytest
import redis
from stack import SERVICES

from mt_api.app import create_app
from mt_contracts.settings import ApiSettings, WorkerServiceSettings, from_env
from tests.deploy.manifests import (
    K8S_BASE,
    K8S_KEDA,
    K8S_OBJECT_STORE,
    KUSTOMIZATION,
    ROOT,
    Autoscaler,
    ClaimObject,
    ConfigMap,
    Container,
    Document,
    Header,
    NameRef,
    NetworkPolicy,
    Objects,
    ScaledObject,
    Service,
    Trigger,
    TriggerAuthentication,
    Workload,
    load_documents,
    load_kustomization,
    redis_cli,
    render,
    settings_keys,
    start_redis_script,
    wait_for_redis,
)

BASE = Objects(render(K8S_BASE))
CONFIG = BASE.config_map("model-trainer-config")
NAMESPACE = "model-trainer"
# The oldest Kubernetes release docs/deploy.md promises, and the newest the installed schemas know.
VERSIONS = ("1.29", kubernetes_validate.latest_version())
WORKERS = {"tokenizer-worker": "QUEUE__TOKENIZER", "trainer-worker": "QUEUE__TRAINING"}
# The webhook worker: a worker too, but it needs neither the data claims nor the object store, and its
# short network calls are not scaled by queue depth.
WEBHOOK_WORKER = "webhook-worker"
ALL_WORKERS = (*WORKERS, WEBHOOK_WORKER)
STORAGE_SERVICES = [name for name in SERVICES if name != WEBHOOK_WORKER]
SECRET = "model-trainer-secrets"
# The app's own routes, without starting it (create_app connects to nothing until its lifespan starts).
ROUTE_PATHS = {route.path for route in create_app(ApiSettings()).routes}


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


@pytest.mark.parametrize("directory", [K8S_BASE, K8S_KEDA, K8S_OBJECT_STORE], ids=["base", "keda", "object-store"])
def test_each_kustomization_lists_every_manifest_in_its_folder(directory: Path) -> None:
    kustomization = load_kustomization(directory)
    local = {entry for entry in kustomization.resources if "/" not in entry}
    local |= {patch.path for patch in kustomization.patches if patch.path is not None}
    on_disk = {path.name for path in directory.glob("*.yaml")} - {KUSTOMIZATION}
    assert local == on_disk


def test_base_holds_the_deployment() -> None:
    assert sorted(f"{header.kind}/{header.metadata.name}" for header in BASE.headers) == sorted(
        [
            "Namespace/model-trainer",
            "ConfigMap/model-trainer-config",
            "PersistentVolumeClaim/model-trainer-data",
            "PersistentVolumeClaim/model-trainer-corpus",
            "Service/redis",
            "StatefulSet/redis",
            "Deployment/api",
            "Service/api",
            "HorizontalPodAutoscaler/api",
            "Deployment/tokenizer-worker",
            "Deployment/trainer-worker",
            "Deployment/webhook-worker",
            "NetworkPolicy/redis",
            "NetworkPolicy/api",
            "NetworkPolicy/workers",
        ]
    )
    assert load_kustomization(K8S_BASE).namespace == NAMESPACE


def test_config_map_sets_only_settings_keys_with_valid_values() -> None:
    assert set(CONFIG.data) <= settings_keys(), sorted(set(CONFIG.data) - settings_keys())
    api = from_env(ApiSettings, CONFIG.data)
    worker = from_env(WorkerServiceSettings, CONFIG.data)
    assert (api.redis.url, worker.redis.url) == ("redis://redis:6379/0", "redis://redis:6379/0")
    assert api.http.host == "0.0.0.0"


def _secret_refs(container: Container) -> dict[str, tuple[str, str, bool]]:
    """Environment variables taken from a Secret: name -> (secret, key, optional)."""
    refs = {}
    for var in container.env:
        if var.value_from is not None and var.value_from.secret_key_ref is not None:
            ref = var.value_from.secret_key_ref
            refs[var.name] = (ref.name, ref.key, ref.optional)
    return refs


@pytest.mark.parametrize("directory", [K8S_BASE, K8S_KEDA, K8S_OBJECT_STORE], ids=["base", "keda", "object-store"])
def test_no_kustomization_ships_a_secret_that_apply_would_overwrite(directory: Path) -> None:
    assert Objects(render(directory)).names("Secret") == []
    kustomization = (directory / KUSTOMIZATION).read_text()
    assert "secretGenerator" not in kustomization and "stringData" not in kustomization


def test_pods_read_their_secrets_from_the_existing_secret_each_only_its_own() -> None:
    s3 = {
        "STORAGE__S3_ACCESS_KEY_ID": (SECRET, "STORAGE__S3_ACCESS_KEY_ID", True),
        "STORAGE__S3_SECRET_ACCESS_KEY": (SECRET, "STORAGE__S3_SECRET_ACCESS_KEY", True),
    }
    api = _app_container(BASE.workload("Deployment", "api"))
    # API__KEYS is required: without it the pod does not start, rather than serve without authentication.
    assert _secret_refs(api) == {
        "API__KEYS": (SECRET, "API__KEYS", False),
        "API__READ_ONLY_KEYS": (SECRET, "API__READ_ONLY_KEYS", True),
        "REDIS__PASSWORD": (SECRET, "REDIS__PASSWORD", False),
        **s3,
    }
    for name in WORKERS:
        worker = _app_container(BASE.workload("Deployment", name))
        assert _secret_refs(worker) == {"REDIS__PASSWORD": (SECRET, "REDIS__PASSWORD", False), **s3}, name
    webhook_worker = _app_container(BASE.workload("Deployment", WEBHOOK_WORKER))
    assert _secret_refs(webhook_worker) == {"REDIS__PASSWORD": (SECRET, "REDIS__PASSWORD", False)}
    redis_container = _app_container(BASE.workload("StatefulSet", "redis"))
    assert _secret_refs(redis_container) == {
        "REDIS__PASSWORD": (SECRET, "REDIS__PASSWORD", False),
        "REDISCLI_AUTH": (SECRET, "REDIS__PASSWORD", False),
    }
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert f"kubectl -n {NAMESPACE} create secret generic {SECRET}" in docs
    for key in ("API__KEYS", "API__READ_ONLY_KEYS", "REDIS__PASSWORD"):
        assert f"{key}=" in docs, key


def test_each_service_runs_its_module_from_the_image() -> None:
    for name, module in SERVICES.items():
        container = _app_container(BASE.workload("Deployment", name))
        assert (container.image, container.command) == ("model-trainer", ["python", "-m", module])


def test_api_probes_are_routes_of_the_app_and_served_on_the_configured_port() -> None:
    assert {"/healthz", "/readyz"} <= ROUTE_PATHS
    api = _app_container(BASE.workload("Deployment", "api"))
    probes = [api.startup_probe, api.readiness_probe, api.liveness_probe]
    assert all(
        probe is not None and probe.http_get is not None and probe.http_get.path in ROUTE_PATHS for probe in probes
    )
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


@pytest.mark.parametrize("name", sorted(ALL_WORKERS))
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
    statefulset = BASE.workload("StatefulSet", "redis")
    container = _app_container(statefulset)
    assert container.image.startswith("redis:7")
    assert container.command[:2] == ["sh", "-c"]
    assert "exec redis-server --appendonly yes --appendfsync everysec --dir /data - <<EOF" in container.command[2]
    (claim,) = statefulset.spec.volume_claim_templates
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [(claim.metadata.name, "/data")]
    assert container.readiness_probe is not None and container.readiness_probe.exec is not None


def test_redis_start_script_and_probe_require_the_secrets_password(tmp_path: Path) -> None:
    container = _app_container(BASE.workload("StatefulSet", "redis"))
    script = container.command[2]
    empty, _ = start_redis_script(script, tmp_path, "")
    _, stderr = empty.communicate(timeout=10)
    assert (empty.returncode, stderr) == (1, b"redis: REDIS__PASSWORD is empty in Secret/model-trainer-secrets\n")
    password = "k8s-redis-password-0123456789"
    process, port = start_redis_script(script, tmp_path, password)
    try:
        wait_for_redis(process, port, password).close()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port).ping()
        for probe in (container.readiness_probe, container.liveness_probe):
            assert probe is not None and probe.exec is not None
            command = [part.replace("redis-cli ping", f"{redis_cli()} -p {port} ping") for part in probe.exec.command]
            for auth, expected in ((password, 0), ("wrong", 1)):
                result = subprocess.run(command, env={"PATH": "/usr/bin:/bin", "REDISCLI_AUTH": auth}, check=False)
                assert result.returncode == expected, auth
    finally:
        process.terminate()
        process.communicate(timeout=10)


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
    webhook_pod = BASE.workload("Deployment", WEBHOOK_WORKER).spec.template.spec
    assert [v.persistent_volume_claim for v in webhook_pod.volumes if v.persistent_volume_claim is not None] == []
    for name in STORAGE_SERVICES:
        pod = BASE.workload("Deployment", name).spec.template.spec
        sources = {v.name: v.persistent_volume_claim for v in pod.volumes if v.persistent_volume_claim is not None}
        assert {source.claim_name for source in sources.values()} <= set(claims)
        mounts = {
            m.mount_path: (sources[m.name].claim_name, m.read_only)
            for m in pod.containers[0].volume_mounts
            if m.name in sources
        }
        # The API too, read-write: it reads what the workers write and writes exports; it alone writes the
        # corpus root (uploads).
        assert mounts == {
            CONFIG.data["APP__CORPUS_ROOT"]: ("model-trainer-corpus", name != "api"),
            str(data_root): ("model-trainer-data", False),
        }, name


def test_keda_overlay_scales_each_worker_on_its_own_queue() -> None:
    kustomization = load_kustomization(K8S_KEDA)
    assert kustomization.resources[0] == "../base"
    assert load_kustomization(K8S_BASE).resources.count("scaledobjects.yaml") == 0  # base needs no KEDA CRDs
    overlay = Objects(render(K8S_KEDA))
    assert overlay.documents[: len(BASE.documents)] == BASE.documents
    added = list(zip(overlay.headers[len(BASE.documents) :], overlay.documents[len(BASE.documents) :], strict=True))
    scaled = [msgspec.convert(d, ScaledObject) for header, d in added if header.kind == "ScaledObject"]
    (auth,) = [
        msgspec.convert(d, TriggerAuthentication) for header, d in added if header.kind == "TriggerAuthentication"
    ]
    assert [(t.parameter, t.name, t.key) for t in auth.spec.secret_target_ref] == [
        ("password", SECRET, "REDIS__PASSWORD")
    ]
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
                authentication_ref=NameRef(auth.metadata.name),
            )
        ]
        for name, queue_key in WORKERS.items()
    }
    for scaled_object in scaled:
        assert scaled_object.api_version == "keda.sh/v1alpha1"
        assert scaled_object.spec.scale_target_ref.name in overlay.names("Deployment")
        # The API is ready only while a worker of each kind is alive: never scale a kind to zero.
        assert 1 <= scaled_object.spec.min_replica_count < scaled_object.spec.max_replica_count
    assert sorted(patch.target.name for patch in kustomization.patches if patch.target) == sorted(WORKERS)
    for patch in kustomization.patches:
        assert patch.target is not None and patch.target.kind == "Deployment"
        assert overlay.workload("Deployment", patch.target.name).spec.replicas is not None
        assert "path: /spec/replicas" in patch.patch


def _policy(objects: Objects, name: str) -> NetworkPolicy:
    return msgspec.convert(objects.raw("NetworkPolicy", name), NetworkPolicy)


def _selected(policy_selector_labels: NetworkPolicy, objects: Objects) -> set[str]:
    return {
        w.metadata.name
        for w in objects.workloads()
        if policy_selector_labels.spec.pod_selector.selects(w.spec.template.metadata.labels)
    }


def _peer_workloads(policy: NetworkPolicy, objects: Objects) -> set[str]:
    (rule,) = policy.spec.ingress
    return {
        w.metadata.name
        for w in objects.workloads()
        for peer in rule.from_
        if peer.pod_selector is not None and peer.pod_selector.selects(w.spec.template.metadata.labels)
    }


def _port_names(objects: Objects, names: set[str]) -> set[str | int]:
    return {
        port.name or port.container_port
        for name in names
        for container in next(w for w in objects.workloads() if w.metadata.name == name).spec.template.spec.containers
        for port in container.ports
    }


def test_only_the_api_and_the_workers_reach_redis() -> None:
    policy = _policy(BASE, "redis")
    assert _selected(policy, BASE) == {"redis"}
    assert policy.spec.policy_types == ["Ingress"]
    assert _peer_workloads(policy, BASE) == {"api", *ALL_WORKERS}
    (rule,) = policy.spec.ingress
    assert all(peer.namespace_selector is None for peer in rule.from_)  # this namespace only
    assert {port.port for port in rule.ports} == {"redis"} <= _port_names(BASE, {"redis"})


def test_only_the_ingress_controller_reaches_the_api_and_nobody_the_workers() -> None:
    api = _policy(BASE, "api")
    assert _selected(api, BASE) == {"api"}
    (rule,) = api.spec.ingress
    assert [peer.pod_selector for peer in rule.from_] == [None]
    (peer,) = rule.from_
    assert peer.namespace_selector is not None
    assert peer.namespace_selector.match_labels == {"kubernetes.io/metadata.name": "ingress-nginx"}
    assert {port.port for port in rule.ports} == {"http"} <= _port_names(BASE, {"api"})
    workers = _policy(BASE, "workers")
    assert _selected(workers, BASE) == set(ALL_WORKERS)
    assert (workers.spec.policy_types, workers.spec.ingress) == (["Ingress"], [])
    # Every pod is under a policy.
    covered = set().union(*(_selected(_policy(BASE, name), BASE) for name in BASE.names("NetworkPolicy")))
    assert covered == {w.metadata.name for w in BASE.workloads()}


def test_keda_overlay_lets_only_the_keda_namespace_through_to_redis() -> None:
    overlay = Objects(render(K8S_KEDA))
    policy = _policy(overlay, "redis-from-keda")
    assert _selected(policy, overlay) == {"redis"}
    (rule,) = policy.spec.ingress
    (peer,) = rule.from_
    assert peer.pod_selector is None and peer.namespace_selector is not None
    assert peer.namespace_selector.match_labels == {"kubernetes.io/metadata.name": "keda"}


def test_object_store_overlay_sets_s3_storage_and_gives_each_pod_a_private_data_folder() -> None:
    kustomization = load_kustomization(K8S_OBJECT_STORE)
    assert kustomization.resources == ["../base"]
    (config_patch,) = [patch.path for patch in kustomization.patches if patch.path is not None]
    (document,) = load_documents(K8S_OBJECT_STORE / config_patch)
    config = msgspec.convert(document, ConfigMap)
    assert config.metadata.name == CONFIG.metadata.name
    assert set(config.data) <= settings_keys()
    merged = {**CONFIG.data, **config.data}
    for storage in (from_env(ApiSettings, merged).storage, from_env(WorkerServiceSettings, merged).storage):
        assert (storage.backend, storage.s3_bucket) == ("s3", "model-trainer")
    targets = {patch.target.name: patch.patch for patch in kustomization.patches if patch.target is not None}
    # No ReadWriteMany claim is left: corpora reach the workers through the bucket too.
    for claim in ("model-trainer-data", "model-trainer-corpus"):
        assert "$patch: delete" in targets.pop(claim)
        assert BASE.names("PersistentVolumeClaim").count(claim) == 1
    assert sorted(targets) == sorted(STORAGE_SERVICES)
    for name, patch in targets.items():
        # The patch replaces volumes 0 and 1, in the base the data and corpus claims the pod mounts at /data
        # and /corpus, and makes the workers' corpus mount writable (they pull uploaded corpora into it).
        assert "path: /spec/template/spec/volumes/0" in patch and "{name: data, emptyDir:" in patch, name
        assert "path: /spec/template/spec/volumes/1" in patch and "{name: corpus, emptyDir:" in patch, name
        pod = BASE.workload("Deployment", name).spec.template.spec
        for index, (claim, volume, path) in enumerate(
            [("model-trainer-data", "data", "/data"), ("model-trainer-corpus", "corpus", "/corpus")]
        ):
            source = pod.volumes[index]
            assert source.name == volume and source.persistent_volume_claim is not None, name
            assert source.persistent_volume_claim.claim_name == claim, name
            assert any(m.name == volume and m.mount_path == path for m in pod.containers[0].volume_mounts), name
        mount = pod.containers[0].volume_mounts[1]
        assert mount.name == "corpus", name
        removes_read_only = "path: /spec/template/spec/containers/0/volumeMounts/1/readOnly" in patch
        assert removes_read_only == mount.read_only, name


def test_the_docs_name_every_object_of_the_base_and_every_setting_it_sets() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text()
    created = docs[docs.index("What `deploy/k8s/base` creates") : docs.index("Each pod takes from")]
    objects = [f"{header.kind}/{header.metadata.name}" for header in BASE.headers if header.kind != "Namespace"]
    assert [name for name in objects if f"`{name}`" not in created] == []
    table = docs[docs.index("## Settings keys") : docs.index("## Live streams")]
    documented = [key for key in CONFIG.data if f"`{key}`" in table or f"`{key.partition('__')[0]}__*`" in table]
    assert sorted(documented) == sorted(CONFIG.data)
    # Every section the services read has its row (WEBHOOKS__*, read by the API and the webhook worker).
    assert [
        section
        for section in ("REDIS", "APP", "STORAGE", "QUEUE", "HTTP", "API", "WORKER", "WEBHOOKS")
        if f"`{section}__" not in table
    ] == []
