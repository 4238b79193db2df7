"""Entry point of the training process: ``python -m mt_trainer_worker.training [--nice N] [--spec-file F]``,
the ``RunSpec`` on stdin or in ``F`` (the child protocol of ``mt_storage.child``). Started by ``torchrun``
(``mt_trainer_worker.launchers``), every rank runs it: rank 0 writes the messages and the artifacts, the
other ranks train beside it and write their messages to stderr; a failed collective (a peer died) ends a
rank with code 1 without a ``failed`` message, so the worker starts the whole group again from the last
checkpoint.

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
from mt_storage.child import SUPERVISOR_ENV, Channel, die_with_parent, failure, leave, open_channel, watch_parent
from mt_storage.files import atomic_move, file_entries
from mt_trainer_worker.training import distributed
from mt_trainer_worker.training.data import open_tokens, prepare_data
from mt_trainer_worker.training.distributed import SINGLE, Ranks, ranks_from_env
from mt_trainer_worker.training.loop import (
    LN2,
    StopTraining,
    pick_device,
    safe_exp,
    save_dir_files,
    score_tokens,
    train,
)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def run(spec: RunSpec, writer: Channel, stop: threading.Event, ranks: Ranks = SINGLE) -> Finished | None:
    """Prepare data, train, score the whole validation split (sent as the final validation), and write the
    model files; the ``manifest.json`` that commits them travels in ``Finished`` for the worker to write.
    A rank other than 0 trains and scores its part, and returns ``None``."""
    request = spec.request
    tokenizer_dir = Path(spec.tokenizer_dir)
    corpus_files = [Path(p) for p in spec.corpus_files]
    clock = time.monotonic()
    if not ranks.main:
        distributed.barrier(ranks)  # rank 0 encodes the corpus into the cache; the others then read it there
    data = prepare_data(
        tokenizer_dir / "tokenizer.json", corpus_files, request.val_fraction, request.seed, Path(spec.dataset_cache)
    )
    if ranks.main:
        distributed.barrier(ranks)
    preparation_seconds, clock = time.monotonic() - clock, time.monotonic()
    trained = train(spec, data, writer, stop, ranks)
    clock = time.monotonic()

    writer.phase = "evaluating"
    val = open_tokens(data.val_path, data.dtype)
    device = next(trained.model.parameters()).device
    part = score_tokens(
        trained.model, val, request.block_size, request.batch_size, device, ranks, bf16=request.precision == "bf16"
    )
    total_nats, scored_sum = distributed.all_sum([part[0], float(part[1])], ranks, device)
    scored = int(scored_sum)
    evaluation_seconds, clock = time.monotonic() - clock, time.monotonic()
    if not ranks.main:
        return None
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
        tokens_seen=trained.tokens_seen,
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
        world_size=ranks.world_size,
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
    parser.add_argument("--spec-file", default="", help="read the RunSpec from this file, not stdin (torchrun)")
    args = parser.parse_args(argv)
    spec = codec.decode(Path(args.spec_file).read_bytes() if args.spec_file else sys.stdin.buffer.read(), RunSpec)
    ranks = ranks_from_env(os.environ)
    if ranks.world_size > 1:
        die_with_parent()  # torchrun's ranks are in sessions of their own
    # Keep the real stdout for messages (rank 0's); route stray prints from libraries to stderr.
    writer = open_channel(spec.run_id, ranks.main)
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
    supervisor = os.environ.get(SUPERVISOR_ENV)
    watch_parent(writer, supervisor=int(supervisor) if supervisor else None)
    roots = {"APP__RUNS_ROOT": spec.runs_root, "APP__ARTIFACTS_ROOT": spec.artifacts_root}
    try:
        distributed.start(ranks, pick_device(spec.request.device, ranks.local_rank))
        finished = run(spec, writer, stop, ranks)
    except StopTraining as exc:
        writer.write("info", "stopped", str(exc), step=exc.step)
        return 143
    except Exception as exc:  # noqa: BLE001 - any crash must still end with a failed message
        if distributed.is_peer_failure(exc, ranks):
            # A peer rank (or its node) is gone: not this run's fault, so no failed message; the worker
            # starts the whole group again from the last checkpoint.
            writer.write("error", "peer_failed", f"rank {ranks.rank}: a collective failed: {exc}", rank=ranks.rank)
            return 1
        writer.send(failure(exc, "lower batch_size, block_size or n_embd", roots))
        return 1
    finally:
        distributed.finish()
    if finished is None:
        return 0
    if not math.isfinite(finished.metrics.val_loss):
        writer.send(Failed(code="diverged", message="the validation loss is not finite; lower learning_rate"))
        return 1
    writer.send(finished)
    return 0


if __name__ == "__main__":
    leave(main())
