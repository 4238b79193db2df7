"""The k8s-trainjob launcher through the real stack, against a real HTTP server that speaks the subset of the
Kubernetes API the launcher uses and does what Kubeflow Trainer and the kubelet would: a TrainJob created
(``POST .../trainjobs``) starts its trainer command as a local "pod" with the ``PET_*`` variables the
torch-distributed runtime sets; ``GET .../pods`` lists node 0's pod, ``.../pods/<pod>/log?follow=true`` streams
its merged stdout and stderr, ``GET .../trainjobs/<name>`` reports ``Complete``/``Failed``, and ``DELETE``
sends the pod SIGTERM. The run trains with 2 ranks in that pod and succeeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from mt_api.app import create_app
from mt_contracts.settings import ApiSettings, LauncherSettings, WorkerServiceSettings
from mt_storage.embedded_redis import free_port
from tests.helpers import running_workers, wait_for
from tests.integration.jobs import RUN, TERMINAL, get_run, submit_run, trained_tokenizer

TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/model-trainer/trainjobs"
PODS = "/api/v1/namespaces/model-trainer/pods"


@dataclass
class Pod:
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Cluster:
    """What the fake API server holds: the TrainJobs created and their pods, and every request it answered."""

    root: Path
    trainjobs: dict[str, dict[str, object]] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def start_pod(self, name: str, trainjob: dict[str, object]) -> None:
        trainer = msgspec.convert(msgspec.convert(trainjob["spec"], dict[str, object])["trainer"], dict[str, object])
        command = msgspec.convert(trainer["command"], list[str])
        command = [sys.executable if part == "python" else part for part in command]
        env = {**os.environ, **{e["name"]: e["value"] for e in msgspec.convert(trainer["env"], list[dict[str, str]])}}
        env |= {
            "PET_NNODES": str(trainer["numNodes"]),
            "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
            "PET_NODE_RANK": "0",
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": str(free_port()),
        }
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self.pods[name] = Pod(process, log)


def handler(cluster: Cluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return None

        def _json(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            cluster.requests.append(f"POST {self.path}")
            trainjob = msgspec.json.decode(self.rfile.read(int(self.headers["Content-Length"])), type=dict[str, object])
            name = str(msgspec.convert(trainjob["metadata"], dict[str, object])["name"])
            if self.path != TRAINJOBS or name in cluster.trainjobs:
                self._json(409 if name in cluster.trainjobs else 404, {"kind": "Status"})
                return
            cluster.trainjobs[name] = trainjob
            cluster.start_pod(name, trainjob)
            self._json(201, trainjob)

        def do_DELETE(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            cluster.requests.append(f"DELETE {url.path}")
            name = url.path.rpartition("/")[2]
            pod = cluster.pods.get(name)
            if pod is None:
                self._json(404, {"kind": "Status"})
                return
            if pod.process.poll() is None:
                os.killpg(pod.process.pid, signal.SIGTERM)
            self._json(200, {"kind": "Status", "status": "Success"})

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            cluster.requests.append(f"GET {url.path}")
            if url.path.startswith(TRAINJOBS + "/"):
                name = url.path.rpartition("/")[2]
                pod = cluster.pods.get(name)
                if pod is None:
                    self._json(404, {"kind": "Status"})
                    return
                code = pod.process.poll()
                conditions = [] if code is None else [{"type": "Complete" if code == 0 else "Failed", "status": "True"}]
                self._json(200, {**cluster.trainjobs[name], "status": {"conditions": conditions}})
            elif url.path == PODS:
                selector = dict(part.split("=") for part in query["labelSelector"][0].split(","))
                name = selector["jobset.sigs.k8s.io/jobset-name"]
                pod = cluster.pods.get(name)
                items = []
                if pod is not None and selector["batch.kubernetes.io/job-completion-index"] == "0":
                    code = pod.process.poll()
                    phase = "Running" if code is None else "Succeeded" if code == 0 else "Failed"
                    items.append({"metadata": {"name": f"{name}-node-0-0"}, "status": {"phase": phase}})
                self._json(200, {"kind": "PodList", "items": items})
            elif url.path.startswith(PODS + "/") and url.path.endswith("/log"):
                pod_name = url.path.split("/")[-2]
                pod = cluster.pods[pod_name.removesuffix("-node-0-0")]
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()  # HTTP/1.0: the body ends when the connection closes
                with pod.log.open("rb") as log:
                    while True:
                        ended = pod.process.poll() is not None
                        chunk = log.read()
                        if chunk:
                            self.wfile.write(chunk)
                            self.wfile.flush()
                        elif ended:
                            return
                        else:
                            time.sleep(0.1)
            else:
                self._json(404, {"kind": "Status"})

    return Handler


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, str]]:
    state = Cluster(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        for pod in state.pods.values():
            if pod.process.poll() is None:
                os.killpg(pod.process.pid, signal.SIGKILL)
                pod.process.wait()
        server.shutdown()
        server.server_close()


@pytest.fixture
async def client(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(api_settings)) as client:
        yield client


async def test_a_run_on_the_trainjob_launcher_trains_in_the_trainjob_and_succeeds(
    client: AsyncTestClient[Litestar], worker_settings: WorkerServiceSettings, cluster: tuple[Cluster, str]
) -> None:
    state, url = cluster
    launcher = LauncherSettings(k8s_api_url=url, k8s_token_path="", k8s_ca_path="", k8s_poll_seconds=0.2)
    settings = msgspec.structs.replace(worker_settings, launcher=launcher)
    async with running_workers(settings):
        tokenizer_id = await trained_tokenizer(client)
        body = {**RUN, "tokenizer_id": tokenizer_id, "launcher": "k8s-trainjob", "nproc_per_node": 2, "max_steps": 20}
        run_id = await submit_run(client, body)
        run = await wait_for(lambda: get_run(client, run_id), lambda j: j.status in TERMINAL, 600)
    assert run.status == "succeeded", run.error
    assert run.metrics is not None and run.metrics.steps == 20
    assert run.metrics.tokens_seen == 20 * 2 * 4 * 32
    (name,) = state.trainjobs
    assert state.requests[0] == f"POST {TRAINJOBS}"
    assert f"GET {PODS}/{name}-node-0-0/log" in state.requests
    assert not any(request.startswith("DELETE") for request in state.requests)
    manifest = Path(settings.app.artifacts_root) / "models" / run_id / "manifest.json"
    assert msgspec.json.decode(manifest.read_bytes())["world_size"] == 2
