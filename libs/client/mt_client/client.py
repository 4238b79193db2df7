"""``Client`` (blocking: scripts, notebooks) and ``AsyncClient`` (asyncio) for the Model Trainer API.

Both send the same ``mt_client.calls`` and decode answers into the ``mt_contracts`` Structs the server
encodes. A connection error (the request never reached the API) and a ``503`` are retried ``retries`` times
with exponential backoff (``backoff`` seconds, doubled each time, at most ``MAX_BACKOFF``; a ``Retry-After``
header is honoured); every other answer of 400 or more raises its ``ApiError`` at once. ``follow`` reconnects
a dropped stream with ``Last-Event-ID`` (so no event is lost or repeated) and ``download`` resumes an
interrupted transfer with ``Range``/``If-Range`` and checks the file's sha256 before renaming it into place.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, TypeVar

import httpx
import msgspec

from mt_client import calls
from mt_client.calls import ArtifactKind, Call
from mt_client.errors import IntegrityError as IntegrityMismatch
from mt_client.errors import NotFound, Problem, ProtocolError, Unavailable, Unreachable, api_error
from mt_client.models import ArtifactFile, ArtifactHead, ArtifactListing, Downloaded, Health, Streamed
from mt_client.sse import SseEvent, SseParser
from mt_contracts.corpora import CorpusInfo, RunEstimate, TokenizerEstimate
from mt_contracts.events import EVENT_KINDS, JobEvent, StatusEvent, decode_job_event
from mt_contracts.generation import ExportResponse, GenerateResponse
from mt_contracts.jobs import (
    TERMINAL_STATUSES,
    CheckpointInfo,
    EvalJob,
    JobAccepted,
    JobStatus,
    RunJob,
    RunPage,
    RunSeries,
    TokenizerJob,
    TokenizerPage,
)
from mt_contracts.requests import (
    EvaluateRequest,
    ExportRequest,
    GenerateRequest,
    ResumeRunRequest,
    TrainRunRequest,
    TrainTokenizerRequest,
)
from mt_contracts.tokenizers import EncodeResponse
from mt_contracts.webhooks import CreateWebhookRequest, Delivery, DeliveryPage, Webhook, WebhookPage, WebhookSecret

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
MAX_BACKOFF = 8.0
# A live stream sends a keep-alive every API__KEEPALIVE_SECONDS (15 s by default): this long without a byte
# means the connection is dead (a half-open TCP connection never errors by itself), so reconnect.
STREAM_IDLE_SECONDS = 60.0
CHUNK = 256 * 1024
ProgressCallback = Callable[[int, int], None]


def is_terminal(event: JobEvent) -> bool:
    """True for the status event that ends a job's stream."""
    return isinstance(event, StatusEvent) and event.status in TERMINAL_STATUSES


class _Base:
    def __init__(
        self, url: str, api_key: str | None, timeout: float, retries: int, backoff: float, user_agent: str
    ) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._headers = {"user-agent": user_agent, "accept": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._timeout = httpx.Timeout(timeout)
        self._stream_timeout = httpx.Timeout(timeout, read=STREAM_IDLE_SECONDS)

    def _request_headers(self, call: Call[T]) -> dict[str, str]:
        if call.body is None:
            return dict(call.headers)
        return {"content-type": "application/json", **call.headers}

    def _delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after is not None and retry_after.isdigit():
            return min(float(retry_after), MAX_BACKOFF)
        return float(min(self.backoff * 2**attempt, MAX_BACKOFF))

    def _unreachable(self, exc: Exception) -> Unreachable:
        return Unreachable(
            f"the API at {self.url} does not answer ({type(exc).__name__}: {exc}) after {self.retries} retries; "
            "check --url / MT_URL and that the stack runs (make dev)"
        )

    @staticmethod
    def _retryable(call_method: str, exc: httpx.TransportError) -> bool:
        # A request that never reached the API is safe to send again; a read that failed after it was sent
        # is retried for reads only (a POST may already have queued its job).
        return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout) or call_method in {
            "GET",
            "HEAD",
        }

    @staticmethod
    def _answer(call: Call[T], response: httpx.Response) -> T:
        if response.status_code in call.ok_statuses:
            return call.decode(response.content, response.headers)
        raise api_error(response.status_code, response.headers.get("content-type", ""), response.content, call.path)

    @staticmethod
    def _decode_event(frame: SseEvent) -> Streamed | None:
        if frame.event not in EVENT_KINDS:
            return None
        try:
            return Streamed(id=frame.id, event=decode_job_event(frame.data.encode()))
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"stream event {frame.id} is not a known event: {exc}") from exc

    @staticmethod
    def _stream_headers(cursor: str | None) -> dict[str, str]:
        headers = {"accept": "text/event-stream"}
        if cursor is not None:
            headers["last-event-id"] = cursor
        return headers

    @staticmethod
    def _stream_query(cursor: str | None, tail: int | None) -> dict[str, int]:
        return {"tail": tail} if tail is not None and cursor is None else {}

    @staticmethod
    def _entry(listing: ArtifactListing, path: str) -> ArtifactFile:
        for entry in listing.files:
            if entry.path == path:
                return entry
        names = ", ".join(entry.path for entry in listing.files) or "none"
        raise NotFound(
            Problem(
                status=404,
                title="Not Found",
                detail=f"{listing.kind}/{listing.id} has no file {path!r}; files: {names}",
            )
        )


_UPLOAD_CHUNK = 1 << 20


def _chunks(path: Path, on_progress: ProgressCallback | None) -> Iterator[bytes]:
    """The file's bytes a MiB at a time, reporting progress as they go (the Content-Length is the size)."""
    total = path.stat().st_size
    sent = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_UPLOAD_CHUNK):
            sent += len(chunk)
            yield chunk
            if on_progress is not None:
                on_progress(sent, total)


async def _async_chunks(path: Path, on_progress: ProgressCallback | None) -> AsyncIterator[bytes]:
    for chunk in _chunks(path, on_progress):
        yield chunk


def _destination(dest: str | Path, path: str) -> Path:
    target = Path(dest)
    return target / Path(path).name if target.is_dir() else target


def _range_headers(offset: int, etag: str | None) -> dict[str, str]:
    if offset > 0 and etag:
        return {"range": f"bytes={offset}-", "if-range": etag}
    return {}


def _content_start(response: httpx.Response) -> int:
    """Where a ``206`` answer's bytes start (``Content-Range: bytes <start>-<end>/<size>``)."""
    value = response.headers.get("content-range", "")
    unit, _, rest = value.partition(" ")
    start = rest.partition("-")[0]
    if unit != "bytes" or not start.isdigit():
        raise ProtocolError(f"a 206 answer without a usable Content-Range ({value!r})")
    return int(start)


def _open_part(part: Path, response: httpx.Response, offset: int) -> IO[bytes]:
    """The partial file to write the answer's bytes into: appended to on a ``206`` from ``offset``,
    started over on a ``200`` (the file changed, so ``If-Range`` sent it whole)."""
    if response.status_code == 206:
        if _content_start(response) != offset:
            raise ProtocolError(f"asked for bytes from {offset}, got {response.headers.get('content-range')}")
        return part.open("ab")
    return part.open("wb")


def _finish(part: Path, etag_file: Path, dest: Path, entry: ArtifactFile, resumed: int) -> Downloaded:
    digest = hashlib.sha256()
    with part.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
        os.fsync(handle.fileno())
    size = part.stat().st_size
    if digest.hexdigest() != entry.sha256 or size != entry.size:
        part.unlink()
        etag_file.unlink(missing_ok=True)
        raise IntegrityMismatch(
            f"{entry.path}: got {size} bytes with sha256 {digest.hexdigest()}, the listing says {entry.size} bytes "
            f"with {entry.sha256}; the partial file was deleted, download it again"
        )
    os.replace(part, dest)
    etag_file.unlink(missing_ok=True)
    return Downloaded(path=str(dest), size=size, sha256=entry.sha256, resumed=resumed)


def _parts(dest: Path) -> tuple[Path, Path, str | None]:
    """The partial file, the file keeping its ``ETag`` (for ``If-Range``), and that ETag when a partial
    download can be continued; a partial file without one is started over."""
    part = dest.with_name(dest.name + ".part")
    etag_file = dest.with_name(dest.name + ".part.etag")
    etag = etag_file.read_text(encoding="utf-8").strip() if etag_file.is_file() and part.is_file() else None
    if etag is None:
        part.unlink(missing_ok=True)
    return part, etag_file, etag or None


class Client(_Base):
    """The blocking client. Use it as a context manager, or call ``close()``.

    ``url`` is the API's base URL; ``api_key`` is sent as ``Authorization: Bearer``; ``timeout`` is seconds
    per request (generation may take longer the first time a model is loaded: pass more).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout, retries, backoff, "mt-client/0.1.0")
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=self._timeout, transport=transport)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def send(self, call: Call[T]) -> T:
        """Send one call, retrying connection errors and 503s; its decoded answer.

        Raises:
            ApiError: the API refused or failed the call (a subclass by status).
            Unreachable: no answer after the retries.
        """
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method, call.path, params=call.query, content=call.body, headers=self._request_headers(call)
                )
            except httpx.TransportError as exc:
                if attempt >= self.retries or not self._retryable(call.method, exc):
                    raise self._unreachable(exc) from exc
                time.sleep(self._delay(attempt))
                attempt += 1
                continue
            if response.status_code == 503 and 503 not in call.ok_statuses and attempt < self.retries:
                time.sleep(self._delay(attempt, response.headers.get("retry-after")))
                attempt += 1
                continue
            return self._answer(call, response)

    # tokenizers
    def train_tokenizer(self, request: TrainTokenizerRequest) -> JobAccepted:
        """``POST /tokenizers/train``: queue a tokenizer job."""
        return self.send(calls.train_tokenizer(request))

    def dry_run_tokenizer(self, request: TrainTokenizerRequest) -> TokenizerEstimate:
        """``POST /tokenizers/train?dry_run=true``: validate and estimate; nothing is queued."""
        return self.send(calls.dry_run_tokenizer(request))

    def list_tokenizers(
        self, limit: int = 20, cursor: str | None = None, status: JobStatus | None = None
    ) -> TokenizerPage:
        """``GET /tokenizers``: one page, newest first."""
        return self.send(calls.list_tokenizers(limit, cursor, status))

    def get_tokenizer(self, tokenizer_id: str) -> TokenizerJob:
        """``GET /tokenizers/{id}``."""
        return self.send(calls.get_tokenizer(tokenizer_id))

    def encode(self, tokenizer_id: str, text: str) -> EncodeResponse:
        """``POST /tokenizers/{id}/encode``: ids, tokens and the decoded text."""
        return self.send(calls.encode(tokenizer_id, text))

    def cancel_tokenizer(self, tokenizer_id: str) -> TokenizerJob:
        """``POST /tokenizers/{id}/cancel``."""
        return self.send(calls.cancel_tokenizer(tokenizer_id))

    def tokenizer_logs(self, tokenizer_id: str, tail: int = 100) -> list[JobEvent]:
        """``GET /tokenizers/{id}/logs``: the last ``tail`` events, oldest first."""
        return self.send(calls.tokenizer_logs(tokenizer_id, tail))

    # runs
    def train_run(self, request: TrainRunRequest) -> JobAccepted:
        """``POST /runs/train``: queue a GPT-2 training run."""
        return self.send(calls.train_run(request))

    def dry_run_run(self, request: TrainRunRequest) -> RunEstimate:
        """``POST /runs/train?dry_run=true``: validate and estimate; nothing is queued."""
        return self.send(calls.dry_run_run(request))

    def list_runs(self, limit: int = 20, cursor: str | None = None, status: JobStatus | None = None) -> RunPage:
        """``GET /runs``: one page, newest first."""
        return self.send(calls.list_runs(limit, cursor, status))

    # corpora
    def upload_corpus(
        self,
        name: str,
        path: str | Path,
        *,
        refuse_overwrite: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> CorpusInfo:
        """``PUT /corpora/{name}``: stream the file at ``path`` (a .txt, .jsonl, .tar.gz or .zip);
        ``on_progress(sent, total)`` after each chunk. Not retried (the server keeps nothing of a cut upload).

        Raises:
            ApiError: the API refused it (400 names the file and line; 412 with ``refuse_overwrite`` when the
                corpus exists; 409 while a job uses it; 413 past a limit).
            Unreachable: the connection failed.
        """
        call = calls.upload_corpus(name, refuse_overwrite=refuse_overwrite)
        try:
            response = self._http.request(
                call.method, call.path, content=_chunks(Path(path), on_progress), headers=self._request_headers(call)
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        return self._answer(call, response)

    def list_corpora(self) -> list[CorpusInfo]:
        """``GET /corpora``: the uploaded corpora by name."""
        return self.send(calls.list_corpora())

    def get_corpus(self, name: str) -> CorpusInfo:
        """``GET /corpora/{name}``: its files, bytes, lines and sha256."""
        return self.send(calls.get_corpus(name))

    def delete_corpus(self, name: str) -> None:
        """``DELETE /corpora/{name}`` (409 while a queued or running job reads it)."""
        self.send(calls.delete_corpus(name))

    def get_run(self, run_id: str) -> RunJob:
        """``GET /runs/{id}``."""
        return self.send(calls.get_run(run_id))

    def cancel_run(self, run_id: str) -> RunJob:
        """``POST /runs/{id}/cancel``."""
        return self.send(calls.cancel_run(run_id))

    def resume_run(self, run_id: str, request: ResumeRunRequest | None = None) -> JobAccepted:
        """``POST /runs/{id}/resume``: continue a failed or cancelled run from its last checkpoint."""
        return self.send(calls.resume_run(run_id, request or ResumeRunRequest()))

    def checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        """``GET /runs/{id}/checkpoints``, oldest first."""
        return self.send(calls.checkpoints(run_id))

    def metrics(self, run_id: str) -> RunSeries:
        """``GET /runs/{id}/metrics``: training-loss reports and validation results by step."""
        return self.send(calls.metrics(run_id))

    def run_logs(self, run_id: str, tail: int = 100) -> list[JobEvent]:
        """``GET /runs/{id}/logs``: the last ``tail`` events, oldest first."""
        return self.send(calls.run_logs(run_id, tail))

    def evaluate(self, run_id: str, request: EvaluateRequest | None = None) -> JobAccepted:
        """``POST /runs/{id}/evaluate``: queue an evaluation."""
        return self.send(calls.evaluate(run_id, request or EvaluateRequest()))

    def latest_eval(self, run_id: str) -> EvalJob:
        """``GET /runs/{id}/eval``: the newest evaluation."""
        return self.send(calls.latest_eval(run_id))

    def list_evals(self, run_id: str) -> list[EvalJob]:
        """``GET /runs/{id}/evals``, newest first."""
        return self.send(calls.list_evals(run_id))

    def get_eval(self, run_id: str, eval_id: str) -> EvalJob:
        """``GET /runs/{id}/evals/{eval_id}``."""
        return self.send(calls.get_eval(run_id, eval_id))

    def generate(self, run_id: str, request: GenerateRequest | None = None) -> GenerateResponse:
        """``POST /runs/{id}/generate``: sample continuations."""
        return self.send(calls.generate(run_id, request or GenerateRequest()))

    def export(self, run_id: str, request: ExportRequest | None = None) -> ExportResponse:
        """``POST /runs/{id}/export``: the ``save_pretrained`` folder of the final weights or a checkpoint."""
        return self.send(calls.export(run_id, request or ExportRequest()))

    # artifacts and health
    def list_artifacts(self, kind: ArtifactKind, item_id: str) -> ArtifactListing:
        """``GET /artifacts/{kind}/{id}``: files with size and sha256."""
        return self.send(calls.list_artifacts(kind, item_id))

    def artifact_info(self, kind: ArtifactKind, item_id: str, path: str) -> ArtifactHead:
        """``HEAD /artifacts/{kind}/{id}/download``: one file's size, ETag and type without its body."""
        return self.send(calls.artifact_info(kind, item_id, path))

    def health(self) -> Health:
        """``GET /healthz``: the API process is alive."""
        return self.send(calls.health())

    def ready(self) -> Health:
        """``GET /readyz``: ``ok``, or ``unavailable`` with reasons."""
        return self.send(calls.ready())

    def prometheus_metrics(self) -> str:
        """``GET /metrics``: Prometheus text."""
        return self.send(calls.prometheus_metrics())

    def create_webhook(self, request: CreateWebhookRequest) -> WebhookSecret:
        """``POST /webhooks``: the endpoint and its signing secret (shown this once)."""
        return self.send(calls.create_webhook(request))

    def list_webhooks(self) -> WebhookPage:
        """``GET /webhooks``, newest first."""
        return self.send(calls.list_webhooks())

    def get_webhook(self, webhook_id: str) -> Webhook:
        """``GET /webhooks/{id}``."""
        return self.send(calls.get_webhook(webhook_id))

    def delete_webhook(self, webhook_id: str) -> None:
        """``DELETE /webhooks/{id}``."""
        self.send(calls.delete_webhook(webhook_id))

    def rotate_webhook_secret(self, webhook_id: str) -> WebhookSecret:
        """``POST /webhooks/{id}/rotate-secret``: a new secret (the previous one also signs for 24 hours)."""
        return self.send(calls.rotate_webhook_secret(webhook_id))

    def webhook_deliveries(self, webhook_id: str, limit: int = 20) -> DeliveryPage:
        """``GET /webhooks/{id}/deliveries``, newest first, with their attempts."""
        return self.send(calls.webhook_deliveries(webhook_id, limit))

    def redeliver(self, webhook_id: str, delivery_id: str) -> Delivery:
        """``POST /webhooks/{id}/deliveries/{delivery_id}/redeliver``: one more attempt, now."""
        return self.send(calls.redeliver(webhook_id, delivery_id))

    def follow(self, job_id: str, *, last_event_id: str | None = None, tail: int | None = None) -> Iterator[Streamed]:
        """The job's events (``run_`` or ``tok_`` id) from its live stream until its terminal status event,
        which is the last one yielded. ``last_event_id`` resumes after that event; otherwise the stream starts
        with the last ``tail`` events (the API's default, 100, when ``None``). A dropped or silent
        connection is reopened with ``Last-Event-ID``: no event is missed or repeated.

        Raises:
            ApiError: the API refused the stream (404: no such job).
            Unreachable: the API stayed unreachable through the retries.
        """
        path = calls.stream_path(job_id)
        cursor, failures = last_event_id, 0
        while True:
            try:
                with self._http.stream(
                    "GET",
                    path,
                    params=self._stream_query(cursor, tail),
                    headers=self._stream_headers(cursor),
                    timeout=self._stream_timeout,
                ) as response:
                    if response.status_code == 204:
                        return
                    if response.status_code != 200:
                        response.read()
                        error = api_error(
                            response.status_code, response.headers.get("content-type", ""), response.content, path
                        )
                        if not isinstance(error, Unavailable) or failures >= self.retries:
                            raise error
                    else:
                        parser = SseParser()
                        for line in response.iter_lines():
                            frame = parser.feed(line)
                            streamed = self._decode_event(frame) if frame is not None else None
                            if streamed is None:
                                continue
                            cursor, failures = streamed.id, 0
                            yield streamed
                            if is_terminal(streamed.event):
                                return
            except httpx.TransportError as exc:
                if failures >= self.retries:
                    raise self._unreachable(exc) from exc
            # The stream broke or ended before the terminal status: reopen it after the last event received.
            time.sleep(self._delay(failures))
            failures += 1

    def download(
        self,
        kind: ArtifactKind,
        item_id: str,
        path: str,
        dest: str | Path,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> Downloaded:
        """Download one artifact file to ``dest`` (a file path, or a folder to put it in).

        The bytes go to ``<dest>.part``; an interrupted transfer continues with ``Range`` and ``If-Range``
        (the ETag is kept in ``<dest>.part.etag``, so a later call continues it too; a file changed on the
        server starts over). The result must match the listing's size and sha256, then it is renamed to
        ``dest``. ``on_progress(done, total)`` is called with bytes.

        Raises:
            NotFound: no such item or file.
            IntegrityError: the bytes do not match the listing (the partial file is deleted).
            Unreachable: the transfer failed ``retries`` times in a row.
        """
        entry = self._entry(self.list_artifacts(kind, item_id), path)
        target = _destination(dest, path)
        part, etag_file, etag = _parts(target)
        resumed = failures = 0
        while (offset := part.stat().st_size if part.is_file() else 0) < entry.size or etag is None:
            headers = _range_headers(offset, etag)
            resumed += 1 if headers else 0
            try:
                with self._http.stream(
                    "GET", calls.download_path(kind, item_id), params={"path": path}, headers=headers
                ) as response:
                    if response.status_code not in {200, 206}:
                        response.read()
                        raise api_error(
                            response.status_code, response.headers.get("content-type", ""), response.content, path
                        )
                    etag = response.headers.get("etag", "")
                    etag_file.write_text(etag, encoding="utf-8")
                    with _open_part(part, response, offset) as handle:
                        done = handle.tell()
                        # As they arrive (a chunk_size would hold bytes back, and an interruption would lose them).
                        for chunk in response.iter_bytes():
                            handle.write(chunk)
                            done += len(chunk)
                            failures = 0
                            if on_progress is not None:
                                on_progress(done, entry.size)
                break
            except httpx.TransportError as exc:
                if failures >= self.retries:
                    raise self._unreachable(exc) from exc
                time.sleep(self._delay(failures))
                failures += 1
        return _finish(part, etag_file, target, entry, resumed)


class AsyncClient(_Base):
    """The asyncio client: the same methods as ``Client``, awaited; ``follow`` is an async iterator."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout, retries, backoff, "mt-client/0.1.0")
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=self._timeout, transport=transport
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def send(self, call: Call[T]) -> T:
        """Send one call, retrying connection errors and 503s; its decoded answer (errors as ``Client.send``)."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, params=call.query, content=call.body, headers=self._request_headers(call)
                )
            except httpx.TransportError as exc:
                if attempt >= self.retries or not self._retryable(call.method, exc):
                    raise self._unreachable(exc) from exc
                await asyncio.sleep(self._delay(attempt))
                attempt += 1
                continue
            if response.status_code == 503 and 503 not in call.ok_statuses and attempt < self.retries:
                await asyncio.sleep(self._delay(attempt, response.headers.get("retry-after")))
                attempt += 1
                continue
            return self._answer(call, response)

    async def train_tokenizer(self, request: TrainTokenizerRequest) -> JobAccepted:
        return await self.send(calls.train_tokenizer(request))

    async def dry_run_tokenizer(self, request: TrainTokenizerRequest) -> TokenizerEstimate:
        return await self.send(calls.dry_run_tokenizer(request))

    async def list_tokenizers(
        self, limit: int = 20, cursor: str | None = None, status: JobStatus | None = None
    ) -> TokenizerPage:
        return await self.send(calls.list_tokenizers(limit, cursor, status))

    async def get_tokenizer(self, tokenizer_id: str) -> TokenizerJob:
        return await self.send(calls.get_tokenizer(tokenizer_id))

    async def encode(self, tokenizer_id: str, text: str) -> EncodeResponse:
        return await self.send(calls.encode(tokenizer_id, text))

    async def cancel_tokenizer(self, tokenizer_id: str) -> TokenizerJob:
        return await self.send(calls.cancel_tokenizer(tokenizer_id))

    async def tokenizer_logs(self, tokenizer_id: str, tail: int = 100) -> list[JobEvent]:
        return await self.send(calls.tokenizer_logs(tokenizer_id, tail))

    async def train_run(self, request: TrainRunRequest) -> JobAccepted:
        return await self.send(calls.train_run(request))

    async def dry_run_run(self, request: TrainRunRequest) -> RunEstimate:
        return await self.send(calls.dry_run_run(request))

    async def upload_corpus(
        self,
        name: str,
        path: str | Path,
        *,
        refuse_overwrite: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> CorpusInfo:
        """As ``Client.upload_corpus``."""
        call = calls.upload_corpus(name, refuse_overwrite=refuse_overwrite)
        try:
            response = await self._http.request(
                call.method,
                call.path,
                content=_async_chunks(Path(path), on_progress),
                headers=self._request_headers(call),
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        return self._answer(call, response)

    async def list_corpora(self) -> list[CorpusInfo]:
        return await self.send(calls.list_corpora())

    async def get_corpus(self, name: str) -> CorpusInfo:
        return await self.send(calls.get_corpus(name))

    async def delete_corpus(self, name: str) -> None:
        await self.send(calls.delete_corpus(name))

    async def list_runs(self, limit: int = 20, cursor: str | None = None, status: JobStatus | None = None) -> RunPage:
        return await self.send(calls.list_runs(limit, cursor, status))

    async def get_run(self, run_id: str) -> RunJob:
        return await self.send(calls.get_run(run_id))

    async def cancel_run(self, run_id: str) -> RunJob:
        return await self.send(calls.cancel_run(run_id))

    async def resume_run(self, run_id: str, request: ResumeRunRequest | None = None) -> JobAccepted:
        return await self.send(calls.resume_run(run_id, request or ResumeRunRequest()))

    async def checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        return await self.send(calls.checkpoints(run_id))

    async def metrics(self, run_id: str) -> RunSeries:
        return await self.send(calls.metrics(run_id))

    async def run_logs(self, run_id: str, tail: int = 100) -> list[JobEvent]:
        return await self.send(calls.run_logs(run_id, tail))

    async def evaluate(self, run_id: str, request: EvaluateRequest | None = None) -> JobAccepted:
        return await self.send(calls.evaluate(run_id, request or EvaluateRequest()))

    async def latest_eval(self, run_id: str) -> EvalJob:
        return await self.send(calls.latest_eval(run_id))

    async def list_evals(self, run_id: str) -> list[EvalJob]:
        return await self.send(calls.list_evals(run_id))

    async def get_eval(self, run_id: str, eval_id: str) -> EvalJob:
        return await self.send(calls.get_eval(run_id, eval_id))

    async def generate(self, run_id: str, request: GenerateRequest | None = None) -> GenerateResponse:
        return await self.send(calls.generate(run_id, request or GenerateRequest()))

    async def export(self, run_id: str, request: ExportRequest | None = None) -> ExportResponse:
        return await self.send(calls.export(run_id, request or ExportRequest()))

    async def list_artifacts(self, kind: ArtifactKind, item_id: str) -> ArtifactListing:
        return await self.send(calls.list_artifacts(kind, item_id))

    async def artifact_info(self, kind: ArtifactKind, item_id: str, path: str) -> ArtifactHead:
        return await self.send(calls.artifact_info(kind, item_id, path))

    async def health(self) -> Health:
        return await self.send(calls.health())

    async def ready(self) -> Health:
        return await self.send(calls.ready())

    async def prometheus_metrics(self) -> str:
        return await self.send(calls.prometheus_metrics())

    async def create_webhook(self, request: CreateWebhookRequest) -> WebhookSecret:
        return await self.send(calls.create_webhook(request))

    async def list_webhooks(self) -> WebhookPage:
        return await self.send(calls.list_webhooks())

    async def get_webhook(self, webhook_id: str) -> Webhook:
        return await self.send(calls.get_webhook(webhook_id))

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.send(calls.delete_webhook(webhook_id))

    async def rotate_webhook_secret(self, webhook_id: str) -> WebhookSecret:
        return await self.send(calls.rotate_webhook_secret(webhook_id))

    async def webhook_deliveries(self, webhook_id: str, limit: int = 20) -> DeliveryPage:
        return await self.send(calls.webhook_deliveries(webhook_id, limit))

    async def redeliver(self, webhook_id: str, delivery_id: str) -> Delivery:
        return await self.send(calls.redeliver(webhook_id, delivery_id))

    async def follow(
        self, job_id: str, *, last_event_id: str | None = None, tail: int | None = None
    ) -> AsyncIterator[Streamed]:
        """As ``Client.follow``, asynchronously."""
        path = calls.stream_path(job_id)
        cursor, failures = last_event_id, 0
        while True:
            try:
                async with self._http.stream(
                    "GET",
                    path,
                    params=self._stream_query(cursor, tail),
                    headers=self._stream_headers(cursor),
                    timeout=self._stream_timeout,
                ) as response:
                    if response.status_code == 204:
                        return
                    if response.status_code != 200:
                        await response.aread()
                        error = api_error(
                            response.status_code, response.headers.get("content-type", ""), response.content, path
                        )
                        if not isinstance(error, Unavailable) or failures >= self.retries:
                            raise error
                    else:
                        parser = SseParser()
                        async for line in response.aiter_lines():
                            frame = parser.feed(line)
                            streamed = self._decode_event(frame) if frame is not None else None
                            if streamed is None:
                                continue
                            cursor, failures = streamed.id, 0
                            yield streamed
                            if is_terminal(streamed.event):
                                return
            except httpx.TransportError as exc:
                if failures >= self.retries:
                    raise self._unreachable(exc) from exc
            await asyncio.sleep(self._delay(failures))
            failures += 1

    async def download(
        self,
        kind: ArtifactKind,
        item_id: str,
        path: str,
        dest: str | Path,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> Downloaded:
        """As ``Client.download``; file writes run in a thread."""
        entry = self._entry(await self.list_artifacts(kind, item_id), path)
        target = _destination(dest, path)
        part, etag_file, etag = await asyncio.to_thread(_parts, target)
        resumed = failures = 0
        while (offset := part.stat().st_size if part.is_file() else 0) < entry.size or etag is None:
            headers = _range_headers(offset, etag)
            resumed += 1 if headers else 0
            try:
                async with self._http.stream(
                    "GET", calls.download_path(kind, item_id), params={"path": path}, headers=headers
                ) as response:
                    if response.status_code not in {200, 206}:
                        await response.aread()
                        raise api_error(
                            response.status_code, response.headers.get("content-type", ""), response.content, path
                        )
                    etag = response.headers.get("etag", "")
                    await asyncio.to_thread(etag_file.write_text, etag, encoding="utf-8")
                    handle = await asyncio.to_thread(_open_part, part, response, offset)
                    try:
                        done = handle.tell()
                        async for chunk in response.aiter_bytes():
                            await asyncio.to_thread(handle.write, chunk)
                            done += len(chunk)
                            failures = 0
                            if on_progress is not None:
                                on_progress(done, entry.size)
                    finally:
                        handle.close()
                break
            except httpx.TransportError as exc:
                if failures >= self.retries:
                    raise self._unreachable(exc) from exc
                await asyncio.sleep(self._delay(failures))
                failures += 1
        return await asyncio.to_thread(_finish, part, etag_file, target, entry, resumed)
