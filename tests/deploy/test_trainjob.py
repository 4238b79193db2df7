"""The Kubeflow Trainer overlay (deploy/k8s/trainjob) and the TrainJob the k8s-trainjob launcher renders,
checked statically. The TrainJob CRD's schema is not shipped offline (kubernetes-validate knows only the
built-in kinds), so the TrainJob is checked by structure against what the launcher and the base rely on; the
built-in objects (ServiceAccount, Role, RoleBinding) against the Kubernetes schema."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import msgspec
import pytest

from mt_contracts.requests import TrainRunRequest
from mt_contracts.settings import LauncherSettings, WorkerServiceSettings, from_env
from mt_trainer_worker.launchers.trainjob import GROUP, NODE, TORCHRUN, render_trainjob
from tests.deploy.manifests import (
    DEPLOY,
    K8S_BASE,
    KUSTOMIZATION,
    Document,
    Objects,
    load_documents,
    load_kustomization,
    render,
    settings_keys,
)

K8S_TRAINJOB = DEPLOY / "k8s" / "trainjob"
RBAC = load_documents(K8S_TRAINJOB / "rbac.yaml")
REQUEST = TrainRunRequest(
    tokenizer_id="tok_01JDQ8ZQ0000000000000000AA", corpus_path="small.txt", launcher="k8s-trainjob", nnodes=3,
    nproc_per_node=4,
)  # fmt: skip


def test_the_overlay_lists_every_manifest_in_its_folder_on_top_of_the_base() -> None:
    kustomization = load_kustomization(K8S_TRAINJOB)
    assert kustomization.resources[0] == "../base"
    local = {entry for entry in kustomization.resources if "/" not in entry}
    local |= {patch.path for patch in kustomization.patches if patch.path is not None}
    assert local == {path.name for path in K8S_TRAINJOB.glob("*.yaml")} - {KUSTOMIZATION}


@pytest.mark.parametrize("document", RBAC, ids=lambda d: str(msgspec.convert(d, dict[str, object])["kind"]))
def test_rbac_objects_match_the_kubernetes_schema(document: Document) -> None:
    kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


class Rule(msgspec.Struct, frozen=True, rename="camel"):
    api_groups: list[str]
    resources: list[str]
    verbs: list[str]


class Role(msgspec.Struct, frozen=True):
    rules: list[Rule]


def test_the_role_grants_exactly_the_calls_the_launcher_makes() -> None:
    (role,) = [msgspec.convert(d, Role) for d in RBAC if d["kind"] == "Role"]
    granted = {
        (group, resource, verb)
        for rule in role.rules
        for group in rule.api_groups
        for resource in rule.resources
        for verb in rule.verbs
    }
    assert granted == {(GROUP, "trainjobs", verb) for verb in ("create", "get", "list", "watch", "delete")} | {
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods/log", "get"),
    }


def test_the_launcher_config_sets_launcher_settings_that_match_the_base() -> None:
    (config,) = load_documents(K8S_TRAINJOB / "launcher-config.yaml")
    data = msgspec.convert(config["data"], dict[str, str])
    assert set(data) <= settings_keys()
    settings = from_env(WorkerServiceSettings, data).launcher
    base = Objects(render(K8S_BASE))
    claims = {header.metadata.name for header in base.headers if header.kind == "PersistentVolumeClaim"}
    assert settings.k8s_data_claim in claims
    roots = base.config_map("model-trainer-config").data
    assert roots["APP__RUNS_ROOT"].startswith(settings.k8s_data_mount + "/")


class Trainer(msgspec.Struct, frozen=True, rename="camel"):
    image: str
    command: list[str]
    num_nodes: int
    num_proc_per_node: int


class RuntimeRef(msgspec.Struct, frozen=True, rename="camel"):
    name: str
    api_group: str
    kind: str


class Override(msgspec.Struct, frozen=True, rename="camel"):
    target_jobs: list[dict[str, str]]
    spec: dict[str, object]


class TrainJobSpec(msgspec.Struct, frozen=True, rename="camel"):
    runtime_ref: RuntimeRef
    trainer: Trainer
    pod_template_overrides: list[Override]


class TrainJob(msgspec.Struct, frozen=True, rename="camel"):
    api_version: str
    kind: str
    metadata: dict[str, object]
    spec: TrainJobSpec


def test_the_rendered_trainjob_runs_torchrun_on_the_shared_volume() -> None:
    settings = LauncherSettings(k8s_image="registry.example/model-trainer:1")
    spec_path = Path("/data/runs/run_x/spec.json")
    job = msgspec.convert(render_trainjob("run-x-1-5", "run_X", REQUEST, spec_path, settings), TrainJob)
    assert (job.api_version, job.kind) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert job.metadata["name"] == "run-x-1-5" and job.metadata["namespace"] == settings.k8s_namespace
    assert job.spec.runtime_ref == RuntimeRef("torch-distributed", GROUP, "ClusterTrainingRuntime")
    assert (job.spec.trainer.num_nodes, job.spec.trainer.num_proc_per_node) == (3, 4)
    assert job.spec.trainer.image == "registry.example/model-trainer:1"
    assert job.spec.trainer.command == [*TORCHRUN, "-m", "mt_trainer_worker.training", "--spec-file", str(spec_path)]
    assert "--max-restarts" in TORCHRUN and TORCHRUN[TORCHRUN.index("--max-restarts") + 1] == "0"
    (override,) = job.spec.pod_template_overrides
    assert override.target_jobs == [{"name": NODE}]
    assert override.spec == {
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "model-trainer-data"}}],
        "containers": [{"name": NODE, "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
    }
