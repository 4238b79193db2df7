"""What the tokenizer worker and its training process say to each other: a spec on stdin; on stdout the
shared child events (``mt_contracts.events``), then one outcome, ``trained`` or ``failed``."""

from __future__ import annotations

import msgspec

from mt_contracts.corpora import TokenizerEstimate
from mt_contracts.events import CheckpointEvent, Failed, LogEvent, ProgressEvent, ValidationEvent
from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizers import TokenizerStatistics


class TokenizerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the worker hands its training process on stdin; paths are absolute. ``log_path`` is kept for
    older workers and unused: the worker writes ``logs.jsonl`` from the events the process sends it.
    ``estimate`` is the job's dry-run estimate, which the process records in the manifest."""

    tokenizer_id: str
    request: TrainTokenizerRequest
    corpus_root: str
    out_dir: str
    log_path: str = ""
    estimate: TokenizerEstimate | None = None


class TokenizerTrained(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="trained"):
    """The tokenizer files are written; ``manifest`` is what the worker commits as ``manifest.json`` (an
    ``mt_contracts.manifests.TokenizerManifest``, JSON-encoded)."""

    vocab_size: int
    special_tokens: list[str]
    statistics: TokenizerStatistics
    manifest: msgspec.Raw


TokenizerMessage = LogEvent | ProgressEvent | ValidationEvent | CheckpointEvent | TokenizerTrained | Failed
_decoder: msgspec.json.Decoder[TokenizerMessage] = msgspec.json.Decoder(TokenizerMessage)


def decode_tokenizer_message(line: bytes) -> TokenizerMessage:
    """Decode one line of the tokenizer training process.

    Raises:
        msgspec.DecodeError: not JSON, or not a known message.
    """
    return _decoder.decode(line)
