"""A Llama-style decoder (Touvron et al. 2023) as ``transformers``' ``LlamaForCausalLM`` builds it: RMSNorm
(Zhang & Sennrich 2019), rotary positions (Su et al. 2021), a SwiGLU MLP (Shazeer 2020), grouped-query
attention (Ainslie et al. 2023) with ``n_kv_head`` key/value heads, the output layer tied to the token
embedding, no biases."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar

import msgspec
from msgspec import Meta

from mt_contracts.families.base import HfConfig, options_of

if TYPE_CHECKING:
    from mt_contracts.requests import TrainRunRequest

# LLaMA's SwiGLU width is 2/3 of a 4x MLP rounded up to a multiple ("multiple_of", 256 in Meta's code); 64
# keeps toy models toy.
MULTIPLE_OF = 64


def default_intermediate_size(n_embd: int) -> int:
    """``ceil(8 * n_embd / 3 / 64) * 64``: the SwiGLU width with the parameters of a 4x GELU MLP."""
    return -(-8 * n_embd // (3 * MULTIPLE_OF)) * MULTIPLE_OF


class LlamaOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``llama`` family's options, sent in a run request's ``model_options``; one not sent is derived from
    the common sizes."""

    n_kv_head: (
        Annotated[int, Meta(ge=1, le=64, description="Key/value heads (grouped-query attention); default n_head.")]
        | None
    ) = None
    intermediate_size: (
        Annotated[
            int, Meta(ge=8, le=65536, description="Width of the SwiGLU MLP; default ceil(8 * n_embd / 3 / 64) * 64.")
        ]
        | None
    ) = None


class LlamaFamily:
    """``LlamaForCausalLM`` with PyTorch's scaled dot-product attention; ``n_kv_head`` (default ``n_head``:
    multi-head attention) and ``intermediate_size`` (default ``default_intermediate_size``) are its options;
    ``dropout`` applies to the attention probabilities (the model has no other dropout)."""

    name: ClassVar[str] = "llama"
    options_type: ClassVar[type[msgspec.Struct]] = LlamaOptions

    def check(self, request: TrainRunRequest) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if request.n_embd % request.n_head:
            problems.append(("n_embd", f"n_embd={request.n_embd} must be divisible by n_head={request.n_head}"))
        elif (request.n_embd // request.n_head) % 2:
            problems.append(
                (
                    "n_embd",
                    f"the head size n_embd/n_head={request.n_embd // request.n_head} must be even for rotary "
                    "positions; change n_embd or n_head",
                )
            )
        n_kv_head = options_of(request, LlamaOptions).n_kv_head
        if n_kv_head is not None and request.n_head % n_kv_head:
            problems.append(
                ("model_options.n_kv_head", f"n_head={request.n_head} must be divisible by n_kv_head={n_kv_head}")
            )
        return problems

    def shape(self, request: TrainRunRequest) -> dict[str, int]:
        # Rotary positions have no weights: block_size may differ between runs that share weights.
        return {"n_layer": request.n_layer, "n_head": request.n_head, "model_options.n_kv_head": _kv_heads(request),
                "n_embd": request.n_embd, "model_options.intermediate_size": _intermediate(request)}  # fmt: skip

    def count_parameters(self, request: TrainRunRequest, vocab_size: int) -> int:
        # The tied embedding; per block q and o (d x d each), k and v (d x n_kv_head * head size each), the
        # SwiGLU gate, up and down projections (3 x d x intermediate_size) and two RMSNorm weights (d each);
        # the final RMSNorm (d).
        d = request.n_embd
        kv = _kv_heads(request) * (d // request.n_head)
        block = 2 * d * d + 2 * d * kv + 3 * d * _intermediate(request) + 2 * d
        return vocab_size * d + request.n_layer * block + d

    def hf_config(self, request: TrainRunRequest, vocab_size: int, end_of_text_id: int) -> HfConfig:
        return HfConfig(
            model_type="llama",
            options={
                "vocab_size": vocab_size,
                "hidden_size": request.n_embd,
                "intermediate_size": _intermediate(request),
                "num_hidden_layers": request.n_layer,
                "num_attention_heads": request.n_head,
                "num_key_value_heads": _kv_heads(request),
                "max_position_embeddings": request.block_size,
                "attention_dropout": request.dropout,
                "tie_word_embeddings": True,
                "bos_token_id": end_of_text_id,
                "eos_token_id": end_of_text_id,
            },
        )


def _kv_heads(request: TrainRunRequest) -> int:
    n_kv_head = options_of(request, LlamaOptions).n_kv_head
    return request.n_head if n_kv_head is None else n_kv_head


def _intermediate(request: TrainRunRequest) -> int:
    size = options_of(request, LlamaOptions).intermediate_size
    return default_intermediate_size(request.n_embd) if size is None else size
