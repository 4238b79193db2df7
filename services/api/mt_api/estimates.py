"""Dry-run estimates: what a tokenizer job or a training run would cost, computed before it is queued from
the corpus, the tokenizer and figures measured on this machine. Plain functions (they read files, so call
them off the event loop); ``mt_contracts.corpora`` describes the answers.

Sources of the formulas:

- training FLOPs per token ``6 * N + 6 * n_layer * block_size * n_embd``: Kaplan et al. 2020, "Scaling Laws
  for Neural Language Models", section 2.1 and Table 1 (forward ``2N + 2 n_layer n_ctx d_attn``, backward
  twice the forward); here ``N`` counts the embeddings too, since on the small models this service trains the
  embedding and output matrix cost as much as the blocks.
- activation memory per layer ``block_size * batch_size * n_embd * (34 + 5 * n_head * block_size / n_embd)``
  bytes at 16 bits: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
  Models", eq. 2; doubled for fp32.
- tokenizer time and memory: per-MB figures measured on this machine by ``scripts/measure_estimates.py``
  (docs/estimates.md).
"""

from __future__ import annotations

import functools
import random
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from tokenizers import Tokenizer

from mt_api.tokenizer_cache import read_tokenizer
from mt_contracts.corpora import RunEstimate, TokenizerEstimate
from mt_contracts.families import count_parameters
from mt_contracts.jobs import RunJob
from mt_contracts.requests import TrainRunRequest, TrainTokenizerRequest
from mt_contracts.settings import EstimateSettings
from mt_contracts.tokenizers import SENTENCEPIECE_INPUT_SENTENCE_SIZE, SENTENCEPIECE_MODEL_TYPE
from mt_storage.corpora import corpus_name_of, read_corpus
from mt_storage.corpus import count_lines, iter_corpus_lines
from mt_storage.datasets import (
    PREPARED_JSON,
    cached_counts,
    corpus_fingerprint,
    dataset_key,
    held_out_files,
    pieces,
    run_split_key,
    val_line_count,
)
from mt_storage.files import sha256_file

MB = 1_000_000


class Cost(NamedTuple):
    """A tokenizer method's measured cost: ``seconds`` = base_seconds + seconds_per_mb * MB trained on, peak RSS
    bytes = base_bytes + bytes_per_mb * MB (MB = 10^6 bytes)."""

    base_seconds: float
    seconds_per_mb: float
    base_bytes: float
    bytes_per_mb: float


# Measured by scripts/measure_estimates.py (two sizes, a line through them; docs/estimates.md).
TOKENIZER_COSTS: dict[str, Cost] = {
    "bpe": Cost(0.85, 0.19, 46e6, 0.67e6),
    "rustbpe": Cost(0.41, 0.18, 49e6, 0.67e6),
    "sentencepiece-unigram": Cost(0.93, 0.46, 55e6, 18e6),
    "sentencepiece-bpe": Cost(0.58, 0.12, 58e6, 7.7e6),
}
# Peak RSS of a training process around a tiny model: the interpreter, torch and transformers (measured: a
# 1-layer GPT-2 forward and backward, 369 MB; docs/estimates.md).
RUN_BASE_BYTES = 370e6


def _cost_key(request: TrainTokenizerRequest) -> str:
    """The ``TOKENIZER_COSTS`` row of a request: its method, and SentencePiece's model type (default unigram)."""
    if request.method != "sentencepiece":
        return request.method
    return f"sentencepiece-{request.model_type or SENTENCEPIECE_MODEL_TYPE}"


def corpus_counts(corpus_root: Path, corpus_path: str, files: list[Path]) -> tuple[int, int]:
    """Bytes and lines of the corpus: an uploaded corpus's manifest when ``corpus_path`` names one whole,
    else the files' sizes and ``count_lines`` (a quick pass over the bytes, cached per file)."""
    info = read_corpus(corpus_root, corpus_name_of(corpus_path))
    if info is not None and corpus_path.strip("/") == info.name:
        return info.bytes, info.lines
    total_bytes = total_lines = 0
    for path in files:
        stat = path.stat()
        total_bytes += stat.st_size
        total_lines += _lines_of(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return total_bytes, total_lines


@functools.lru_cache(maxsize=4096)
def _lines_of(path: str, inode: int, size: int, mtime_ns: int) -> int:
    """``count_lines`` of one file, counted again only when its stat data changed (a 1 GB corpus takes
    about a second, which every submission naming it would pay)."""
    return count_lines([Path(path)])


def estimate_tokenizer(
    request: TrainTokenizerRequest, files: list[Path], corpus_root: Path, settings: EstimateSettings
) -> TokenizerEstimate:
    """Expected peak memory (bytes) and wall time (seconds) of tokenizer training on ``files``, by method."""
    corpus_bytes, corpus_lines = corpus_counts(corpus_root, request.corpus_path, files)
    cost = TOKENIZER_COSTS[_cost_key(request)]
    line_bytes = corpus_bytes / max(1, corpus_lines)
    training_bytes = corpus_bytes
    sampled_lines = None
    if request.method == "sentencepiece":
        sent = request.input_sentence_size
        sampled_lines = SENTENCEPIECE_INPUT_SENTENCE_SIZE if sent is None else sent
    if sampled_lines and corpus_lines > sampled_lines:
        training_bytes = int(sampled_lines * line_bytes)
    megabytes = training_bytes / MB
    peak = int(cost.base_bytes + cost.bytes_per_mb * megabytes)
    seconds = cost.base_seconds + cost.seconds_per_mb * megabytes
    suggestion: int | None = None
    warnings: list[str] = []
    limit = settings.tokenizer_memory_bytes
    if _cost_key(request) == "sentencepiece-unigram" and peak > limit:
        fitting_bytes = max(0.0, (limit - cost.base_bytes) / cost.bytes_per_mb * MB)
        suggestion = max(1000, int(fitting_bytes / max(1.0, line_bytes)))
        warnings.append(
            f"unigram training on {megabytes:.0f} MB is expected to peak at {peak / 1e9:.1f} GB, above "
            f"ESTIMATE__TOKENIZER_MEMORY_BYTES ({limit / 1e9:.1f} GB); send input_sentence_size={suggestion}"
        )
    return TokenizerEstimate(
        method=_cost_key(request),
        corpus_bytes=corpus_bytes,
        corpus_lines=corpus_lines,
        training_bytes=training_bytes,
        peak_memory_bytes=peak,
        seconds=round(seconds, 3),
        suggested_input_sentence_size=suggestion,
        warnings=warnings,
    )


def flops_per_token(request: TrainRunRequest, n_params: int) -> int:
    """Training FLOPs per token: ``6 N + 6 n_layer block_size n_embd`` (Kaplan et al. 2020; module docstring)."""
    return 6 * n_params + 6 * request.n_layer * request.block_size * request.n_embd


def measured_throughput(recent: list[RunJob], count: int) -> tuple[float | None, int]:
    """The median training FLOP/s of up to ``count`` of ``recent`` runs that succeeded with metrics, and how
    many were used; ``(None, 0)`` when there is none."""
    rates = [
        flops_per_token(run.request, run.metrics.n_params) * run.metrics.tokens_seen / run.metrics.training_seconds
        for run in recent
        if run.metrics is not None and run.metrics.training_seconds > 0
    ][:count]
    return (statistics.median(rates), len(rates)) if rates else (None, 0)


class _Sample(NamedTuple):
    train_bytes: int
    train_documents: int
    sampled_bytes: int
    sampled_tokens: int
    distinct_tokens: int
    document_bytes: list[int]


# A real submission is estimated too, so the costly parts are cached in this process: a file's sha256 by
# (path, inode, size, mtime in ns), as git's index caches stat data, and a sampled encode by its dataset key
# (corpus digest, tokenizer digest, split) and sample size. Estimates only: no security check reads these.
_SAMPLES: dict[tuple[str, int], _Sample] = {}
_SAMPLES_KEPT = 64


@functools.lru_cache(maxsize=4096)
def _digest_of(path: str, inode: int, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def _file_digest(path: Path) -> str:
    """``sha256_file(path)``, computed again only when the file's stat data changed."""
    stat = path.stat()
    return _digest_of(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _tokenizer_of(path: str, inode: int, size: int, mtime_ns: int) -> Tokenizer:
    return read_tokenizer(Path(path))


def load_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer saved at ``path``, parsed again only when the file's stat data changed.

    Raises:
        OSError: the file is missing or unreadable, or not a ``tokenizers`` file (``read_tokenizer``).
    """
    stat = path.stat()
    return _tokenizer_of(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _train_documents(files: list[Path], val_fraction: float, seed: int) -> Iterator[Iterator[str]]:
    """The training split's documents as the training process splits them (``mt_storage.datasets``)."""
    if len(files) == 1:
        total = sum(1 for _ in iter_corpus_lines(files))
        keep = total - val_line_count(total, val_fraction)
        lines = iter_corpus_lines(files)
        yield (line for _, line in zip(range(keep), lines, strict=False))
        return
    held_out = held_out_files(len(files), val_fraction, seed)
    for index, path in enumerate(files):
        if index not in held_out:
            yield iter_corpus_lines([path])


def _sample(tokenizer: Tokenizer, request: TrainRunRequest, files: list[Path], sample_bytes: int) -> _Sample:
    """Encode a seeded sample of the training split's pieces (all of them when it is under ``sample_bytes``)."""
    approximate = sum(path.stat().st_size for path in files) * (1 - request.val_fraction)
    keep = min(1.0, sample_bytes / max(1.0, approximate))
    chooser = random.Random(0)
    train_bytes = sampled_bytes = sampled_tokens = documents = 0
    distinct: set[int] = set()
    document_bytes: list[int] = []
    batch: list[str] = []

    def flush() -> None:
        nonlocal sampled_tokens
        for encoding in tokenizer.encode_batch_fast(batch, add_special_tokens=False):
            sampled_tokens += len(encoding.ids)
            distinct.update(encoding.ids)
        batch.clear()

    for document in _train_documents(files, request.val_fraction, request.seed):
        documents += 1
        size = 0
        for piece in pieces(document):
            length = len(piece.encode())
            size += length
            if keep >= 1.0 or chooser.random() < keep:
                batch.append(piece)
                sampled_bytes += length
                if len(batch) >= 256:
                    flush()
        train_bytes += size
        document_bytes.append(size)
    flush()
    return _Sample(train_bytes, documents, sampled_bytes, sampled_tokens, len(distinct), document_bytes)


def estimate_run(
    request: TrainRunRequest,
    *,
    files: list[Path],
    corpus_root: Path,
    tokenizer_file: Path,
    dataset_cache: Path,
    recent: list[RunJob],
    settings: EstimateSettings,
    fetch: Callable[[Path], object] = Path.is_file,
) -> RunEstimate:
    """The run's parameters, training tokens (exact from the prepared-dataset cache, else sampled), FLOPs per
    token, steps, epochs, expected seconds and peak memory (bytes), and warnings. ``fetch`` brings a file of
    the dataset cache from the object store (``Mirror.pull_file``) before it is read.

    Raises:
        OSError: the tokenizer or a corpus file cannot be read.
    """
    corpus_bytes, corpus_lines = corpus_counts(corpus_root, request.corpus_path, files)
    tokenizer = load_tokenizer(tokenizer_file)
    vocab_size = tokenizer.get_vocab_size()
    n_params = count_parameters(request, vocab_size)  # the family's own count, without torch
    per_token = flops_per_token(request, n_params)
    warnings: list[str] = []
    split = run_split_key(request.val_fraction, request.seed)
    key = dataset_key(corpus_fingerprint(files, _file_digest), _file_digest(tokenizer_file), split)
    fetch(dataset_cache / key[:32] / PREPARED_JSON)
    cached = cached_counts(dataset_cache, key)
    sample: _Sample | None = None
    if cached is None or cached.median_train_document_tokens is None or cached.distinct_train_tokens is None:
        sample = _SAMPLES.get((key, settings.sample_bytes))
        if sample is None:
            sample = _sample(tokenizer, request, files, settings.sample_bytes)
            _SAMPLES[(key, settings.sample_bytes)] = sample
            while len(_SAMPLES) > _SAMPLES_KEPT:
                _SAMPLES.pop(next(iter(_SAMPLES)))
    # The warnings read the prepared dataset's exact figures when it recorded them, else the sample's.
    median: float | None = None
    distinct: int | None = None
    if cached is not None and cached.median_train_document_tokens is not None:
        median, distinct = cached.median_train_document_tokens, cached.distinct_train_tokens
    train_tokens = cached.train_tokens if cached is not None else 0
    if sample is not None:
        ratio = sample.sampled_tokens / max(1, sample.sampled_bytes)
        if cached is None:
            train_tokens = round(sample.train_bytes * ratio) + sample.train_documents
        if median is None and sample.document_bytes:
            median = statistics.median([round(size * ratio) for size in sample.document_bytes])
        if distinct is None and sample.sampled_bytes == sample.train_bytes:
            distinct = sample.distinct_tokens  # a count of the whole split only, not of a part of it
    if distinct is not None and distinct < vocab_size // 4:
        warnings.append(
            f"only {distinct} of the tokenizer's {vocab_size} tokens occur in the training text: "
            "most embedding rows never train; a tokenizer with a smaller vocab_size suits this corpus"
        )
    if median is not None and request.block_size > median:
        warnings.append(
            f"block_size {request.block_size} is above the median document length ({median:.0f} tokens): "
            "most windows span several documents; a smaller block_size fits this corpus"
        )
    steps = request.total_steps
    tokens = steps * request.tokens_per_step
    epochs = tokens / max(1, train_tokens)
    if epochs > settings.max_epochs:
        warnings.append(
            f"the run reads the training split {epochs:.1f} times (above ESTIMATE__MAX_EPOCHS "
            f"{settings.max_epochs:g}): risk of overfitting; lower max_steps or add text"
        )
    rate, used = measured_throughput(recent, settings.throughput_runs)
    if rate is None:
        warnings.append("no run has succeeded on this worker pool yet, so there is no measured throughput for a time")
    d, block, batch = request.n_embd, request.block_size, request.batch_size
    activations = 2 * request.n_layer * block * batch * d * (34 + 5 * request.n_head * block / d)
    logits = 3 * 4 * batch * block * vocab_size
    peak = int(RUN_BASE_BYTES + 16 * n_params + activations + logits)
    return RunEstimate(
        corpus_bytes=corpus_bytes,
        corpus_lines=corpus_lines,
        n_params=n_params,
        train_tokens=train_tokens,
        tokens_exact=cached is not None,
        flops_per_token=per_token,
        steps=steps,
        tokens=tokens,
        epochs=round(epochs, 4),
        flops_per_second=rate,
        throughput_runs=used,
        seconds=None if rate is None else round(tokens * per_token / rate, 3),
        peak_memory_bytes=peak,
        warnings=warnings,
    )
