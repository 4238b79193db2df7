"""The evaluation process: ``python -m mt_trainer_worker.training.evaluate [--nice N]``, the ``EvalSpec`` on
stdin (the child protocol of ``mt_storage.child``).

Scores a text with a run's weights and writes ``evaluated`` (or ``failed``) on stdout; like the training
process, stray library output goes to stderr. Exit code 0 means ``evaluated`` was sent, 1 ``failed``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer

from mt_contracts import codec
from mt_contracts.evaluation import EvalSpec, Evaluated
from mt_contracts.jobs import EvalMetrics, utcnow
from mt_storage.child import Channel, failure, leave, open_channel, watch_parent
from mt_storage.torch_weights import load_model
from mt_trainer_worker.training.data import open_tokens, prepare_corpus, prepare_data
from mt_trainer_worker.training.loop import LN2, pick_device, safe_exp, score_tokens


def evaluate(spec: EvalSpec, writer: Channel) -> EvalMetrics:
    """Score the text of ``spec`` with its weights: every token once, in non-overlapping windows of
    ``block_size`` (``loop.score_tokens``).

    ``bytes`` is the UTF-8 size of the text scored: the split's own count, or, when ``max_tokens`` cuts the
    text, the size of the scored tokens decoded (special tokens dropped). bits per byte = total nats / ln 2
    / bytes (the definition of e.g. Gao et al. 2020, The Pile, section 5).

    Raises:
        TrainingFailure: ``empty_corpus``, ``tokenizer_incompatible``, ``weights_missing``.
        CorpusDecodeError: a corpus file is not UTF-8.
    """
    tokenizer_file = Path(spec.weights.tokenizer_path)
    files = [Path(path) for path in spec.corpus_files]
    cache = Path(spec.dataset_cache)
    if spec.split == "corpus":
        data = prepare_corpus(tokenizer_file, files, cache)
    else:
        data = prepare_data(tokenizer_file, files, spec.val_fraction, spec.seed, cache)
    if spec.split == "train":
        tokens, text_bytes = open_tokens(data.train_path, data.dtype), data.train_bytes
    else:
        tokens, text_bytes = open_tokens(data.val_path, data.dtype), data.val_bytes
    if spec.max_tokens is not None and spec.max_tokens < len(tokens) - 1:
        # The first token is context only (an end-of-text token): keep it and max_tokens after it.
        tokens = tokens[: spec.max_tokens + 1]
        decoded = Tokenizer.from_file(str(tokenizer_file)).decode([int(t) for t in tokens[1:]])
        text_bytes = len(decoded.encode())
    writer.phase = "evaluating"
    device = pick_device(spec.device)
    model = load_model(spec.weights, device)
    started = time.monotonic()
    total_nats, scored = score_tokens(
        model, tokens, spec.block_size, spec.batch_size, device, bf16=spec.precision == "bf16"
    )
    loss = total_nats / scored
    return EvalMetrics(
        eval_id=spec.eval_id,
        run_id=spec.weights.run_id,
        tokenizer_id=spec.weights.tokenizer_id,
        split=spec.split,
        corpus_path=spec.corpus_path,
        checkpoint=spec.weights.checkpoint,
        step=spec.weights.step,
        loss=loss,
        perplexity=safe_exp(loss),
        bits_per_byte=total_nats / LN2 / max(1, text_bytes),
        tokens=scored,
        bytes=text_bytes,
        seconds=time.monotonic() - started,
        created_at=utcnow(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mt_trainer_worker.training.evaluate")
    parser.add_argument("--nice", type=int, default=0, help="niceness increment for this process")
    args = parser.parse_args(argv)
    spec = codec.decode(sys.stdin.buffer.read(), EvalSpec)
    writer = open_channel(spec.eval_id)
    if args.nice:
        os.nice(args.nice)
    torch.manual_seed(0)
    watch_parent(writer)
    try:
        metrics = evaluate(spec, writer)
    except Exception as exc:  # noqa: BLE001 - any crash must still end with a failed message
        roots = {"APP__RUNS_ROOT": str(Path(spec.dataset_cache).parent)}
        writer.send(failure(exc, "evaluate with a smaller max_tokens", roots))
        return 1
    writer.send(Evaluated(metrics=metrics))
    return 0


if __name__ == "__main__":
    leave(main())
