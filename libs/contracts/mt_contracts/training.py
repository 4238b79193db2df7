"""The spec handed to the training child process and what it writes back, one JSON object a line: the
shared child events (``mt_contracts.events``), ``resumed``, and one outcome, ``finished`` or ``failed``.

The worker decodes each line once with ``decode_message`` and handles it with ``match``.
"""

from __future__ import annotations

import msgspec

from mt_contracts.evaluation import Weights
from mt_contracts.events import CheckpointEvent, Failed, LogEvent, ProgressEvent, Resumed, ValidationEvent
from mt_contracts.jobs import RunMetrics
from mt_contracts.manifests import ModelManifest, ParentRun
from mt_contracts.requests import TrainRunRequest


class RunSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the training process needs; paths are absolute.

    ``corpus_files`` are read in order; ``model_dir`` receives the final artifacts (each file written
    atomically; the worker writes ``manifest.json``, the commit point, from the ``finished`` event);
    ``work_dir`` is scratch space owned by this run; ``run_dir`` holds ``checkpoints/`` and their index. When a
    checkpoint exists there, training resumes from the latest. ``dataset_cache`` holds prepared token files
    shared by runs on the same corpus and tokenizer. ``progress_interval`` is seconds; ``runs_root`` and
    ``artifacts_root`` name the roots that error messages give paths relative to. ``init_weights`` are the
    weights of the request's ``init_from`` run, loaded before the first step when the run has no checkpoint
    of its own yet; ``parent`` is what the manifest records of them.
    """

    run_id: str
    tokenizer_id: str
    request: TrainRunRequest
    tokenizer_dir: str
    corpus_files: list[str]
    model_dir: str
    work_dir: str
    run_dir: str = ""
    dataset_cache: str = ""
    progress_interval: float = 2.0
    runs_root: str = ""
    artifacts_root: str = ""
    init_weights: Weights | None = None
    parent: ParentRun | None = None


class Rendezvous(msgspec.Struct, frozen=True, kw_only=True):
    """One launch of a ``torchrun`` run on several nodes, as the worker that owns the run (node 0) publishes
    it in Redis for the workers that join it: the address and port of its rendezvous, the launch's id, the
    shape of the group and the spec every rank reads."""

    run_id: str
    rendezvous_id: str
    master_addr: str
    master_port: int
    nnodes: int
    nproc_per_node: int
    spec: bytes


class Finished(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="finished"):
    """The model files are written; ``manifest`` is what the worker commits as ``manifest.json``."""

    metrics: RunMetrics
    model_dir: str
    manifest: ModelManifest


TrainingMessage = LogEvent | ProgressEvent | ValidationEvent | CheckpointEvent | Resumed | Finished | Failed

_decoder: msgspec.json.Decoder[TrainingMessage] = msgspec.json.Decoder(TrainingMessage)


def decode_message(line: bytes) -> TrainingMessage:
    """Decode one line of the training process.

    Raises:
        msgspec.DecodeError: not JSON, or not a known message (``msgspec.ValidationError`` is a subclass).
    """
    return _decoder.decode(line)
