"""The ``k8s-trainjob`` launcher: the run's ranks as a Kubeflow Trainer ``TrainJob`` (``trainer.kubeflow.org/
v1alpha1``, the successor of ``PyTorchJob``), on the ``torch-distributed`` runtime, which runs torchrun in each
of ``nnodes`` pods (``PET_*`` variables give it the shape and the rendezvous).

The worker's child for such a run is a watcher, ``python -m mt_trainer_worker.launchers.trainjob --plan F``
(``F`` a ``TrainJobPlan``): it creates the TrainJob through the Kubernetes API, follows the log of the pod of
node 0 (where global rank 0 runs) and relays its typed message lines on its own stdout, so the job runner
sees what a local torchrun would have written; other lines go to its stderr, the run's process log. A stop
(SIGTERM) deletes the TrainJob: Kubernetes sends every pod SIGTERM, rank 0 writes its stop checkpoint, and the
watcher relays it until the log ends. It exits 0 when the TrainJob completed, 1 otherwise. The pods read the
spec and write checkpoints and artifacts on the shared volume (``LAUNCHER__K8S_DATA_CLAIM``), mounted where
the worker has its roots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import httpx
import msgspec

from mt_contracts import codec
from mt_contracts.jobs import RunJob
from mt_contracts.requests import TrainRunRequest
from mt_contracts.settings import LauncherSettings
from mt_storage.files import atomic_write_bytes
from mt_storage.process import CHILD_ENV, Command
from mt_trainer_worker.launchers import LaunchContext

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
# The runtime's job and container that run the trainer (Kubeflow Trainer's ``node`` replicated job).
NODE = "node"
IN_CLUSTER = "https://kubernetes.default.svc"
# torchrun in the trainer image, without elastic restarts (a failed rank fails the launch; the job service
# starts the group again from the last checkpoint).
TORCHRUN = ("python", "-m", "torch.distributed.run", "--max-restarts", "0")


class TrainJobPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What the watcher needs: the API server and credentials files, the namespace, the TrainJob."""

    api_url: str
    token_path: str
    ca_path: str
    namespace: str
    name: str
    poll_seconds: float
    trainjob: dict[str, object]


def trainjob_name(job: RunJob) -> str:
    """A DNS-1035 name unique to the launch: the run id in lower case, the attempt and the launch time."""
    return f"{job.id.lower().replace('_', '-')}-{job.attempts}-{int(time.time()) % 100_000}"


def render_trainjob(
    name: str, run_id: str, request: TrainRunRequest, spec_path: Path, settings: LauncherSettings
) -> dict[str, object]:
    """The TrainJob of one launch: ``nnodes`` pods of ``nproc_per_node`` ranks each, torchrun without
    elastic restarts, the shared volume mounted at ``k8s_data_mount``."""
    threads = max(1, (request.threads or 1) // request.nproc_per_node) if request.threads else 0
    env = [{"name": key, "value": value} for key, value in sorted(CHILD_ENV.items())]
    if threads:
        env.append({"name": "OMP_NUM_THREADS", "value": str(threads)})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {
            "name": name,
            "namespace": settings.k8s_namespace,
            "labels": {"app.kubernetes.io/name": "model-trainer", "model-trainer/run-id": run_id.lower()},
        },
        "spec": {
            "runtimeRef": {"name": settings.k8s_runtime, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
            "trainer": {
                "image": settings.k8s_image,
                "command": [*TORCHRUN, "-m", "mt_trainer_worker.training", "--spec-file", str(spec_path)],
                "numNodes": request.nnodes,
                "numProcPerNode": request.nproc_per_node,
                "env": env,
            },
            "podTemplateOverrides": [
                {
                    "targetJobs": [{"name": NODE}],
                    "spec": {
                        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": settings.k8s_data_claim}}],
                        "containers": [
                            {"name": NODE, "volumeMounts": [{"name": "data", "mountPath": settings.k8s_data_mount}]}
                        ],
                    },
                }
            ],
        },
    }


class TrainJobLauncher:
    """A TrainJob per launch, watched by a local child process."""

    def __init__(self, context: LaunchContext) -> None:
        self.context = context

    def check(self, request: TrainRunRequest) -> str | None:
        if not self.context.settings.k8s_image:
            return "launcher k8s-trainjob needs LAUNCHER__K8S_IMAGE (the trainer image) on the trainer worker"
        return None

    async def command(self, job: RunJob, module: str, spec_path: Path) -> Command:
        settings = self.context.settings
        name = trainjob_name(job)
        plan = TrainJobPlan(
            api_url=settings.k8s_api_url or IN_CLUSTER,
            token_path=settings.k8s_token_path,
            ca_path=settings.k8s_ca_path,
            namespace=settings.k8s_namespace,
            name=name,
            poll_seconds=settings.k8s_poll_seconds,
            trainjob=render_trainjob(name, job.id, job.request, spec_path, settings),
        )
        plan_path = spec_path.parent / "trainjob.json"
        await asyncio.to_thread(atomic_write_bytes, plan_path, codec.encode(plan))
        argv = [sys.executable, "-m", "mt_trainer_worker.launchers.trainjob", "--plan", str(plan_path)]
        return Command(argv=argv, spec_on_stdin=False)


class KubernetesApi:
    """The few calls of the Kubernetes API the watcher makes, with the service account's token."""

    def __init__(self, plan: TrainJobPlan) -> None:
        headers = {}
        token = Path(plan.token_path) if plan.token_path else None
        if token is not None and token.is_file():
            headers["Authorization"] = f"Bearer {token.read_text().strip()}"
        verify: str | bool = plan.ca_path if plan.ca_path and Path(plan.ca_path).is_file() else True
        self.client = httpx.Client(base_url=plan.api_url, headers=headers, verify=verify, timeout=30.0)
        self.plan = plan
        self.trainjobs = f"/apis/{GROUP}/{VERSION}/namespaces/{plan.namespace}/trainjobs"

    def create(self) -> None:
        response = self.client.post(self.trainjobs, json=self.plan.trainjob)
        if response.status_code != 409:  # 409: created by an earlier try of this launch
            response.raise_for_status()

    def delete(self) -> None:
        response = self.client.delete(f"{self.trainjobs}/{self.plan.name}", params={"propagationPolicy": "Foreground"})
        if response.status_code != 404:
            response.raise_for_status()

    def conditions(self) -> dict[str, str]:
        """The TrainJob's status conditions: type -> status (``Complete``/``Failed`` -> ``True``)."""
        response = self.client.get(f"{self.trainjobs}/{self.plan.name}")
        if response.status_code == 404:
            return {"Failed": "True"}
        response.raise_for_status()
        status = msgspec.json.decode(response.content, type=dict[str, object]).get("status")
        conditions = msgspec.convert(status, dict[str, object]).get("conditions", []) if status else []
        return {str(c["type"]): str(c["status"]) for c in msgspec.convert(conditions, list[dict[str, object]])}

    def node_zero_pod(self) -> str | None:
        """The pod of node 0 (global rank 0), once it runs or ran."""
        selector = f"jobset.sigs.k8s.io/jobset-name={self.plan.name},batch.kubernetes.io/job-completion-index=0"
        response = self.client.get(f"/api/v1/namespaces/{self.plan.namespace}/pods", params={"labelSelector": selector})
        response.raise_for_status()
        items = msgspec.convert(
            msgspec.json.decode(response.content, type=dict[str, object]).get("items", []), list[dict[str, object]]
        )
        for item in items:
            metadata = msgspec.convert(item["metadata"], dict[str, object])
            phase = msgspec.convert(item.get("status", {}), dict[str, object]).get("phase")
            if phase in {"Running", "Succeeded", "Failed"}:
                return str(metadata["name"])
        return None

    def relay_log(self, pod: str) -> None:
        """Follow ``pod``'s log to its end: message lines (JSON objects) to stdout, the rest to stderr."""
        path = f"/api/v1/namespaces/{self.plan.namespace}/pods/{pod}/log"
        params = {"follow": "true", "container": NODE}
        with self.client.stream("GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                target = sys.stdout if line.startswith("{") else sys.stderr
                target.write(line + "\n")
                target.flush()


def watch(plan: TrainJobPlan, stopping: threading.Event) -> int:
    """Create the TrainJob, relay node 0's log, and wait for the TrainJob's ending: 0 completed, 1 not."""
    api = KubernetesApi(plan)
    api.create()
    print(json.dumps({"trainjob": plan.name, "namespace": plan.namespace}), file=sys.stderr, flush=True)
    pod = None
    while pod is None:
        conditions = api.conditions()
        if conditions.get("Failed") == "True" or stopping.is_set():
            return 1
        pod = api.node_zero_pod()
        if pod is None:
            time.sleep(plan.poll_seconds)
    api.relay_log(pod)
    while True:
        conditions = api.conditions()
        if conditions.get("Complete") == "True":
            return 0
        if conditions.get("Failed") == "True":
            return 1
        time.sleep(plan.poll_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mt_trainer_worker.launchers.trainjob")
    parser.add_argument("--plan", required=True, help="the TrainJobPlan file the launcher wrote")
    args = parser.parse_args(argv)
    plan = codec.decode(Path(args.plan).read_bytes(), TrainJobPlan)
    stopping = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # Delete the TrainJob: its pods get SIGTERM and rank 0 writes its stop checkpoint, which is still
        # relayed from the log until it ends.
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=KubernetesApi(plan).delete, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return watch(plan, stopping)
    except httpx.HTTPError as exc:
        print(f"the Kubernetes API failed: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.stdout.flush()
    os._exit(main())
