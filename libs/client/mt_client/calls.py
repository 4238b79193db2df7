"""Every API operation as a sans-IO ``Call``: method, path, query, JSON body and how to decode the answer.
``Client`` and ``AsyncClient`` only send them, so both have the same methods by construction.

``OPERATIONS`` names the client method of each operation of the OpenAPI document (``tests/client`` checks
that none is missing).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar
from urllib.parse import quote

import msgspec

from mt_client.errors import ProtocolError
from mt_client.models import ArtifactHead, ArtifactListing, Health
from mt_contracts import codec
from mt_contracts.corpora import CorpusInfo, RunEstimate, TokenizerEstimate
from mt_contracts.events import JobEvent, LogTail, decode_job_event
from mt_contracts.generation import ExportResponse, GenerateResponse
from mt_contracts.jobs import (
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
    EncodeRequest,
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
ArtifactKind = Literal["tokenizers", "models"]
Query = dict[str, str | int]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the decoder of its answer. ``ok_statuses`` are the statuses that carry an answer
    (``/readyz`` answers its body with 503 too)."""

    method: str
    path: str
    decode: Callable[[bytes, Mapping[str, str]], T]
    query: Query = field(default_factory=dict)
    body: bytes | None = None
    ok_statuses: frozenset[int] = frozenset({200, 202})
    headers: dict[str, str] = field(default_factory=dict)


def _decoder(value_type: type[T]) -> Callable[[bytes, Mapping[str, str]], T]:
    def decode(data: bytes, headers: Mapping[str, str]) -> T:
        try:
            return codec.decode(data, value_type)
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"the API's answer is not a {value_type.__name__}: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"the API's answer is not JSON ({exc}); is --url the Model Trainer API?") from exc

    return decode


def _text(data: bytes, headers: Mapping[str, str]) -> str:
    return data.decode("utf-8")


def _events(data: bytes, headers: Mapping[str, str]) -> list[JobEvent]:
    tail = _decoder(LogTail)(data, headers)
    events: list[JobEvent] = []
    for line in tail.lines:
        try:
            events.append(decode_job_event(bytes(line)))
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"a log line of {tail.job_id} is not a known event: {exc}") from exc
    return events


def _seg(value: str) -> str:
    return quote(value, safe="")


def _query(**values: str | int | None) -> Query:
    return {name: value for name, value in values.items() if value is not None}


def train_tokenizer(request: TrainTokenizerRequest) -> Call[JobAccepted]:
    return Call("POST", "/tokenizers/train", _decoder(JobAccepted), body=codec.encode(request))


def dry_run_tokenizer(request: TrainTokenizerRequest) -> Call[TokenizerEstimate]:
    """``POST /tokenizers/train?dry_run=true``: the estimate; nothing is queued."""
    body = codec.encode(request)
    return Call("POST", "/tokenizers/train", _decoder(TokenizerEstimate), query={"dry_run": "true"}, body=body)


def list_tokenizers(limit: int = 20, cursor: str | None = None, status: JobStatus | None = None) -> Call[TokenizerPage]:
    return Call("GET", "/tokenizers", _decoder(TokenizerPage), query=_query(limit=limit, cursor=cursor, status=status))


def get_tokenizer(tokenizer_id: str) -> Call[TokenizerJob]:
    return Call("GET", f"/tokenizers/{_seg(tokenizer_id)}", _decoder(TokenizerJob))


def encode(tokenizer_id: str, text: str) -> Call[EncodeResponse]:
    body = codec.encode(EncodeRequest(text=text))
    return Call("POST", f"/tokenizers/{_seg(tokenizer_id)}/encode", _decoder(EncodeResponse), body=body)


def cancel_tokenizer(tokenizer_id: str) -> Call[TokenizerJob]:
    return Call("POST", f"/tokenizers/{_seg(tokenizer_id)}/cancel", _decoder(TokenizerJob), body=b"{}")


def tokenizer_logs(tokenizer_id: str, tail: int = 100) -> Call[list[JobEvent]]:
    return Call("GET", f"/tokenizers/{_seg(tokenizer_id)}/logs", _events, query={"tail": tail})


def train_run(request: TrainRunRequest) -> Call[JobAccepted]:
    return Call("POST", "/runs/train", _decoder(JobAccepted), body=codec.encode(request))


def dry_run_run(request: TrainRunRequest) -> Call[RunEstimate]:
    """``POST /runs/train?dry_run=true``: the estimate; nothing is queued."""
    body = codec.encode(request)
    return Call("POST", "/runs/train", _decoder(RunEstimate), query={"dry_run": "true"}, body=body)


def upload_corpus(name: str, *, refuse_overwrite: bool = False) -> Call[CorpusInfo]:
    """``PUT /corpora/{name}`` (the body is streamed by the client); ``refuse_overwrite`` sends
    ``If-None-Match: *``."""
    headers = {"content-type": "application/octet-stream", **({"if-none-match": "*"} if refuse_overwrite else {})}
    return Call(
        "PUT", f"/corpora/{_seg(name)}", _decoder(CorpusInfo), ok_statuses=frozenset({200, 201}), headers=headers
    )


def list_corpora() -> Call[list[CorpusInfo]]:
    return Call("GET", "/corpora", _decoder(list[CorpusInfo]))


def get_corpus(name: str) -> Call[CorpusInfo]:
    return Call("GET", f"/corpora/{_seg(name)}", _decoder(CorpusInfo))


def _nothing(data: bytes, headers: Mapping[str, str]) -> None:
    return None


def delete_corpus(name: str) -> Call[None]:
    return Call("DELETE", f"/corpora/{_seg(name)}", _nothing, ok_statuses=frozenset({204}))


def list_runs(limit: int = 20, cursor: str | None = None, status: JobStatus | None = None) -> Call[RunPage]:
    return Call("GET", "/runs", _decoder(RunPage), query=_query(limit=limit, cursor=cursor, status=status))


def get_run(run_id: str) -> Call[RunJob]:
    return Call("GET", f"/runs/{_seg(run_id)}", _decoder(RunJob))


def cancel_run(run_id: str) -> Call[RunJob]:
    return Call("POST", f"/runs/{_seg(run_id)}/cancel", _decoder(RunJob), body=b"{}")


def resume_run(run_id: str, request: ResumeRunRequest) -> Call[JobAccepted]:
    return Call("POST", f"/runs/{_seg(run_id)}/resume", _decoder(JobAccepted), body=codec.encode(request))


def checkpoints(run_id: str) -> Call[list[CheckpointInfo]]:
    return Call("GET", f"/runs/{_seg(run_id)}/checkpoints", _decoder(list[CheckpointInfo]))


def metrics(run_id: str) -> Call[RunSeries]:
    return Call("GET", f"/runs/{_seg(run_id)}/metrics", _decoder(RunSeries))


def run_logs(run_id: str, tail: int = 100) -> Call[list[JobEvent]]:
    return Call("GET", f"/runs/{_seg(run_id)}/logs", _events, query={"tail": tail})


def evaluate(run_id: str, request: EvaluateRequest) -> Call[JobAccepted]:
    return Call("POST", f"/runs/{_seg(run_id)}/evaluate", _decoder(JobAccepted), body=codec.encode(request))


def latest_eval(run_id: str) -> Call[EvalJob]:
    return Call("GET", f"/runs/{_seg(run_id)}/eval", _decoder(EvalJob))


def list_evals(run_id: str) -> Call[list[EvalJob]]:
    return Call("GET", f"/runs/{_seg(run_id)}/evals", _decoder(list[EvalJob]))


def get_eval(run_id: str, eval_id: str) -> Call[EvalJob]:
    return Call("GET", f"/runs/{_seg(run_id)}/evals/{_seg(eval_id)}", _decoder(EvalJob))


def generate(run_id: str, request: GenerateRequest) -> Call[GenerateResponse]:
    return Call("POST", f"/runs/{_seg(run_id)}/generate", _decoder(GenerateResponse), body=codec.encode(request))


def export(run_id: str, request: ExportRequest) -> Call[ExportResponse]:
    return Call("POST", f"/runs/{_seg(run_id)}/export", _decoder(ExportResponse), body=codec.encode(request))


def list_artifacts(kind: ArtifactKind, item_id: str) -> Call[ArtifactListing]:
    return Call("GET", f"/artifacts/{kind}/{_seg(item_id)}", _decoder(ArtifactListing))


def _file_head(data: bytes, headers: Mapping[str, str]) -> ArtifactHead:
    length = headers.get("content-length", "")
    if not length.isdigit():
        raise ProtocolError(f"a download answer without a Content-Length ({length!r})")
    return ArtifactHead(
        size=int(length),
        etag=headers.get("etag", ""),
        last_modified=headers.get("last-modified", ""),
        media_type=headers.get("content-type", ""),
    )


def artifact_info(kind: ArtifactKind, item_id: str, path: str) -> Call[ArtifactHead]:
    return Call("HEAD", download_path(kind, item_id), _file_head, query={"path": path})


def health() -> Call[Health]:
    return Call("GET", "/healthz", _decoder(Health))


def ready() -> Call[Health]:
    return Call("GET", "/readyz", _decoder(Health), ok_statuses=frozenset({200, 503}))


def prometheus_metrics() -> Call[str]:
    return Call("GET", "/metrics", _text)


def create_webhook(request: CreateWebhookRequest) -> Call[WebhookSecret]:
    body = codec.encode(request)
    return Call("POST", "/webhooks", _decoder(WebhookSecret), body=body, ok_statuses=frozenset({201}))


def list_webhooks() -> Call[WebhookPage]:
    return Call("GET", "/webhooks", _decoder(WebhookPage))


def get_webhook(webhook_id: str) -> Call[Webhook]:
    return Call("GET", f"/webhooks/{_seg(webhook_id)}", _decoder(Webhook))


def delete_webhook(webhook_id: str) -> Call[None]:
    return Call("DELETE", f"/webhooks/{_seg(webhook_id)}", _nothing, ok_statuses=frozenset({204}))


def rotate_webhook_secret(webhook_id: str) -> Call[WebhookSecret]:
    return Call("POST", f"/webhooks/{_seg(webhook_id)}/rotate-secret", _decoder(WebhookSecret), body=b"{}")


def webhook_deliveries(webhook_id: str, limit: int = 20) -> Call[DeliveryPage]:
    return Call("GET", f"/webhooks/{_seg(webhook_id)}/deliveries", _decoder(DeliveryPage), query={"limit": limit})


def redeliver(webhook_id: str, delivery_id: str) -> Call[Delivery]:
    path = f"/webhooks/{_seg(webhook_id)}/deliveries/{_seg(delivery_id)}/redeliver"
    return Call("POST", path, _decoder(Delivery), body=b"{}")


def stream_path(job_id: str) -> str:
    """The SSE path of a job, by its id's prefix (``tok_`` or ``run_``).

    Raises:
        ValueError: neither prefix.
    """
    if job_id.startswith("run_"):
        return f"/runs/{_seg(job_id)}/logs/stream"
    if job_id.startswith("tok_"):
        return f"/tokenizers/{_seg(job_id)}/logs/stream"
    raise ValueError(f"{job_id!r} is neither a run_ nor a tok_ id")


def download_path(kind: ArtifactKind, item_id: str) -> str:
    return f"/artifacts/{kind}/{_seg(item_id)}/download"


# (method, OpenAPI path) -> the method of Client and AsyncClient that calls it.
OPERATIONS: dict[tuple[str, str], str] = {
    ("POST", "/tokenizers/train"): "train_tokenizer",
    ("GET", "/tokenizers"): "list_tokenizers",
    ("GET", "/tokenizers/{tokenizer_id}"): "get_tokenizer",
    ("POST", "/tokenizers/{tokenizer_id}/encode"): "encode",
    ("POST", "/tokenizers/{tokenizer_id}/cancel"): "cancel_tokenizer",
    ("GET", "/tokenizers/{tokenizer_id}/logs"): "tokenizer_logs",
    ("GET", "/tokenizers/{tokenizer_id}/logs/stream"): "follow",
    ("POST", "/runs/train"): "train_run",
    ("GET", "/runs"): "list_runs",
    ("GET", "/runs/{run_id}"): "get_run",
    ("POST", "/runs/{run_id}/cancel"): "cancel_run",
    ("POST", "/runs/{run_id}/resume"): "resume_run",
    ("GET", "/runs/{run_id}/checkpoints"): "checkpoints",
    ("GET", "/runs/{run_id}/metrics"): "metrics",
    ("GET", "/runs/{run_id}/logs"): "run_logs",
    ("GET", "/runs/{run_id}/logs/stream"): "follow",
    ("POST", "/runs/{run_id}/evaluate"): "evaluate",
    ("GET", "/runs/{run_id}/eval"): "latest_eval",
    ("GET", "/runs/{run_id}/evals"): "list_evals",
    ("GET", "/runs/{run_id}/evals/{eval_id}"): "get_eval",
    ("POST", "/runs/{run_id}/generate"): "generate",
    ("POST", "/runs/{run_id}/export"): "export",
    ("GET", "/artifacts/{kind}/{item_id}"): "list_artifacts",
    ("GET", "/artifacts/{kind}/{item_id}/download"): "download",
    ("HEAD", "/artifacts/{kind}/{item_id}/download"): "artifact_info",
    ("GET", "/healthz"): "health",
    ("GET", "/readyz"): "ready",
    ("GET", "/metrics"): "prometheus_metrics",
    ("PUT", "/corpora/{name}"): "upload_corpus",
    ("GET", "/corpora"): "list_corpora",
    ("GET", "/corpora/{name}"): "get_corpus",
    ("DELETE", "/corpora/{name}"): "delete_corpus",
    ("POST", "/webhooks"): "create_webhook",
    ("GET", "/webhooks"): "list_webhooks",
    ("GET", "/webhooks/{webhook_id}"): "get_webhook",
    ("DELETE", "/webhooks/{webhook_id}"): "delete_webhook",
    ("POST", "/webhooks/{webhook_id}/rotate-secret"): "rotate_webhook_secret",
    ("GET", "/webhooks/{webhook_id}/deliveries"): "webhook_deliveries",
    ("POST", "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): "redeliver",
}
