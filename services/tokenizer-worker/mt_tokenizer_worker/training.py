"""Train one tokenizer job: plain functions, called by the arq task in ``worker.py``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import msgspec

from mt_contracts import codec
from mt_contracts.jobs import JobError, TokenizerJob, TokenizerResult
from mt_contracts.manifests import TokenizerManifest
from mt_storage import CorpusPathError
from mt_storage.corpus import CorpusDecodeError, iter_corpus_lines, resolve_corpus
from mt_storage.files import atomic_write_bytes, file_entries
from mt_storage.joblog import JobLog
from mt_storage.jobs import JobStore, utcnow
from mt_storage.layout import LOGS, MANIFEST, Layout
from mt_tokenizer_worker import TokenizerTrainingError
from mt_tokenizer_worker.methods import METHODS

logger = logging.getLogger(__name__)


class _CountingLines:
    """Wraps the corpus line stream to count UTF-8 bytes and non-blank lines as the trainer reads them."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.bytes = 0
        self.non_blank_lines = 0

    def __iter__(self) -> Iterator[str]:
        for line in self._lines:
            self.bytes += len(line.encode())
            if not line.isspace():
                self.non_blank_lines += 1
            yield line


def train_tokenizer(layout: Layout, job: TokenizerJob, log: JobLog) -> TokenizerResult:
    """Train ``job``'s tokenizer and write its artifacts, ``manifest.json`` last.

    Blocking (CPU-bound); run it in a thread. Raises:
        TokenizerTrainingError: ``empty_corpus``, ``no_merges_learned``, ``unknown_method``.
        CorpusPathError / CorpusDecodeError: the corpus vanished or is not UTF-8.
    """
    request = job.request
    method = METHODS.get(request.method)
    if method is None:
        raise TokenizerTrainingError("unknown_method", f"method {request.method!r} is not installed in this worker")
    files = resolve_corpus(layout.corpus_root, request.corpus_path)
    out_dir = layout.tokenizer_dir(job.id)
    log.write("info", "corpus_resolved", f"training on {len(files)} file(s)", files=len(files))
    started = time.perf_counter()
    lines = _CountingLines(iter_corpus_lines(files))
    empty = TokenizerTrainingError("empty_corpus", f"{request.corpus_path!r} holds no non-whitespace text")
    try:
        trained = method.train(iter(lines), request, out_dir)
    except TokenizerTrainingError as exc:
        raise (empty if lines.non_blank_lines == 0 else exc) from None
    seconds = time.perf_counter() - started
    if lines.non_blank_lines == 0:
        raise empty
    manifest = TokenizerManifest(
        tokenizer_id=job.id,
        method=request.method,
        request=request,
        vocab_size=trained.vocab_size,
        special_tokens=trained.special_tokens,
        corpus_files=[path.relative_to(layout.corpus_root).as_posix() for path in files],
        corpus_bytes=lines.bytes,
        training_seconds=seconds,
        files=file_entries(out_dir, trained.files),
        created_at=utcnow(),
        versions={"tokenizers": version("tokenizers")},
    )
    atomic_write_bytes(out_dir / MANIFEST, codec.encode(manifest))
    log.write(
        "info", "trained", f"vocab_size={trained.vocab_size} in {seconds:.2f} s",
        vocab_size=trained.vocab_size, corpus_bytes=lines.bytes, seconds=seconds,
    )  # fmt: skip
    return TokenizerResult(
        vocab_size=trained.vocab_size,
        special_tokens=trained.special_tokens,
        corpus_bytes=lines.bytes,
        training_seconds=seconds,
        artifact_dir=str(out_dir),
    )


async def run_tokenizer_job(store: JobStore[TokenizerJob], layout: Layout, tokenizer_id: str) -> None:
    """Move the job to ``running``, train, and record ``succeeded`` or ``failed`` with an actionable error.

    Never leaves the job ``running`` on an exception; ``asyncio.CancelledError`` (worker shutdown) is
    re-raised with the record left ``running`` so arq's retry takes it over.
    """
    job = await store.mark_running(tokenizer_id)
    if job is None:
        logger.info("job already finished", extra={"event": "job_skipped", "job_id": tokenizer_id})
        return
    log = JobLog(layout.tokenizer_dir(tokenizer_id) / LOGS, tokenizer_id)
    log.write("info", "started", f"attempt {job.attempts}", attempt=job.attempts)
    try:
        result = await asyncio.to_thread(train_tokenizer, layout, job, log)
    except TokenizerTrainingError as exc:
        await _fail(store, log, tokenizer_id, JobError(code=exc.code, message=exc.message))
    except CorpusDecodeError as exc:
        await _fail(store, log, tokenizer_id, JobError(code="invalid_utf8", message=str(exc)))
    except CorpusPathError as exc:
        await _fail(store, log, tokenizer_id, JobError(code="corpus_unavailable", message=str(exc)))
    except Exception as exc:
        logger.exception("tokenizer training crashed", extra={"event": "job_crashed", "job_id": tokenizer_id})
        message = f"unexpected {type(exc).__name__} while training; see the worker log for job {tokenizer_id}"
        await _fail(store, log, tokenizer_id, JobError(code="internal_error", message=message))
    else:
        done = utcnow()
        await store.update(
            tokenizer_id,
            lambda r: msgspec.structs.replace(r, status="succeeded", finished_at=done, updated_at=done, result=result),
        )
        log.write("info", "succeeded", "tokenizer ready", artifact_dir=str(Path(result.artifact_dir)))


async def _fail(store: JobStore[TokenizerJob], log: JobLog, tokenizer_id: str, error: JobError) -> None:
    log.write("error", "failed", error.message, code=error.code)
    await store.mark_failed(tokenizer_id, error)
