"""Start-up of a job's child process: a run's first step, a small evaluation and a tiny tokenizer job, each in
the worker's warm standby (``mt_storage.warm``, ``WORKER__WARM_CHILD``) against a fresh child, and the tiny
tokenizer job against a fresh process that trains the same tokenizer with the library alone.

The children are started as the workers start them (``mt_storage.process.run_child``, with and without a
``WarmChild``, niceness 0) on specs built as the workers build them. Times, from ``run_child``'s call: a run
(2 x 64 GPT-2, block 64, batch 8, eager) to the child's first progress event, which it sends after its first
step; an evaluation (its validation split, about 30,000 tokens) and the tokenizer job (20 kB, vocab 512,
``bpe``) to the child's exit. The library alone is timed from process start to its saved output, fed the pieces
our method feeds it (``benchmarks.tokenizers``). A warm round starts once the standby is ready again: its
imports are not timed, as a worker pays them while idle or while the previous job runs. ``BENCH_REPEATS``
(default 5) rounds, the warm side first on even rounds and the fresh one first on odd rounds; medians with
min-max. Goals (issue 19): a run's first step ≤ 1.5 s after it starts; the tiny tokenizer job ≤ 1.5x the
library alone. An untimed run first encodes the corpus into the dataset cache that every run then reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from benchmarks._common import SHAKESPEARE, bpe_tokenizer, load, spread
from benchmarks.tokenizers import _LIBRARY, library_options, write_feed
from mt_contracts import codec
from mt_contracts.evaluation import EvalSpec, Weights
from mt_contracts.events import ProgressEvent
from mt_contracts.requests import TrainRunRequest, TrainTokenizerRequest
from mt_contracts.tokenizer_process import TokenizerSpec
from mt_contracts.tokenizers import resolve_config
from mt_contracts.training import Finished, RunSpec, decode_message
from mt_storage.process import WarmChild, run_child

REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
TRAINING = "mt_trainer_worker.training"
EVALUATE = "mt_trainer_worker.training.evaluate"
TOKENIZER = "mt_tokenizer_worker.process"
TOKENIZER_ID = "tok_01JDQ8ZQ0000000000000000AA"
REQUEST = TrainRunRequest(
    tokenizer_id=TOKENIZER_ID,
    corpus_path=SHAKESPEARE.name,
    n_layer=2,
    n_head=2,
    n_embd=64,
    block_size=64,
    batch_size=8,
    max_steps=3,
    warmup_steps=1,
    eval_interval=1000,
    checkpoint_interval=1000,
    compile="off",
    device="cpu",
)


class _FirstProgress:
    """A child's stdout handler noting when the first progress event came (``time.monotonic``) and the
    outcome."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.finished: Finished | None = None

    async def __call__(self, line: bytes) -> None:
        message = decode_message(line)
        if isinstance(message, ProgressEvent) and self.at is None:
            self.at = time.monotonic()
        elif isinstance(message, Finished):
            self.finished = message


async def _discard(line: bytes) -> None:
    return None


class Bench:
    """The specs and folders of one benchmark, and the children's runs."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.tokenizer_dir = work / "tokenizer"
        self.launches = 0

    def run_spec(self) -> RunSpec:
        """A fresh run (its own folders) of ``REQUEST`` on Tiny Shakespeare."""
        self.launches += 1
        run_dir = self.work / "runs" / f"run-{self.launches}"
        return RunSpec(
            run_id="run_01JDQ8ZQ0000000000000000AA",
            tokenizer_id=TOKENIZER_ID,
            request=REQUEST,
            tokenizer_dir=str(self.tokenizer_dir),
            corpus_files=[str(SHAKESPEARE)],
            model_dir=str(run_dir / "model"),
            work_dir=str(run_dir / "work"),
            run_dir=str(run_dir),
            dataset_cache=str(self.work / "datasets"),
            runs_root=str(self.work / "runs"),
            artifacts_root=str(self.work / "artifacts"),
        )

    async def first_step(self, warm: WarmChild | None) -> float:
        """Seconds from ``run_child``'s call to the run's first progress event."""
        spec = self.run_spec()
        progress = _FirstProgress()
        started = time.monotonic()
        code = await run_child(
            TRAINING, codec.encode(spec), niceness=0, log_path=Path(spec.run_dir) / "process.log",
            on_line=progress, grace=5, warm=warm,
        )  # fmt: skip
        if code != 0 or progress.at is None:
            raise RuntimeError(f"the run failed ({code}); see {spec.run_dir}/process.log")
        return progress.at - started

    async def trained(self) -> Finished:
        """An untimed run's outcome (it also fills the dataset cache)."""
        spec = self.run_spec()
        progress = _FirstProgress()
        await run_child(
            TRAINING, codec.encode(spec), niceness=0, log_path=Path(spec.run_dir) / "process.log",
            on_line=progress, grace=5,
        )  # fmt: skip
        if progress.finished is None:
            raise RuntimeError(f"the run failed; see {spec.run_dir}/process.log")
        return progress.finished

    async def whole(self, module: str, spec: bytes, warm: WarmChild | None) -> float:
        """Seconds from ``run_child``'s call to the return of a child of ``module`` on ``spec``."""
        self.launches += 1
        log = self.work / "logs" / f"{self.launches}.log"
        started = time.monotonic()
        code = await run_child(module, spec, niceness=0, log_path=log, on_line=_discard, grace=5, warm=warm)
        if code != 0:
            raise RuntimeError(f"{module} exited with {code}; see {log}")
        return time.monotonic() - started

    def eval_spec(self, finished: Finished) -> bytes:
        model_dir = Path(finished.model_dir)
        weights = Weights(
            run_id="run_01JDQ8ZQ0000000000000000AA",
            tokenizer_id=TOKENIZER_ID,
            checkpoint=None,
            step=finished.metrics.steps,
            model_dir=str(model_dir),
            config_path=str(model_dir / "config.json"),
            tokenizer_path=str(model_dir / "tokenizer.json"),
        )
        spec = EvalSpec(
            eval_id="eval_01JDQ8ZQ0000000000000000AA",
            weights=weights,
            split="val",
            corpus_path=SHAKESPEARE.name,
            corpus_files=[str(SHAKESPEARE)],
            val_fraction=REQUEST.val_fraction,
            seed=REQUEST.seed,
            block_size=REQUEST.block_size,
            batch_size=REQUEST.batch_size,
            dataset_cache=str(self.work / "datasets"),
            device="cpu",
        )
        return codec.encode(spec)

    def library_alone(self, feed: Path, options: str) -> float:
        """Wall seconds of a fresh process training the tokenizer with the library alone on ``feed``."""
        self.launches += 1
        out = self.work / "library" / str(self.launches)
        out.mkdir(parents=True)
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", _LIBRARY, str(feed), str(out), "bpe", options], check=True)
        return time.monotonic() - started

    def tokenizer_spec(self, corpus_root: Path, request: TrainTokenizerRequest) -> bytes:
        self.launches += 1
        out = self.work / "tokenizers" / str(self.launches)
        spec = TokenizerSpec(tokenizer_id=TOKENIZER_ID, request=request, corpus_root=str(corpus_root), out_dir=str(out))
        return codec.encode(spec)


async def _alternate(
    round_index: int, warm: WarmChild, sides: dict[str, Callable[[], Awaitable[float]]], into: dict[str, list[float]]
) -> None:
    """One round: each side once, in the order of ``sides`` on even rounds and reversed on odd ones; the warm
    side starts once the standby is ready."""
    names = list(sides) if round_index % 2 == 0 else list(reversed(sides))
    for name in names:
        if name == "warm" and not await warm.ready():
            raise RuntimeError("the warm standby did not start; see its standby.log")
        into[name].append(await sides[name]())


async def _measure(work: Path) -> tuple[dict[str, dict[str, list[float]]], list[str]]:
    bench = Bench(work)
    bpe_tokenizer(bench.tokenizer_dir, 512)
    corpus_root = work / "corpus"
    corpus_root.mkdir()
    (corpus_root / "tiny.txt").write_text(SHAKESPEARE.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    request = TrainTokenizerRequest(corpus_path="tiny.txt", vocab_size=512)
    feed = work / "feed.txt"
    write_feed(corpus_root, request, feed)
    options = json.dumps(library_options(resolve_config(request)))
    evaluation = bench.eval_spec(await bench.trained())
    results: dict[str, dict[str, list[float]]] = {
        job: {"warm": [], "fresh": [], "library": []} for job in ("run", "evaluation", "tokenizer")
    }
    loads = [load()]
    trainer = WarmChild((TRAINING, EVALUATE), 0)
    tokenizer = WarmChild((TOKENIZER,), 0)
    trainer.start()
    tokenizer.start()
    try:
        for round_index in range(REPEATS):
            await _alternate(
                round_index, trainer,
                {"warm": lambda: bench.first_step(trainer), "fresh": lambda: bench.first_step(None)},
                results["run"],
            )  # fmt: skip
            await _alternate(
                round_index, trainer,
                {"warm": lambda: bench.whole(EVALUATE, evaluation, trainer),
                 "fresh": lambda: bench.whole(EVALUATE, evaluation, None)},
                results["evaluation"],
            )  # fmt: skip
            await _alternate(
                round_index, tokenizer,
                {"warm": lambda: bench.whole(TOKENIZER, bench.tokenizer_spec(corpus_root, request), tokenizer),
                 "fresh": lambda: bench.whole(TOKENIZER, bench.tokenizer_spec(corpus_root, request), None),
                 "library": lambda: asyncio.to_thread(bench.library_alone, feed, options)},
                results["tokenizer"],
            )  # fmt: skip
            loads.append(load())
    finally:
        await trainer.aclose()
        await tokenizer.aclose()
    return results, loads


def main() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        results, loads = asyncio.run(_measure(Path(tmp)))
    run, evaluation, tokenizer = results["run"], results["evaluation"], results["tokenizer"]

    def ratios(ours: list[float], reference: list[float]) -> str:
        return spread([a / b for a, b in zip(ours, reference, strict=True)], 2)

    return "\n".join(
        [
            "## Job start-up: the warm standby child (issue 19)",
            "",
            f"{REPEATS} alternating rounds (the warm side first on even rounds), medians with min-max, seconds "
            "from the worker's call that starts the child (`run_child`): to a run's first progress event, sent "
            "after its first step (2 x 64 GPT-2, block 64, batch 8, eager); to the end of an evaluation of the "
            "run's validation split and of a tiny tokenizer job (20 kB, vocab 512, `bpe`). Warm: the worker's "
            "standby child, its imports done before the job came; fresh: `python -m <module>` started for the "
            "job. The library alone: a fresh process training the same tokenizer on the same pieces. Goals: a "
            "run's first step ≤ 1.5 s; the tiny tokenizer job ≤ 1.5x the library alone. 1-minute load average "
            f"over the rounds: {', '.join(loads)}.",
            "",
            "| job | warm s | fresh s | warm / fresh | library alone s | warm / library | fresh / library |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| run: to its first step | {spread(run['warm'], 2)} | {spread(run['fresh'], 2)} | "
            f"{ratios(run['warm'], run['fresh'])} | | | |",
            f"| evaluation (validation split) | {spread(evaluation['warm'], 2)} | {spread(evaluation['fresh'], 2)} | "
            f"{ratios(evaluation['warm'], evaluation['fresh'])} | | | |",
            f"| tokenizer job (20 kB, vocab 512) | {spread(tokenizer['warm'], 2)} | {spread(tokenizer['fresh'], 2)} "
            f"| {ratios(tokenizer['warm'], tokenizer['fresh'])} | {spread(tokenizer['library'], 2)} | "
            f"{ratios(tokenizer['warm'], tokenizer['library'])} | {ratios(tokenizer['fresh'], tokenizer['library'])} |",
        ]
    )
