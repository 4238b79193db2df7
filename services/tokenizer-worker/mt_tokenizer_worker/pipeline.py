"""Train one tokenizer, top to bottom: read the corpus, hold lines out, train, measure, write the artifacts
and describe them in a manifest, which the worker writes as ``manifest.json`` (the commit point) once it has
checked that its attempt still owns the job. A plain blocking function: the worker runs it in a child process
(``mt_tokenizer_worker.process``) so that a cancel can stop it; tests call it directly."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from tokenizers import Tokenizer

from mt_contracts import codec
from mt_contracts.manifests import TokenizerManifest
from mt_contracts.tokenizer_process import TokenizerSpec, TokenizerTrained
from mt_contracts.tokenizers import TokenizerStatistics, resolve_config
from mt_storage.corpus import CorpusReader, count_lines, resolve_corpus_files
from mt_storage.files import file_entries
from mt_storage.joblog import EventLog
from mt_tokenizer_worker import TokenizerTrainingError
from mt_tokenizer_worker.methods import METHODS
from mt_tokenizer_worker.methods.base import TOKENIZER_JSON
from mt_tokenizer_worker.sampling import sample_lines
from mt_tokenizer_worker.statistics import HoldoutSplit, heldout_statistics, length_histogram

VERSIONED_PACKAGES = ("tokenizers", "sentencepiece", "rustbpe")


def train_tokenizer(spec: TokenizerSpec, log: EventLog) -> TokenizerTrained:
    """Train ``spec``'s tokenizer into ``spec.out_dir``; ``log`` receives the phases (reading, training,
    statistics, writing). The result carries the manifest; nothing here writes ``manifest.json``.

    Raises:
        TokenizerTrainingError: ``unknown_method``, ``empty_corpus``, or the method's own codes
            (``no_merges_learned``, ``vocab_size_too_large``...).
        CorpusPathError: the corpus vanished (``CorpusDecodeError``: not UTF-8; ``CorpusFormatError``: a bad
            ``.jsonl`` line).
    """
    request = spec.request
    config = resolve_config(request)
    method = METHODS.get(request.method)
    if method is None:
        raise TokenizerTrainingError("unknown_method", f"method {request.method!r} is not installed in this worker")
    corpus_root, out_dir = Path(spec.corpus_root), Path(spec.out_dir)
    files, skipped = resolve_corpus_files(corpus_root, request.corpus_path)
    log.write("info", "reading", f"reading {len(files)} file(s) from {request.corpus_path}", files=len(files))
    reader = CorpusReader(
        files,
        root=corpus_root.resolve(),
        text_field=config.text_field,
        encoding_errors=config.encoding_errors,
        max_line_bytes=method.max_line_bytes(config),
        skipped=skipped,
    )
    corpus_bytes = sum(path.stat().st_size for path in files)
    split = HoldoutSplit(reader.batches(), config.holdout_fraction, config.seed, corpus_bytes=corpus_bytes)
    training = split.training()
    max_lines = method.max_training_lines(config)
    if max_lines is not None and corpus_bytes > max_lines and count_lines(files, reader.max_line_bytes) > max_lines:
        training = sample_lines(training, max_lines, config.seed)
    log.write("info", "training", f"training {request.method} with vocab_size={config.vocab_size}")
    started = time.perf_counter()
    try:
        trained = method.train(training, config, out_dir)
    except TokenizerTrainingError:
        # A corpus without text makes the library fail in its own words: say what it is. A method that failed
        # before it read everything failed for its own reason.
        if reader.finished:
            _raise_if_empty(reader.has_text, split.training_has_text, request.corpus_path)
        raise
    seconds = time.perf_counter() - started
    _raise_if_empty(reader.has_text, split.training_has_text, request.corpus_path)
    corpus = reader.stats()
    log.write(
        "info", "statistics", f"measuring on {len(split.heldout)} held-out line(s)", heldout_fraction=split.fraction,
        vocab_size=trained.vocab_size, corpus_bytes=corpus.bytes, seconds=seconds,
    )  # fmt: skip
    tokenizer = Tokenizer.from_file(str(out_dir / TOKENIZER_JSON))
    statistics = TokenizerStatistics(
        vocab_size=trained.vocab_size,
        corpus=corpus,
        training_lines=split.training_lines,
        sampled_lines=split.training_lines if trained.sampled_lines is None else trained.sampled_lines,
        heldout=heldout_statistics(tokenizer, split.heldout, trained),
        token_length_histogram=length_histogram(trained.token_byte_lengths),
        training_seconds=seconds,
        megabytes_per_second=corpus.bytes / 1e6 / seconds if seconds > 0 else 0.0,
    )
    log.write("info", "writing", f"writing the manifest of {len(trained.files)} file(s)")
    manifest = TokenizerManifest(
        tokenizer_id=spec.tokenizer_id,
        method=request.method,
        request=request,
        config=config,
        seed=config.seed,
        vocab_size=trained.vocab_size,
        special_tokens=trained.special_tokens,
        corpus=reader.fingerprint(),
        statistics=statistics,
        files=file_entries(out_dir, trained.files),
        created_at=datetime.now(UTC),
        versions=_versions(),
        estimate=spec.estimate,
    )
    return TokenizerTrained(
        vocab_size=trained.vocab_size,
        special_tokens=trained.special_tokens,
        statistics=statistics,
        manifest=msgspec.Raw(codec.encode(manifest)),
    )


def _raise_if_empty(has_text: bool, training_has_text: bool, corpus_path: str) -> None:
    if not has_text:
        raise TokenizerTrainingError("empty_corpus", f"{corpus_path!r} holds no non-whitespace text")
    if not training_has_text:
        raise TokenizerTrainingError(
            "empty_corpus",
            f"every non-blank line of {corpus_path!r} was held out; lower holdout_fraction or add text",
        )


def _versions() -> dict[str, str]:
    """The installed versions of ``VERSIONED_PACKAGES``, read from their metadata without importing them."""
    # Imported here, after the statistics: importlib.metadata (with email and zipfile) is 2 MB of a job's
    # peak memory, and only the manifest needs it.
    from importlib.metadata import version

    return {name: version(name) for name in VERSIONED_PACKAGES}
