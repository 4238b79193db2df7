"""Quality per minute: how good a model one recipe gives through the API in ten minutes on this machine.

The whole stack (``scripts/stack.py``: Redis, the API and the workers, each its own process) on fresh roots;
the clock starts before the tokenizer is submitted and stops when the run has succeeded, so the tokenizer,
the dataset preparation, the child's start-up and every evaluation count. The recipe is ``TOKENIZER`` and
``RUN`` below: byte-level BPE with vocab 2048 on Tiny Shakespeare, GPT-2 4x256 (block 256, batch 16),
bf16, no dropout (measured here: dropout 0.2 costs a quarter of the step time on this CPU and ends higher at
this budget; see the README), 900 steps, ``learning_rate`` 2e-3 with 100 warm-up steps and a cosine decay
to 2e-4. ``BENCH_QUALITY_STEPS`` overrides ``max_steps``, ``BENCH_QUALITY_DROPOUT``
``dropout``.

The curve is each validation estimate (``eval_iters`` random batches of the validation split) with the wall
time it arrived at; the final figure is the run's full validation pass. The reference points are the run
the issue measured before this trainer (2.197 bits per byte after 7.3 min of training with the same shape
and no dropout) and nanoGPT's character model on Tiny Shakespeare (1.47 nats per character, about 2.12
bits per byte, on an A100). Goal (issue 19): <= 2.0 validation bits per byte within 10 minutes end to end.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import msgspec
from stack import Stack

from benchmarks._common import SHAKESPEARE, load, stack_env
from mt_client import Client
from mt_contracts.events import ProgressEvent, ValidationEvent
from mt_contracts.requests import TrainRunRequest, TrainTokenizerRequest

GOAL_BITS_PER_BYTE = 2.0
GOAL_SECONDS = 600.0
TOKENIZER = {"corpus_path": SHAKESPEARE.name, "method": "bpe", "vocab_size": 2048}
RUN = {
    "corpus_path": SHAKESPEARE.name,
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 256,
    "block_size": 256,
    "batch_size": 16,
    "dropout": float(os.environ.get("BENCH_QUALITY_DROPOUT", "0.0")),
    "precision": "bf16",
    "max_steps": int(os.environ.get("BENCH_QUALITY_STEPS", "900")),
    "learning_rate": 2e-3,
    "min_learning_rate": 2e-4,
    "warmup_steps": 100,
    "eval_interval": 50,
    "eval_iters": 20,
    "checkpoint_interval": 10_000,
    "seed": 1337,
}


class Point(msgspec.Struct, frozen=True):
    seconds: float
    step: int
    tokens_seen: int
    val_bits_per_byte: float
    val_loss: float
    train_loss: float | None


def main() -> str:
    loads = [load()]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        env = stack_env(data)
        with Stack(env, data, log_dir=data / "logs") as stack, Client(stack.api_url, timeout=300) as client:
            started = time.monotonic()
            tokenizer_id = client.train_tokenizer(msgspec.convert(TOKENIZER, TrainTokenizerRequest)).id
            for _ in client.follow(tokenizer_id):
                continue
            tokenizer = client.get_tokenizer(tokenizer_id)
            if tokenizer.status != "succeeded":
                raise RuntimeError(f"tokenizer {tokenizer_id} {tokenizer.status}: {tokenizer.error}")
            tokenizer_seconds = time.monotonic() - started
            run_id = client.train_run(msgspec.convert({**RUN, "tokenizer_id": tokenizer_id}, TrainRunRequest)).id
            points: list[Point] = []
            train_loss: float | None = None
            for streamed in client.follow(run_id):
                match streamed.event:
                    case ProgressEvent(progress=progress):
                        train_loss = progress.train_loss
                    case ValidationEvent(point=point) if point.val_bits_per_byte is not None:
                        points.append(
                            Point(
                                time.monotonic() - started,
                                point.step,
                                point.tokens_seen or 0,
                                point.val_bits_per_byte,
                                point.val_loss,
                                train_loss,
                            )
                        )
                    case _:
                        continue
            total_seconds = time.monotonic() - started
            run = client.get_run(run_id)
    loads.append(load())
    if run.status != "succeeded" or run.metrics is None:
        raise RuntimeError(f"run {run_id} {run.status}: {run.error}")
    metrics = run.metrics
    within = [point for point in points if point.seconds <= GOAL_SECONDS]
    best_within = min((point.val_bits_per_byte for point in within), default=math.nan)
    reached = next((point for point in points if point.val_bits_per_byte <= GOAL_BITS_PER_BYTE), None)
    epochs = metrics.tokens_seen / metrics.train_tokens if metrics.train_tokens else math.nan
    rows = [
        f"| {point.seconds / 60:.2f} | {point.step} | {point.tokens_seen:,} | {point.val_bits_per_byte:.3f} | "
        f"{point.val_loss:.3f} | {'' if point.train_loss is None else f'{point.train_loss:.3f}'} |"
        for point in points
    ]
    final_ok = metrics.val_bits_per_byte <= GOAL_BITS_PER_BYTE and total_seconds <= GOAL_SECONDS
    recipe = ", ".join(f"{key}={value}" for key, value in RUN.items() if key != "corpus_path")
    return "\n".join(
        [
            "## Quality per minute (issue 19)",
            "",
            "The whole stack through the API on fresh roots; the clock runs from the tokenizer's submission to the "
            "run's success (tokenizer, dataset preparation, start-up and every evaluation included). Tokenizer: "
            f"bpe, vocab_size {TOKENIZER['vocab_size']}, on {SHAKESPEARE.name}. Run: {recipe}. One run (the "
            "recipe is seeded; its wall time moves with the machine's load). 1-minute load average before and "
            f"after: {', '.join(loads)}.",
            "",
            f"Tokenizer done after {tokenizer_seconds:.1f} s; the run's {metrics.steps} steps read "
            f"{metrics.tokens_seen:,} tokens ({epochs:.1f} epochs of the training split) in "
            f"{metrics.training_seconds:.0f} s of training; end to end {total_seconds:.0f} s "
            f"({total_seconds / 60:.1f} min). Parameters: {metrics.n_params:,}.",
            "",
            "| minutes | step | tokens seen | val bits/byte | val loss (nats/token) | train loss |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            f"**Final** (the full validation split): {metrics.val_bits_per_byte:.3f} bits per byte, val loss "
            f"{metrics.val_loss:.3f} against train loss {metrics.train_loss:.3f} (gap "
            f"{metrics.val_loss - metrics.train_loss:.2f} nats). Best estimate within 10 minutes: "
            f"{best_within:.3f}. "
            + (
                f"The estimate first reached {GOAL_BITS_PER_BYTE} bits per byte at {reached.seconds / 60:.1f} min. "
                if reached is not None
                else f"No estimate reached {GOAL_BITS_PER_BYTE} bits per byte. "
            )
            + f"Goal (<= {GOAL_BITS_PER_BYTE} bits per byte within 10 minutes end to end): "
            + ("**met**." if final_ok else "**not met**."),
            "",
            "References: the issue's run before this trainer, the same shape without dropout, 2.197 bits per byte "
            "after 7.3 min of training, its train/validation gap 0.63 nats; nanoGPT's character model on Tiny "
            "Shakespeare, about 2.12 bits per byte on an A100.",
        ]
    )
