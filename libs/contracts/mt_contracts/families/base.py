"""The Protocol a model family implements, the options Struct it declares, and the ``transformers`` config it
describes, as plain data."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

import msgspec

if TYPE_CHECKING:
    from mt_contracts.requests import TrainRunRequest

ConfigValue = int | float | str | bool
# A value of the request's ``model_options``: any JSON scalar but null (the family's options Struct says which).
OptionValue = int | float | bool | str
ModelOptions = dict[str, OptionValue]
OptionsT = TypeVar("OptionsT", bound=msgspec.Struct)


class HfConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A ``transformers`` config as data: ``AutoConfig.for_model(model_type, **options)``."""

    model_type: str
    options: dict[str, ConfigValue]


class ModelFamily(Protocol):
    """One architecture: the options it takes beyond the common sizes (``options_type``, sent as the request's
    ``model_options``), how the request is checked, the parameter count it gives, which sizes fix the weights'
    shapes, and its ``transformers`` config."""

    name: ClassVar[str]
    # Its own options: a frozen, kw_only Struct that forbids unknown fields, each field with a default (``None``:
    # the family derives the value from the common sizes) and msgspec ``Meta`` bounds and a description.
    options_type: ClassVar[type[msgspec.Struct]]

    def check(self, request: TrainRunRequest) -> list[tuple[str, str]]:
        """Problems of the request's sizes and options as ``(field, what to change)`` (an option's field is
        ``model_options.<name>``); empty when they are usable. The options are already valid for
        ``options_type`` (``mt_contracts.families.check_model`` checks them first)."""
        ...

    def shape(self, request: TrainRunRequest) -> dict[str, int]:
        """The resolved sizes that fix the weights' shapes (besides ``vocab_size``), by field (an option's is
        ``model_options.<name>``): two runs whose shapes are equal can load each other's weights."""
        ...

    def count_parameters(self, request: TrainRunRequest, vocab_size: int) -> int:
        """Trainable parameters of the model built for ``request`` (tied weights counted once), exactly what
        ``sum(p.numel() for p in model.parameters())`` gives."""
        ...

    def hf_config(self, request: TrainRunRequest, vocab_size: int, end_of_text_id: int) -> HfConfig:
        """The ``transformers`` config of the model for ``request``."""
        ...


def options_of(request: TrainRunRequest, options_type: type[OptionsT]) -> OptionsT:
    """``request.model_options`` as the family's ``options_type``.

    Raises:
        msgspec.ValidationError: an option it does not take, of the wrong type or out of bounds (a checked
            request has none: ``check_model`` reports each as a problem).
    """
    return msgspec.convert(request.model_options, options_type, strict=True)
