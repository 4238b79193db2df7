"""The deployment files as typed values: YAML loading, kustomize rendering (resources only), the settings keys
the code accepts, and msgspec Structs for the parts of compose and Kubernetes objects the tests assert on.

The Structs ignore fields they do not name: schema conformance is checked by check-jsonschema (compose) and
kubernetes-validate (Kubernetes); these only make the assertions typed.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import TypeVar

import msgspec
import redis
import yaml

from mt_contracts.settings import ApiSettings, WorkerServiceSettings
from mt_storage.embedded_redis import find_redis_server, free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yml"
K8S_BASE = DEPLOY / "k8s" / "base"
K8S_KEDA = DEPLOY / "k8s" / "keda"
K8S_OBJECT_STORE = DEPLOY / "k8s" / "object-store"
KUSTOMIZATION = "kustomization.yaml"

Document = dict[str, object]
S = TypeVar("S", bound=msgspec.Struct)


def settings_keys() -> frozenset[str]:
    """Every environment variable the services read: ``SECTION__FIELD`` for each field of each section of
    ``ApiSettings`` and ``WorkerServiceSettings``."""
    keys: set[str] = set()
    for settings_type in (ApiSettings, WorkerServiceSettings):
        for section in msgspec.structs.fields(settings_type):
            section_type = section.type
            assert isinstance(section_type, type) and issubclass(section_type, msgspec.Struct), section
            keys.update(f"{section.name}__{field.name}".upper() for field in msgspec.structs.fields(section_type))
    return frozenset(keys)


def load_documents(path: Path) -> list[Document]:
    """The YAML documents of ``path`` (empty ones dropped); each must be a mapping with string keys."""
    documents: list[Document] = []
    for loaded in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        raw: object = loaded
        if raw is None:
            continue
        documents.append(msgspec.convert(raw, Document))
    return documents


def load_yaml(path: Path, into: type[S]) -> S:
    """The single YAML document of ``path`` as ``into``."""
    raw: object = yaml.safe_load(path.read_text(encoding="utf-8"))
    return msgspec.convert(raw, into)


def seconds(duration: str) -> float:
    """A compose duration such as ``90s``, ``2m`` or ``1m30s``, in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    if not parts or "".join(number + unit for number, unit in parts) != duration:
        raise ValueError(f"not a compose duration: {duration!r}")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    return sum(float(number) * scale[unit] for number, unit in parts)


def start_redis_script(script: str, data_dir: Path, password: str) -> tuple[subprocess.Popen[bytes], int]:
    """A deployment's Redis start script (shell that ends in ``exec redis-server ...``), run by ``sh`` with
    ``REDIS__PASSWORD=password`` and a local redis-server on a free port of 127.0.0.1, its data in
    ``data_dir``. Returns the process and the port; stop it with ``terminate`` and ``communicate``."""
    port = free_port()
    local = f"exec {find_redis_server()} --port {port} --bind 127.0.0.1 "
    script = re.sub(r"--dir \S+ ", "", script).replace("exec redis-server ", local + f"--dir {data_dir} ")
    env = {**os.environ, "REDIS__PASSWORD": password}
    process = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return process, port


def wait_for_redis(process: subprocess.Popen[bytes], port: int, password: str) -> redis.Redis:
    """A client of the Redis that ``start_redis_script`` started, once it answers PING with ``password``."""
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return client
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.05)


def redis_cli() -> str:
    """The redis-cli beside the redis-server the tests use."""
    return str(find_redis_server().with_name("redis-cli"))


# ---- compose ----


class Build(msgspec.Struct, frozen=True):
    context: str
    dockerfile: str = "Dockerfile"


class EnvFile(msgspec.Struct, frozen=True):
    path: str
    required: bool = True


class DependsOn(msgspec.Struct, frozen=True):
    condition: str
    required: bool = True


class Healthcheck(msgspec.Struct, frozen=True):
    test: list[str]
    interval: str = "30s"
    timeout: str = "30s"
    retries: int = 3
    start_period: str = "0s"


class ServiceDeploy(msgspec.Struct, frozen=True):
    replicas: int | str = 1


class ComposeService(msgspec.Struct, frozen=True):
    image: str | None = None
    build: Build | None = None
    command: list[str] = []
    entrypoint: list[str] = []
    profiles: list[str] = []
    environment: dict[str, str] = {}
    env_file: list[EnvFile] = []
    volumes: list[str] = []
    ports: list[str] = []
    depends_on: dict[str, DependsOn] = {}
    healthcheck: Healthcheck | None = None
    deploy: ServiceDeploy | None = None
    stop_grace_period: str = "10s"
    restart: str = "no"


class ComposeFile(msgspec.Struct, frozen=True):
    name: str
    services: dict[str, ComposeService]
    volumes: dict[str, dict[str, str] | None] = {}


def load_compose() -> ComposeFile:
    return load_yaml(COMPOSE, ComposeFile)


# ---- kustomize ----


class PatchTarget(msgspec.Struct, frozen=True):
    kind: str
    name: str


class Patch(msgspec.Struct, frozen=True):
    """A patch inline (``patch``, with its ``target``) or in a file (``path``, a strategic merge patch)."""

    target: PatchTarget | None = None
    patch: str = ""
    path: str | None = None


class Kustomization(msgspec.Struct, frozen=True, rename="camel"):
    api_version: str
    kind: str
    resources: list[str] = []
    namespace: str | None = None
    patches: list[Patch] = []


def load_kustomization(directory: Path) -> Kustomization:
    return load_yaml(directory / KUSTOMIZATION, Kustomization)


def render(directory: Path) -> list[Document]:
    """The objects of the kustomization in ``directory``: its ``resources`` in order, folders rendered
    recursively. Transformers (namespace, labels, images, patches) are not applied: the tests check the
    files as written, and the patches separately."""
    documents: list[Document] = []
    for entry in load_kustomization(directory).resources:
        path = (directory / entry).resolve()
        documents.extend(render(path) if path.is_dir() else load_documents(path))
    return documents


# ---- Kubernetes objects ----


class ObjectMeta(msgspec.Struct, frozen=True):
    name: str = ""
    labels: dict[str, str] = {}


class Header(msgspec.Struct, frozen=True, rename="camel"):
    api_version: str
    kind: str
    metadata: ObjectMeta


class ConfigMap(msgspec.Struct, frozen=True):
    metadata: ObjectMeta
    data: dict[str, str] = {}


class Secret(msgspec.Struct, frozen=True, rename="camel"):
    metadata: ObjectMeta
    string_data: dict[str, str] = {}


class HttpGet(msgspec.Struct, frozen=True):
    path: str
    port: str | int


class ExecAction(msgspec.Struct, frozen=True):
    command: list[str]


class Probe(msgspec.Struct, frozen=True, rename="camel"):
    http_get: HttpGet | None = None
    exec: ExecAction | None = None
    period_seconds: int = 10
    timeout_seconds: int = 1
    failure_threshold: int = 3


class SecurityContext(msgspec.Struct, frozen=True, rename="camel"):
    run_as_non_root: bool | None = None
    run_as_user: int | None = None
    read_only_root_filesystem: bool | None = None
    allow_privilege_escalation: bool | None = None


class NameRef(msgspec.Struct, frozen=True):
    name: str


class EnvFromSource(msgspec.Struct, frozen=True, rename="camel"):
    config_map_ref: NameRef | None = None
    secret_ref: NameRef | None = None


class SecretKeyRef(msgspec.Struct, frozen=True):
    name: str
    key: str
    optional: bool = False


class EnvSource(msgspec.Struct, frozen=True, rename="camel"):
    secret_key_ref: SecretKeyRef | None = None


class EnvVar(msgspec.Struct, frozen=True, rename="camel"):
    name: str
    value: str | None = None
    value_from: EnvSource | None = None


class ContainerPort(msgspec.Struct, frozen=True, rename="camel"):
    container_port: int
    name: str | None = None


class Resources(msgspec.Struct, frozen=True):
    requests: dict[str, str | int] = {}
    limits: dict[str, str | int] = {}


class VolumeMount(msgspec.Struct, frozen=True, rename="camel"):
    name: str
    mount_path: str
    read_only: bool = False


class Container(msgspec.Struct, frozen=True, rename="camel"):
    name: str
    image: str
    command: list[str] = []
    args: list[str] = []
    env: list[EnvVar] = []
    env_from: list[EnvFromSource] = []
    ports: list[ContainerPort] = []
    startup_probe: Probe | None = None
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    resources: Resources = Resources()
    security_context: SecurityContext = SecurityContext()
    volume_mounts: list[VolumeMount] = []


class ClaimSource(msgspec.Struct, frozen=True, rename="camel"):
    claim_name: str
    read_only: bool = False


class EmptyDir(msgspec.Struct, frozen=True, rename="camel"):
    size_limit: str | None = None


class Volume(msgspec.Struct, frozen=True, rename="camel"):
    name: str
    persistent_volume_claim: ClaimSource | None = None
    empty_dir: EmptyDir | None = None


class PodSpec(msgspec.Struct, frozen=True, rename="camel"):
    containers: list[Container]
    volumes: list[Volume] = []
    security_context: SecurityContext = SecurityContext()
    termination_grace_period_seconds: int = 30
    automount_service_account_token: bool | None = None


class PodTemplate(msgspec.Struct, frozen=True):
    metadata: ObjectMeta
    spec: PodSpec


class LabelSelector(msgspec.Struct, frozen=True, rename="camel"):
    match_labels: dict[str, str]


class ClaimSpec(msgspec.Struct, frozen=True, rename="camel"):
    access_modes: list[str]


class ClaimTemplate(msgspec.Struct, frozen=True):
    metadata: ObjectMeta
    spec: ClaimSpec


class WorkloadSpec(msgspec.Struct, frozen=True, rename="camel"):
    selector: LabelSelector
    template: PodTemplate
    replicas: int | None = None
    volume_claim_templates: list[ClaimTemplate] = []


class Workload(msgspec.Struct, frozen=True):
    """A Deployment or StatefulSet."""

    kind: str
    metadata: ObjectMeta
    spec: WorkloadSpec


class ServicePort(msgspec.Struct, frozen=True, rename="camel"):
    port: int
    target_port: str | int | None = None


class ServiceSpec(msgspec.Struct, frozen=True):
    selector: dict[str, str]
    ports: list[ServicePort]


class Service(msgspec.Struct, frozen=True):
    metadata: ObjectMeta
    spec: ServiceSpec


class ClaimObject(msgspec.Struct, frozen=True):
    metadata: ObjectMeta
    spec: ClaimSpec


class TargetRef(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    name: str
    kind: str = "Deployment"
    api_version: str = "apps/v1"


class AutoscalerSpec(msgspec.Struct, frozen=True, rename="camel"):
    scale_target_ref: TargetRef
    min_replicas: int
    max_replicas: int


class Autoscaler(msgspec.Struct, frozen=True):
    metadata: ObjectMeta
    spec: AutoscalerSpec


# KEDA's ScaledObject has no schema in kubernetes-validate: these Structs forbid unknown fields and stand in
# for it, covering the fields our overlay uses (keda.sh/v1alpha1, redis scaler).


class Trigger(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    type: str
    metadata: dict[str, str]
    authentication_ref: NameRef | None = None


class ScaledObjectSpec(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    scale_target_ref: TargetRef
    triggers: list[Trigger]
    min_replica_count: int = 0
    max_replica_count: int = 100
    polling_interval: int = 30
    cooldown_period: int = 300


class ScaledObjectMeta(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    labels: dict[str, str] = {}


class ScaledObject(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    api_version: str
    kind: str
    metadata: ScaledObjectMeta
    spec: ScaledObjectSpec


class SecretTarget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    parameter: str
    name: str
    key: str


class TriggerAuthenticationSpec(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    secret_target_ref: list[SecretTarget]


class TriggerAuthentication(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    api_version: str
    kind: str
    metadata: ScaledObjectMeta
    spec: TriggerAuthenticationSpec


class LabelRequirement(msgspec.Struct, frozen=True):
    key: str
    operator: str
    values: list[str] = []


class Selector(msgspec.Struct, frozen=True, rename="camel"):
    match_labels: dict[str, str] = {}
    match_expressions: list[LabelRequirement] = []

    def selects(self, labels: dict[str, str]) -> bool:
        """Whether pods (or namespaces) with ``labels`` match (operators In and NotIn, as our files use)."""
        if not self.match_labels.items() <= labels.items():
            return False
        for requirement in self.match_expressions:
            if requirement.operator not in {"In", "NotIn"}:
                raise AssertionError(f"operator {requirement.operator} is not handled here")
            inside = labels.get(requirement.key) in requirement.values
            if inside != (requirement.operator == "In"):
                return False
        return True


class PolicyPeer(msgspec.Struct, frozen=True, rename="camel"):
    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None


class PolicyPort(msgspec.Struct, frozen=True):
    port: str | int
    protocol: str = "TCP"


class IngressRule(msgspec.Struct, frozen=True, rename={"from_": "from"}):
    from_: list[PolicyPeer] = []
    ports: list[PolicyPort] = []


class NetworkPolicySpec(msgspec.Struct, frozen=True, rename="camel"):
    pod_selector: Selector
    policy_types: list[str]
    ingress: list[IngressRule] = []


class NetworkPolicy(msgspec.Struct, frozen=True):
    metadata: ObjectMeta
    spec: NetworkPolicySpec


class Objects:
    """A rendered kustomization's objects, looked up by kind and name and decoded into the Structs above."""

    def __init__(self, documents: list[Document]) -> None:
        self.documents = documents
        self.headers = [msgspec.convert(document, Header) for document in documents]

    def names(self, kind: str) -> list[str]:
        return [header.metadata.name for header in self.headers if header.kind == kind]

    def raw(self, kind: str, name: str) -> Document:
        for header, document in zip(self.headers, self.documents, strict=True):
            if (header.kind, header.metadata.name) == (kind, name):
                return document
        raise AssertionError(f"no {kind} named {name!r}")

    def workloads(self) -> list[Workload]:
        return [
            msgspec.convert(document, Workload)
            for header, document in zip(self.headers, self.documents, strict=True)
            if header.kind in {"Deployment", "StatefulSet"}
        ]

    def workload(self, kind: str, name: str) -> Workload:
        return msgspec.convert(self.raw(kind, name), Workload)

    def config_map(self, name: str) -> ConfigMap:
        return msgspec.convert(self.raw("ConfigMap", name), ConfigMap)
