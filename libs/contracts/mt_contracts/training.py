"""The spec handed to the training subprocess and the events it writes back, one JSON object a line.

Events are a tagged union on ``event``; the worker decodes them with ``match`` and turns them into the job
record and the run's ``logs.jsonl``.
"""

from __future__ import annotations

import msgspec

from mt_contracts.jobs import CheckpointInfo, EvalPoint, RunMetrics, RunProgress
from mt_contracts.requests import TrainRunRequest


class RunSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the training process needs; paths are absolute.

    ``corpus_files`` are read in order; ``model_dir`` receives the final artifacts (each file written
    atomically, ``manifest.json`` last); ``work_dir`` is scratch space owned by this run; ``run_dir`` holds
    ``checkpoints/`` and their index. When a checkpoint exists there, training resumes from the latest.
    ``dataset_cache`` holds prepared token files shared by runs on the same corpus and tokenizer.
    Intervals are seconds.
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
    heartbeat_interval: float = 5.0
    progress_interval: float = 2.0


class Started(msgspec.Struct, frozen=True, tag_field="event", tag="started", kw_only=True):
    """Data is prepared and the model built; training begins. Token counts are per split."""

    n_params: int
    train_tokens: int
    val_tokens: int
    vocab_size: int
    device: str


class Heartbeat(msgspec.Struct, frozen=True, tag_field="event", tag="heartbeat", kw_only=True):
    """The process is alive; ``phase`` is what it is doing (``preparing``, ``training``, ``saving``)."""

    phase: str


class Progress(msgspec.Struct, frozen=True, tag_field="event", tag="progress", kw_only=True):
    """Rate-limited training progress."""

    progress: RunProgress


class Resumed(msgspec.Struct, frozen=True, tag_field="event", tag="resumed", kw_only=True):
    """Training continues from the checkpoint at ``step``."""

    step: int


class Checkpoint(msgspec.Struct, frozen=True, tag_field="event", tag="checkpoint", kw_only=True):
    """A checkpoint was written (atomically) and older ones beyond ``keep_checkpoints`` deleted."""

    checkpoint: CheckpointInfo


class Eval(msgspec.Struct, frozen=True, tag_field="event", tag="eval", kw_only=True):
    """A periodic validation estimate."""

    point: EvalPoint


class Finished(msgspec.Struct, frozen=True, tag_field="event", tag="finished", kw_only=True):
    """Artifacts are written and complete."""

    metrics: RunMetrics
    model_dir: str


class Failed(msgspec.Struct, frozen=True, tag_field="event", tag="failed", kw_only=True):
    """Training stopped on an error the user can act on."""

    code: str
    message: str


TrainingEvent = Started | Resumed | Heartbeat | Progress | Eval | Checkpoint | Finished | Failed

_event_decoder: msgspec.json.Decoder[TrainingEvent] = msgspec.json.Decoder(TrainingEvent)


def decode_event(line: bytes) -> TrainingEvent:
    """Decode one event line.

    Raises:
        msgspec.DecodeError: not JSON, or not a known event (``msgspec.ValidationError`` is a subclass).
    """
    return _event_decoder.decode(line)
