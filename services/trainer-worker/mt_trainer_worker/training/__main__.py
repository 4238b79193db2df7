"""Entry point of the training process: ``python -m mt_trainer_worker.training [--nice N]``, the ``RunSpec``
on stdin (the child protocol of ``mt_storage.child``).

Messages go to the original stdout, one JSON line each; anything else a library prints on stdout is sent
to stderr instead, which the worker keeps as the run's ``process.log``. Exit code 0 means ``finished``
was sent; 1 means ``failed`` was sent; 143 means it stopped on SIGTERM after writing its stop checkpoint.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path
from types import FrameType

import torch

from mt_contracts import codec
from mt_contracts.events import Failed, ValidationEvent
from mt_contracts.jobs import EvalPoint, RunMetrics, utcnow
from mt_contracts.logs import timestamp
from mt_contracts.manifests import DatasetInfo, ModelManifest, Timings
from mt_contracts.training import Finished, RunSpec
from mt_storage.checkpoints import read_index
from mt_storage.child import Channel, failure, leave, open_channel, watch_parent
from mt_storage.files import atomic_move, file_entries
from mt_trainer_worker.training.data import open_tokens, prepare_data
from mt_trainer_worker.training.loop import (
    LN2,
    StopTraining,
    safe_exp,
    save_dir_files,
    score_tokens,
    train,
)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def run(spec: RunSpec, writer: Channel, stop: threading.Event) -> Finished:
    """Prepare data, train, score the whole validation split (sent as the final validation), and write the
    model files; the ``manifest.json`` that commits them travels in ``Finished`` for the worker to write."""
    request = spec.request
    tokenizer_dir = Path(spec.tokenizer_dir)
    corpus_files = [Path(p) for p in spec.corpus_files]
    clock = time.monotonic()
    data = prepare_data(
        tokenizer_dir / "tokenizer.json", corpus_files, request.val_fraction, request.seed, Path(spec.dataset_cache)
    )
    preparation_seconds, clock = time.monotonic() - clock, time.monotonic()
    trained = train(spec, data, writer, stop)
    clock = time.monotonic()

    writer.phase = "evaluating"
    val = open_tokens(data.val_path, data.dtype)
    device = next(trained.model.parameters()).device
    total_nats, scored = score_tokens(trained.model, val, request.block_size, request.batch_size, device)
    evaluation_seconds, clock = time.monotonic() - clock, time.monotonic()
    val_loss = total_nats / scored
    metrics = RunMetrics(
        val_loss=val_loss,
        val_perplexity=safe_exp(val_loss),
        val_bits_per_byte=total_nats / LN2 / data.val_bytes,
        val_tokens=scored,
        val_bytes=data.val_bytes,
        train_loss=trained.train_loss,
        steps=trained.steps,
        tokens_seen=trained.tokens_seen,
        n_params=sum(p.numel() for p in trained.model.parameters()),
        training_seconds=trained.seconds,
        train_tokens=data.train_tokens,
    )
    final = EvalPoint(
        step=trained.steps,
        val_loss=val_loss,
        val_perplexity=metrics.val_perplexity,
        val_bits_per_byte=metrics.val_bits_per_byte,
    )
    message = f"final validation at step {trained.steps}: val_loss {val_loss:.4f} over {scored} tokens"
    writer.send(ValidationEvent(ts=timestamp(), job_id=spec.run_id, event="final_eval", message=message, point=final))

    writer.phase = "saving"
    model_dir = Path(spec.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    # Stage on the same filesystem, then move file by file; manifest.json goes last, so a directory
    # without a manifest is never mistaken for a complete model.
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".staging-") as staging:
        staged = Path(staging)
        names = save_dir_files(trained.model.cpu(), staged)
        for name in TOKENIZER_FILES:
            shutil.copyfile(tokenizer_dir / name, staged / name)
        names = sorted({*names, *TOKENIZER_FILES})
        for name in names:
            atomic_move(staged / name, model_dir / name)
    manifest = ModelManifest(
        run_id=spec.run_id,
        tokenizer_id=spec.tokenizer_id,
        request=request,
        total_steps=request.total_steps,
        vocab_size=data.vocab_size,
        metrics=metrics,
        files=file_entries(model_dir, names),
        created_at=utcnow(),
        versions={name: version(name) for name in ("torch", "transformers", "tokenizers")},
        dataset=DatasetInfo(
            key=data.key,
            corpus_sha256=data.corpus_sha256,
            tokenizer_sha256=data.tokenizer_sha256,
            train_tokens=data.train_tokens,
            val_tokens=data.val_tokens,
            train_documents=data.train_documents,
            val_documents=data.val_documents,
            val_bytes=data.val_bytes,
            reused=data.reused,
        ),
        device=str(device),
        threads=torch.get_num_threads(),
        timings=Timings(
            data_preparation=preparation_seconds,
            training=trained.seconds,
            evaluation=evaluation_seconds,
            saving=time.monotonic() - clock,
        ),
        tokens_per_second=trained.tokens_seen / trained.seconds if trained.seconds > 0 else 0.0,
        checkpoints=read_index(Path(spec.run_dir)),
        parent=spec.parent,
    )
    return Finished(metrics=metrics, model_dir=str(model_dir), manifest=manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mt_trainer_worker.training")
    parser.add_argument("--nice", type=int, default=0, help="niceness increment for this process")
    args = parser.parse_args(argv)
    spec = codec.decode(sys.stdin.buffer.read(), RunSpec)
    # Keep the real stdout for messages; route stray prints from libraries to stderr.
    writer = open_channel(spec.run_id)
    if args.nice:
        os.nice(args.nice)
    stop = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # During training, finish the step and checkpoint it (a periodic checkpoint being written is finished
        # first); in any other phase, stop at once (every artifact write is atomic, so nothing half-written is
        # left looking complete).
        stop.set()
        if writer.phase not in {"training", "checkpointing"}:
            raise StopTraining(f"stopped by signal {signum} while {writer.phase}")

    signal.signal(signal.SIGTERM, on_sigterm)
    watch_parent(writer)
    roots = {"APP__RUNS_ROOT": spec.runs_root, "APP__ARTIFACTS_ROOT": spec.artifacts_root}
    try:
        finished = run(spec, writer, stop)
    except StopTraining as exc:
        writer.write("info", "stopped", str(exc), step=exc.step)
        return 143
    except Exception as exc:  # noqa: BLE001 - any crash must still end with a failed message
        writer.send(failure(exc, "lower batch_size, block_size or n_embd", roots))
        return 1
    if not math.isfinite(finished.metrics.val_loss):
        writer.send(Failed(code="diverged", message="the validation loss is not finite; lower learning_rate"))
        return 1
    writer.send(finished)
    return 0


if __name__ == "__main__":
    leave(main())
