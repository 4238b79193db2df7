"""Data parallelism on this machine: tokens/s of 1 training process x 2 threads against 2 torchrun ranks x 1
thread (DistributedDataParallel, gloo), at the same global batch (16 windows of 128 tokens a step: 1 x 16
against 2 x 8), the same model and steps.

Both sides are our real training process, the second started by the torchrun launcher's own command
(``mt_trainer_worker.launchers.torchrun.torchrun_command``); tokens/s is the steady state of rank 0's
progress events (global tokens, first quarter of steps skipped as warm-up), peak RSS the largest sum over
the process tree (torchrun and its ranks) sampled every 0.1 s. Runs alternate, 5 each; the load average is
recorded before and after, since other work shares the machine. On 2 cores, data parallelism is for
correctness (a run that outgrows one process), not speed here: each rank holds a whole model and the
gradients are all-reduced every step.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks._common import SHAKESPEARE, bpe_tokenizer, median
from mt_contracts import codec
from mt_contracts.events import ProgressEvent
from mt_contracts.requests import TrainRunRequest
from mt_contracts.settings import LauncherSettings
from mt_contracts.training import Rendezvous, RunSpec, decode_message
from mt_trainer_worker.launchers.torchrun import free_port, torchrun_command

REPEATS = 5
STEPS = 24
GLOBAL_BATCH = 16
VOCAB_SIZE = 2048
N_LAYER, N_EMBD, BLOCK_SIZE = 4, 128, 128


def _request(processes: int) -> TrainRunRequest:
    return TrainRunRequest(
        tokenizer_id="tok_01JDQ8ZQ0000000000000000AA",
        corpus_path=SHAKESPEARE.name,
        n_layer=N_LAYER,
        n_head=4,
        n_embd=N_EMBD,
        block_size=BLOCK_SIZE,
        batch_size=GLOBAL_BATCH // processes,
        max_steps=STEPS,
        warmup_steps=4,
        eval_interval=10_000,
        checkpoint_interval=10_000,
        threads=2,
        device="cpu",
        launcher="local" if processes == 1 else "torchrun",
        nproc_per_node=processes,
    )


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parents[int(entry.name)] = int(fields.get("PPid", "0").strip())
        rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(rss.get(pid, 0) for pid in tree)


def _run(work: Path, tokenizer_dir: Path, processes: int, index: int) -> tuple[float, float]:
    """(steady tokens per second, peak RSS in MiB) of one run."""
    request = _request(processes)
    run_dir = work / f"p{processes}-{index}"
    spec = RunSpec(
        run_id="run_01JDQ8ZQ0000000000000000AA",
        tokenizer_id=request.tokenizer_id,
        request=request,
        tokenizer_dir=str(tokenizer_dir),
        corpus_files=[str(SHAKESPEARE)],
        model_dir=str(run_dir / "model"),
        work_dir=str(run_dir / "work"),
        run_dir=str(run_dir),
        dataset_cache=str(work / "datasets"),
        progress_interval=0.0,
    )
    spec_path = work / f"spec-{processes}-{index}.json"
    spec_path.write_bytes(codec.encode(spec))
    module = "mt_trainer_worker.training"
    if processes == 1:
        argv, env = [sys.executable, "-m", module, "--spec-file", str(spec_path)], {}
    else:
        rendezvous = Rendezvous(
            run_id=spec.run_id, rendezvous_id=f"bench-{index}", master_addr="127.0.0.1",
            master_port=free_port("127.0.0.1"), nnodes=1, nproc_per_node=processes, spec=b"",
        )  # fmt: skip
        command = torchrun_command(rendezvous, 0, module, spec_path, 0, LauncherSettings())
        argv, env = command.argv, command.env
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, **env}, stdin=subprocess.DEVNULL
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(process.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"training with {processes} process(es) exited with code {process.returncode}")
    reports = [e.progress for line in out.splitlines() if isinstance(e := decode_message(line), ProgressEvent)]
    steady = [r.tokens_per_second for r in reports if r.step > STEPS // 4]
    return median(steady), peak / 2**20


def main() -> str:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        tokenizer_dir = work / "tokenizer"
        bpe_tokenizer(tokenizer_dir, VOCAB_SIZE)
        results: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
        _run(work, tokenizer_dir, 1, -1)  # prepares the token files once, outside the measurement
        for index in range(REPEATS):
            for processes in (1, 2) if index % 2 == 0 else (2, 1):
                results[processes].append(_run(work, tokenizer_dir, processes, index))
    load_after = os.getloadavg()
    rows = []
    for processes, label in ((1, "1 process x 2 threads (local)"), (2, "2 ranks x 1 thread (torchrun, gloo)")):
        rates = [rate for rate, _ in results[processes]]
        rss = [peak for _, peak in results[processes]]
        rows.append(f"| {label} | {median(rates):,.0f} | {min(rates):,.0f}-{max(rates):,.0f} | {median(rss):,.0f} |")
    ratio = median([r for r, _ in results[2]]) / median([r for r, _ in results[1]])
    return "\n".join(
        [
            "## Data parallelism: 1 process x 2 threads vs 2 torchrun ranks x 1 thread",
            "",
            f"GPT-2 {N_LAYER}x{N_EMBD}, block {BLOCK_SIZE}, global batch {GLOBAL_BATCH} "
            f"windows a step (1 x {GLOBAL_BATCH} against 2 x {GLOBAL_BATCH // 2}), {STEPS} steps, vocab {VOCAB_SIZE}; "
            f"{REPEATS} alternating runs each. Load average (1, 5, 15 min) {load_before[0]:.1f}, {load_before[1]:.1f}, "
            f"{load_before[2]:.1f} before and {load_after[0]:.1f}, {load_after[1]:.1f}, {load_after[2]:.1f} after.",
            "",
            "| layout | tokens/s (median) | min-max | peak RSS, MiB (whole tree) |",
            "| --- | ---: | ---: | ---: |",
            *rows,
            "",
            f"2 ranks reach {ratio:.2f}x the tokens/s of 1 process on this machine. Both sides use the same 2 cores;"
            " the ranks each hold the whole model and optimizer (about twice the memory) and all-reduce the "
            "gradients every step, so on one small CPU machine data parallelism buys no speed: it is there for "
            "runs that outgrow one process or one machine (torchrun on several nodes, or a TrainJob).",
        ]
    )
