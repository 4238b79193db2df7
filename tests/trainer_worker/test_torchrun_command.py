"""The torchrun launcher's command line on one node, built without starting it: one node, ``nproc_per_node``
ranks, no elastic restarts, a fresh rendezvous each launch on a port free on this machine, and the machine's
cores divided between the ranks."""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from mt_contracts.jobs import RunJob
from mt_contracts.requests import TrainRunRequest
from mt_contracts.settings import LauncherSettings
from mt_storage.child import SUPERVISOR_ENV
from mt_storage.layout import Layout
from mt_storage.process import Command
from mt_trainer_worker.launchers import LaunchContext, launchers
from mt_trainer_worker.launchers.torchrun import TRAINING_MODULE, TorchrunLauncher

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
RUN_ID = "run_01JDQ8ZQ0000000000000000AA"
TORCHRUN_DEFAULT_PORT = 29500
# torchrun's options on a one-node command line, each with one value.
OPTIONS = {
    "--nnodes",
    "--nproc-per-node",
    "--node-rank",
    "--master-addr",
    "--master-port",
    "--rdzv-id",
    "--rdzv-conf",
    "--max-restarts",
    "--monitor-interval",
}


def _job(nproc_per_node: int, attempts: int) -> RunJob:
    request = TrainRunRequest(
        tokenizer_id="tok_01JDQ8ZQ0000000000000000AA",
        corpus_path="small.txt",
        launcher="torchrun",
        nproc_per_node=nproc_per_node,
    )
    return RunJob(id=RUN_ID, request=request, created_at=NOW, updated_at=NOW, status="running", attempts=attempts)


def _options(command: Command) -> dict[str, str]:
    """torchrun's own options (before ``-m``), each once, by name."""
    argv = command.argv
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"]
    own = argv[3 : argv.index("-m", 3)]
    names, values = own[0::2], own[1::2]
    assert len(names) == len(values) and len(set(names)) == len(names), own
    return dict(zip(names, values, strict=True))


@pytest.fixture
def launcher(tmp_path: Path) -> TorchrunLauncher:
    layout = Layout(artifacts_root=tmp_path / "artifacts", runs_root=tmp_path / "runs", corpus_root=tmp_path)
    context = LaunchContext(
        settings=LauncherSettings(max_nproc_per_node=2), niceness=7, layout=layout, training_queue="mt:training"
    )
    made = launchers()["torchrun"](context)
    assert isinstance(made, TorchrunLauncher)
    return made


@pytest.fixture
def default_port_taken() -> Iterator[None]:
    """torchrun's default master port held by another socket (when nothing else holds it already)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        try:
            holder.bind(("127.0.0.1", TORCHRUN_DEFAULT_PORT))
            holder.listen()
        except OSError as exc:
            # Already taken by another program: just as good.
            assert exc.errno == errno.EADDRINUSE, exc
        yield


async def test_one_node_command_line(launcher: TorchrunLauncher, tmp_path: Path, default_port_taken: None) -> None:
    spec = tmp_path / "spec.json"
    spec.write_bytes(b"{}")
    command = await launcher.command(_job(nproc_per_node=2, attempts=1), TRAINING_MODULE, spec)
    options = _options(command)
    port = int(options.pop("--master-port"))
    rendezvous_id = options.pop("--rdzv-id")
    assert options == {
        "--nnodes": "1",
        "--nproc-per-node": "2",
        "--node-rank": "0",
        "--master-addr": "127.0.0.1",
        "--rdzv-conf": "timeout=600",
        "--max-restarts": "0",
        "--monitor-interval": "0.5",
    }
    assert set(options) | {"--master-port", "--rdzv-id"} == OPTIONS
    # The training module follows, at the worker's niceness, reading the spec from its file (ranks share stdin).
    assert command.argv[command.argv.index("-m", 3) :] == [
        "-m", TRAINING_MODULE, "--nice", "7", "--spec-file", str(spec),
    ]  # fmt: skip
    assert not command.spec_on_stdin

    # A port free on this machine: not torchrun's default (held here), and nobody listens on it.
    assert port != TORCHRUN_DEFAULT_PORT and 1024 <= port <= 65535
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", port))

    # The rendezvous is the attempt's own: the run, the attempt, and a random part for each launch (a child
    # started again within the attempt must not join the previous group's rendezvous).
    assert rendezvous_id.startswith(f"{RUN_ID}-1-")
    again = _options(await launcher.command(_job(nproc_per_node=2, attempts=1), TRAINING_MODULE, spec))["--rdzv-id"]
    second = _options(await launcher.command(_job(nproc_per_node=2, attempts=2), TRAINING_MODULE, spec))["--rdzv-id"]
    assert second.startswith(f"{RUN_ID}-2-")
    assert len({rendezvous_id, again, second}) == 3

    # The machine's cores divided between the ranks (torch's default intra-op threads follow OMP_NUM_THREADS), and the
    # ranks watch this worker.
    cores = os.cpu_count() or 1
    assert command.env == {"OMP_NUM_THREADS": str(max(1, cores // 2)), SUPERVISOR_ENV: str(os.getpid())}
    single = await launcher.command(_job(nproc_per_node=1, attempts=1), TRAINING_MODULE, spec)
    assert (_options(single)["--nproc-per-node"], single.env["OMP_NUM_THREADS"]) == ("1", str(cores))


def test_a_run_asking_for_more_ranks_than_offered_is_refused(launcher: TorchrunLauncher) -> None:
    assert launcher.check(_job(nproc_per_node=2, attempts=0).request) is None
    wanted = msgspec.structs.replace(_job(nproc_per_node=2, attempts=0).request, nproc_per_node=3)
    assert launcher.check(wanted) == (
        "nproc_per_node=3 but this worker offers 2 processes (LAUNCHER__MAX_NPROC_PER_NODE, else its cores); "
        "lower nproc_per_node"
    )
