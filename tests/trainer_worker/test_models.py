"""Model families: the registry agrees with the request's choices and each family declares a proper options
Struct, the parameter count the API can give without torch is the built model's, a family's config is what
transformers builds, and the request's model_options are checked against the family's options."""

from __future__ import annotations

from typing import get_args

import msgspec
import pytest
from transformers import GPT2LMHeadModel, LlamaForCausalLM

from mt_contracts.families import (
    FAMILIES,
    OPTION_OWNERS,
    OPTIONS,
    ModelName,
    ModelOptions,
    check_model,
    count_parameters,
    family_of,
    options_of,
)
from mt_contracts.families.gpt2 import Gpt2Options
from mt_contracts.families.llama import LlamaOptions, default_intermediate_size
from mt_contracts.requests import TrainRunRequest
from mt_trainer_worker.training.models import build_model

BASE = {"tokenizer_id": "tok_01JDQ8ZQ0000000000000000AA", "corpus_path": "x.txt"}


def _request(**changes: object) -> TrainRunRequest:
    return msgspec.convert({**BASE, **changes}, TrainRunRequest)


def test_every_model_name_is_a_registered_family() -> None:
    assert get_args(ModelName) == tuple(FAMILIES) == ("gpt2", "llama")
    assert all(name == family.name for name, family in FAMILIES.items())
    assert {name: family.options_type for name, family in FAMILIES.items()} == {
        "gpt2": Gpt2Options,
        "llama": LlamaOptions,
    }
    assert OPTIONS == {"gpt2": (), "llama": ("n_kv_head", "intermediate_size")}
    assert OPTION_OWNERS == {"n_kv_head": ("llama",), "intermediate_size": ("llama",)}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_declares_a_frozen_strict_options_struct_whose_options_have_defaults(name: str) -> None:
    options_type = FAMILIES[name].options_type
    config = options_type.__struct_config__
    assert (config.frozen, config.forbid_unknown_fields) == (True, True)
    assert [field.name for field in msgspec.structs.fields(options_type) if field.required] == []
    # Nothing sent: every option takes its default.
    assert options_of(_request(model=name), options_type) == options_type()


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"n_layer": 2, "n_head": 2, "n_embd": 48, "block_size": 64},
        {"model": "llama"},
        {
            "model": "llama",
            "n_layer": 3,
            "n_head": 4,
            "n_embd": 64,
            "model_options": {"n_kv_head": 2, "intermediate_size": 100},
        },
        {
            "model": "llama",
            "n_layer": 1,
            "n_head": 8,
            "n_embd": 32,
            "block_size": 16,
            "model_options": {"n_kv_head": 1},
        },
    ],
)
def test_the_parameter_count_is_the_built_models(changes: dict[str, object]) -> None:
    request = _request(**changes)
    model = build_model(request, vocab_size=300, end_of_text_id=0)
    assert count_parameters(request, 300) == sum(p.numel() for p in model.parameters())
    assert model.config._attn_implementation == "sdpa"


def test_llama_is_rmsnorm_rotary_swiglu_with_grouped_query_attention() -> None:
    request = _request(model="llama", n_layer=2, n_head=4, n_embd=32, block_size=16, model_options={"n_kv_head": 2})
    model = build_model(request, vocab_size=300, end_of_text_id=0)
    assert isinstance(model, LlamaForCausalLM)
    config = model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (2, 4, 2)
    assert (config.hidden_size, config.intermediate_size, config.max_position_embeddings) == (32, 128, 16)
    assert (config.hidden_act, config.tie_word_embeddings, config.eos_token_id) == ("silu", True, 0)
    attention = model.model.layers[0].self_attn
    assert (attention.k_proj.out_features, attention.q_proj.out_features) == (16, 32)  # 2 of 4 heads of 8
    assert type(model.model.norm).__name__ == "LlamaRMSNorm"
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_gpt2_builds_as_before() -> None:
    model = build_model(_request(n_layer=1, n_head=2, n_embd=16, block_size=8), vocab_size=50, end_of_text_id=0)
    assert isinstance(model, GPT2LMHeadModel)
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd, model.config.n_positions) == (1, 2, 16, 8)


def test_default_intermediate_size_is_the_swiglu_width_rounded_up() -> None:
    assert [default_intermediate_size(n) for n in (32, 64, 128, 4096)] == [128, 192, 384, 10944]


def test_shapes_name_what_fixes_the_weights() -> None:
    llama = _request(model="llama", n_head=4, n_embd=64)
    assert family_of(llama).shape(llama) == {
        "n_layer": 4, "n_head": 4, "model_options.n_kv_head": 4, "n_embd": 64, "model_options.intermediate_size": 192,
    }  # fmt: skip
    # Rotary positions have no weights, learned ones do.
    assert "block_size" not in family_of(llama).shape(llama)
    assert family_of(_request()).shape(_request())["block_size"] == 128


def test_checks_list_every_problem() -> None:
    assert check_model(_request(model="llama", n_head=4, n_embd=20, model_options={"n_kv_head": 3})) == [
        ("n_embd", "the head size n_embd/n_head=5 must be even for rotary positions; change n_embd or n_head"),
        ("model_options.n_kv_head", "n_head=4 must be divisible by n_kv_head=3"),
    ]
    assert check_model(_request(model="llama", model_options={"n_kv_head": 2})) == []


def test_model_options_are_checked_against_the_familys_options() -> None:
    gpt2 = _request(n_embd=130, model_options={"n_kv_head": 2, "rope_theta": 1e4})
    assert check_model(gpt2) == [
        (
            "model_options.n_kv_head",
            "model 'gpt2' takes no option n_kv_head; its options are: (none); remove it or send model='llama'",
        ),
        ("model_options.rope_theta", "model 'gpt2' takes no option rope_theta; its options are: (none); remove it"),
        ("n_embd", "n_embd=130 must be divisible by n_head=4"),
    ]
    llama = {"model": "llama", "n_head": 4}
    options: ModelOptions = {"n_kv_heads": 2, "n_kv_head": True, "intermediate_size": 4}
    assert check_model(_request(**llama, model_options=options)) == [
        (
            "model_options.n_kv_heads",
            "model 'llama' takes no option n_kv_heads; its options are: n_kv_head, intermediate_size; did you mean "
            "'n_kv_head'?",
        ),
        ("model_options.n_kv_head", "Expected `int`, got `bool`: send an integer as JSON, not a boolean"),
        ("model_options.intermediate_size", "Expected `int` >= 8"),
    ]
    # The family's own checks see the valid options.
    assert check_model(_request(**llama, model_options={"n_kv_head": 3, "intermediate_size": 4.5})) == [
        ("model_options.intermediate_size", "Expected `int`, got `float`: send an integer as JSON, not a number"),
        ("model_options.n_kv_head", "n_head=4 must be divisible by n_kv_head=3"),
    ]
    assert options_of(_request(**llama, model_options={"n_kv_head": 2}), LlamaOptions) == LlamaOptions(n_kv_head=2)
