"""Model families behind one small Protocol and one registry, pure data and arithmetic (no torch), so the API
validates a run request and counts its parameters, and the training child builds the model, from the same
description.

Adding a family is one module here and one entry in the registry below. The module holds its ``ModelFamily``
and its options Struct (``options_type``: the fields a run request sends in ``model_options``, with their
bounds and descriptions); the entry is its name in ``ModelName`` and its instance in ``FAMILIES``. The request's
checks, the OpenAPI variants, the launch form and the CLI follow from them. Its model must be a
``transformers`` causal LM: the child builds it from ``hf_config`` with ``AutoConfig.for_model`` and
``AutoModelForCausalLM.from_config``, and everything downstream (evaluation, generation, export) loads it back
with the ``Auto`` classes.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Literal, get_args

import msgspec

from mt_contracts.bodies import with_fix
from mt_contracts.families.base import HfConfig, ModelFamily, ModelOptions, OptionValue, options_of
from mt_contracts.families.gpt2 import Gpt2Family
from mt_contracts.families.llama import LlamaFamily

if TYPE_CHECKING:
    from mt_contracts.requests import TrainRunRequest

__all__ = [
    "DEFAULT_MODEL",
    "FAMILIES",
    "OPTIONS",
    "OPTION_OWNERS",
    "HfConfig",
    "ModelFamily",
    "ModelName",
    "ModelOptions",
    "OptionValue",
    "check_model",
    "count_parameters",
    "family_of",
    "options_of",
]

# The registry: each family's name in ModelName and its instance in FAMILIES, in the same order (checked below).
ModelName = Literal["gpt2", "llama"]
FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (Gpt2Family(), LlamaFamily())}

if tuple(FAMILIES) != get_args(ModelName):
    raise RuntimeError(f"mt_contracts.families: ModelName {get_args(ModelName)} and FAMILIES {tuple(FAMILIES)} differ")

# The family of a request that names none (every request before families existed).
DEFAULT_MODEL: ModelName = "gpt2"
# Each family's options, by name, in its options Struct's order.
OPTIONS: dict[str, tuple[str, ...]] = {
    name: tuple(field.encode_name for field in msgspec.structs.fields(family.options_type))
    for name, family in FAMILIES.items()
}
# Each option of any family, with the families that take it.
OPTION_OWNERS: dict[str, tuple[str, ...]] = {
    option: tuple(name for name, options in OPTIONS.items() if option in options)
    for option in dict.fromkeys(option for options in OPTIONS.values() for option in options)
}
_AT = " - at `$"


def family_of(request: TrainRunRequest) -> ModelFamily:
    """The family the request's ``model`` names (``model`` is a ``ModelName``, so it is registered)."""
    return FAMILIES[request.model]


def check_model(request: TrainRunRequest) -> list[tuple[str, str]]:
    """Every ``model_options`` entry the family does not take, or takes with another type or bounds, then the
    family's own checks (on the options that are valid), as ``(field, what to change)``; empty when the request
    is usable by its family."""
    family = family_of(request)
    problems, valid = _check_options(family, request.model_options)
    if problems:
        request = msgspec.structs.replace(request, model_options=valid)
    return problems + family.check(request)


def _check_options(family: ModelFamily, options: ModelOptions) -> tuple[list[tuple[str, str]], ModelOptions]:
    """The problems of each option against the family's options Struct, and the options without a problem."""
    own = OPTIONS[family.name]
    problems: list[tuple[str, str]] = []
    valid: ModelOptions = {}
    for name, value in options.items():
        field = f"model_options.{name}"
        if name not in own:
            problems.append((field, _not_taken(family.name, name)))
            continue
        try:
            msgspec.convert({name: value}, family.options_type, strict=True)
        except msgspec.ValidationError as exc:
            message = str(exc).partition(_AT)[0]
            # model_options holds no nulls (its JSON type refuses them), so an optional option's null is no fix.
            problems.append((field, with_fix(message.replace(" | null", ""), value)))
        else:
            valid[name] = value
    return problems, valid


def _not_taken(model: str, option: str) -> str:
    own = OPTIONS[model]
    text = f"model {model!r} takes no option {option}; its options are: {', '.join(own) or '(none)'}"
    owners = OPTION_OWNERS.get(option, ())
    if owners:
        return f"{text}; remove it or send " + " or ".join(f"model={owner!r}" for owner in owners)
    close = difflib.get_close_matches(option, own, n=1)
    return f"{text}; " + (f"did you mean {close[0]!r}?" if close else "remove it")


def count_parameters(request: TrainRunRequest, vocab_size: int) -> int:
    """Trainable parameters of the model ``request`` describes with a tokenizer of ``vocab_size`` tokens."""
    return family_of(request).count_parameters(request, vocab_size)
