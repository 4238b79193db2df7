"""Model families behind one small Protocol and one registry, pure data and arithmetic (no torch), so the API
validates a run request and counts its parameters, and the training child builds the model, from the same
description.

A family is one module here (its ``ModelFamily``) and one entry in ``ModelName`` and ``FAMILIES`` below. Its
model must be a ``transformers`` causal LM: the child builds it from ``hf_config`` with
``AutoConfig.for_model`` and ``AutoModelForCausalLM.from_config``, and everything downstream (evaluation,
generation, export) loads it back with the ``Auto`` classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from mt_contracts.families.base import HfConfig, ModelFamily
from mt_contracts.families.gpt2 import Gpt2Family
from mt_contracts.families.llama import LlamaFamily

if TYPE_CHECKING:
    from mt_contracts.requests import TrainRunRequest

ModelName = Literal["gpt2", "llama"]
# The family of a request that names none (every request before families existed).
DEFAULT_MODEL: ModelName = "gpt2"

__all__ = [
    "DEFAULT_MODEL",
    "FAMILIES",
    "OPTION_OWNERS",
    "HfConfig",
    "ModelFamily",
    "ModelName",
    "check_model",
    "count_parameters",
    "family_of",
]

FAMILIES: dict[str, ModelFamily] = {Gpt2Family.name: Gpt2Family(), LlamaFamily.name: LlamaFamily()}
# Every family-specific field of the request, with the family that takes it.
OPTION_OWNERS: dict[str, str] = {option: family.name for family in FAMILIES.values() for option in family.options}


def family_of(request: TrainRunRequest) -> ModelFamily:
    """The family the request's ``model`` names (``model`` is a ``ModelName``, so it is registered)."""
    return FAMILIES[request.model]


def check_model(request: TrainRunRequest) -> list[tuple[str, str]]:
    """The family's own checks, and every field of another family that the request sets, as
    ``(field, what to change)``."""
    family = family_of(request)
    problems = [
        (option, f"{option} applies to model {owner!r} only; remove it or send model={owner!r}")
        for option, owner in OPTION_OWNERS.items()
        if owner != family.name and getattr(request, option) is not None
    ]
    return problems + family.check(request)


def count_parameters(request: TrainRunRequest, vocab_size: int) -> int:
    """Trainable parameters of the model ``request`` describes with a tokenizer of ``vocab_size`` tokens."""
    return family_of(request).count_parameters(request, vocab_size)
