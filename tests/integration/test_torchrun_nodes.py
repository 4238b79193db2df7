"""A torchrun run on two nodes: two trainer worker processes, each in a network namespace of its own (as two
machines would be), reach one private Redis and join one rendezvous; the run finishes with both nodes' ranks.

The namespaces are wired with veth pairs: each to the root namespace, where the test's Redis listens on the
root-side addresses, and one between the two, which the rendezvous and gloo use (``LAUNCHER__SOCKET_IFNAME``).
No forwarding, bridge or firewall rule is touched. Needs root (``ip netns``), which CI has; without it the
test says why and is skipped. Everything made here carries a name generated for this test and is removed
in the finalizer.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from mt_api.app import create_app
from mt_contracts.settings import ApiSettings, AppSettings, QueueSettings, RedisSettings, WorkerServiceSettings
from mt_storage.embedded_redis import EmbeddedRedis
from tests.helpers import running_workers, wait_for
from tests.integration.jobs import RUN, TERMINAL, get_run, submit_run, trained_tokenizer, worker_env


@dataclass(frozen=True)
class Node:
    namespace: str
    redis_host: str  # the root-side address of its link to the root namespace
    peer_address: str  # its address on the link between the two namespaces
    peer_ifname: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    """Two network namespaces, each linked to the root namespace and to the other; removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("two network namespaces need root and iproute2 (ip netns): run as root, as CI does")
    tag = secrets.token_hex(3)
    # 10.<x>.<y>.0/30 links from this test's own random second octet; names at most 15 characters.
    octet = 200 + secrets.randbelow(50)
    subnet = secrets.randbelow(250)
    names = [f"mt{tag}a", f"mt{tag}b"]
    made: list[str] = []
    try:
        for name in names:
            _ip("netns", "add", name)
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        result = []
        for index, name in enumerate(names):
            root_end, ns_end = f"m{tag}r{index}", f"m{tag}n{index}"
            _ip("link", "add", root_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", ns_end, "netns", name)
            base = f"10.{octet}.{subnet}.{index * 4}"
            root_address = f"10.{octet}.{subnet}.{index * 4 + 1}"
            ns_address = f"10.{octet}.{subnet}.{index * 4 + 2}"
            _ip("addr", "add", f"{root_address}/30", "dev", root_end)
            _ip("link", "set", root_end, "up")
            _ip("-n", name, "addr", "add", f"{ns_address}/30", "dev", ns_end)
            _ip("-n", name, "link", "set", ns_end, "up")
            assert base
            result.append((name, root_address))
        # The link between the two namespaces.
        link_a, link_b = f"m{tag}pa", f"m{tag}pb"
        _ip("link", "add", link_a, "netns", names[0], "type", "veth", "peer", "name", link_b, "netns", names[1])
        peer_a, peer_b = f"10.{octet}.{subnet}.9", f"10.{octet}.{subnet}.10"
        _ip("-n", names[0], "addr", "add", f"{peer_a}/30", "dev", link_a)
        _ip("-n", names[1], "addr", "add", f"{peer_b}/30", "dev", link_b)
        _ip("-n", names[0], "link", "set", link_a, "up")
        _ip("-n", names[1], "link", "set", link_b, "up")
        yield [
            Node(names[0], result[0][1], peer_a, link_a),
            Node(names[1], result[1][1], peer_b, link_b),
        ]
    finally:
        # Deleting a namespace deletes the veth ends in it, and with them their peers.
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture
def shared_redis(tmp_path: Path, nodes: list[Node]) -> Iterator[EmbeddedRedis]:
    """A private Redis on 127.0.0.1 and on the root-side address of each node's link."""
    with EmbeddedRedis(tmp_path / "redis", persistent=False, bind=tuple(node.redis_host for node in nodes)) as server:
        yield server


@pytest.fixture
def settings(shared_redis: EmbeddedRedis, app_settings: AppSettings) -> WorkerServiceSettings:
    return WorkerServiceSettings(redis=RedisSettings(url=shared_redis.url), app=app_settings, queue=QueueSettings())


@pytest.fixture
async def client(shared_redis: EmbeddedRedis, app_settings: AppSettings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    settings = ApiSettings(redis=RedisSettings(url=shared_redis.url), app=app_settings, queue=QueueSettings())
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


def _start_worker(node: Node, settings: WorkerServiceSettings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = worker_env(
        settings,
        REDIS__URL=f"redis://{node.redis_host}:{port}/0",
        LAUNCHER__RENDEZVOUS_HOST=node.peer_address,
        LAUNCHER__SOCKET_IFNAME=node.peer_ifname,
        LAUNCHER__RENDEZVOUS_TIMEOUT="300",
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", node.namespace, sys.executable, "-m", "mt_trainer_worker"],
            env=env, stdout=out, stderr=out,
        )  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_two_workers_in_two_network_namespaces_join_one_run(
    client: AsyncTestClient[Litestar],
    settings: WorkerServiceSettings,
    shared_redis: EmbeddedRedis,
    nodes: list[Node],
    tmp_path: Path,
) -> None:
    workers = [
        _start_worker(node, settings, shared_redis.port, tmp_path / f"worker-{index}.log")
        for index, node in enumerate(nodes)
    ]
    try:
        async with running_workers(settings, trainer=False):
            tokenizer_id = await trained_tokenizer(client)
            body = {
                **RUN, "tokenizer_id": tokenizer_id, "launcher": "torchrun", "nnodes": 2, "nproc_per_node": 1,
                "max_steps": 20, "checkpoint_interval": 10, "eval_interval": 10,
            }  # fmt: skip
            run_id = await submit_run(client, body)
            # A worker that exits (it cannot reach Redis, say) ends the wait at once; its log says why.
            run = await wait_for(
                lambda: get_run(client, run_id),
                lambda j: j.status in TERMINAL or any(worker.poll() is not None for worker in workers),
                600,
            )
    finally:
        for worker in workers:
            _stop(worker)
    logs = "".join(path.read_text(errors="replace") for path in tmp_path.glob("worker-*.log"))
    assert run.status == "succeeded", (run.error, logs[-3000:])
    assert run.metrics is not None and run.metrics.steps == 20
    # Both nodes trained: 2 ranks x batch_size windows a step, and the other node's ranks logged beside it.
    assert run.metrics.tokens_seen == 20 * 2 * 4 * 32
    run_dir = Path(settings.app.runs_root) / run_id
    node_log = (run_dir / "process-node-1.log").read_text(errors="replace")
    assert '"event":"training_started"' in node_log
    model = Path(settings.app.artifacts_root) / "models" / run_id / "manifest.json"
    assert msgspec.json.decode(model.read_bytes())["world_size"] == 2
