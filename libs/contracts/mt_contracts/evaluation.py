"""The weights a consumer loads, the spec handed to the evaluation subprocess and the messages it writes back.

The evaluation process speaks like every child (one JSON message a line on stdout): the shared child events
(``mt_contracts.events``), then ``evaluated`` or ``failed``.
"""

from __future__ import annotations

import msgspec

from mt_contracts.events import CheckpointEvent, Failed, LogEvent, ProgressEvent, ValidationEvent
from mt_contracts.jobs import EvalMetrics
from mt_contracts.requests import EvalSplit


class Weights(msgspec.Struct, frozen=True, kw_only=True):
    """Where one set of a run's weights lives; paths are absolute.

    ``checkpoint`` is the step asked for, ``None`` for the final weights, which are the ``save_pretrained``
    folder ``model_dir``; a checkpoint is the ``torch.save`` file ``checkpoint_path`` (its ``"model"`` state
    dict) for the architecture in ``config_path``. ``step`` is the training step the weights come from.
    """

    run_id: str
    tokenizer_id: str
    checkpoint: int | None
    step: int
    model_dir: str
    config_path: str
    tokenizer_path: str
    checkpoint_path: str = ""

    @property
    def cache_key(self) -> str:
        """Names these weights among a run's: ``final`` or ``step-<n>``."""
        return "final" if self.checkpoint is None else f"step-{self.checkpoint}"


class EvalSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the evaluation process needs; paths are absolute.

    ``split`` ``val``/``train`` re-derive the run's splits from ``corpus_files`` with ``val_fraction`` and
    ``seed`` (the cached training data when present); ``corpus`` scores all of ``corpus_files``. Windows
    are ``block_size`` tokens, ``batch_size`` at a time; ``max_tokens`` bounds the tokens scored. ``precision``
    ``bf16`` scores under bfloat16 autocast, as the run trained (the loss itself is taken in float32).
    """

    eval_id: str
    weights: Weights
    split: EvalSplit
    corpus_path: str
    corpus_files: list[str]
    val_fraction: float
    seed: int
    block_size: int
    batch_size: int
    dataset_cache: str
    device: str = "auto"
    max_tokens: int | None = None
    precision: str = "fp32"


class Evaluated(msgspec.Struct, frozen=True, tag_field="kind", tag="evaluated", kw_only=True):
    """The text was scored."""

    metrics: EvalMetrics


EvalMessage = LogEvent | ProgressEvent | ValidationEvent | CheckpointEvent | Evaluated | Failed

_decoder: msgspec.json.Decoder[EvalMessage] = msgspec.json.Decoder(EvalMessage)


def decode_eval_message(line: bytes) -> EvalMessage:
    """Decode one line of the evaluation process.

    Raises:
        msgspec.DecodeError: not JSON, or not a known event (``msgspec.ValidationError`` is a subclass).
    """
    return _decoder.decode(line)
