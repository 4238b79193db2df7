"""The Protocol a model family implements and the ``transformers`` config it describes, as plain data."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

import msgspec

if TYPE_CHECKING:
    from mt_contracts.requests import TrainRunRequest

ConfigValue = int | float | str | bool


class HfConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A ``transformers`` config as data: ``AutoConfig.for_model(model_type, **options)``."""

    model_type: str
    options: dict[str, ConfigValue]


class ModelFamily(Protocol):
    """One architecture: which request fields it takes beyond the common sizes, how they are checked, the
    parameter count they give, which of them fix the weights' shapes, and its ``transformers`` config."""

    name: ClassVar[str]
    # The family-specific request fields it accepts (``None`` in the request when not sent).
    options: ClassVar[tuple[str, ...]]

    def check(self, request: TrainRunRequest) -> list[tuple[str, str]]:
        """Problems of the request's sizes as ``(field, what to change)``; empty when they are usable."""
        ...

    def shape(self, request: TrainRunRequest) -> dict[str, int]:
        """The resolved sizes that fix the weights' shapes (besides ``vocab_size``): two runs whose shapes are
        equal can load each other's weights."""
        ...

    def count_parameters(self, request: TrainRunRequest, vocab_size: int) -> int:
        """Trainable parameters of the model built for ``request`` (tied weights counted once), exactly what
        ``sum(p.numel() for p in model.parameters())`` gives."""
        ...

    def hf_config(self, request: TrainRunRequest, vocab_size: int, end_of_text_id: int) -> HfConfig:
        """The ``transformers`` config of the model for ``request``."""
        ...
