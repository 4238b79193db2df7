"""A Llama-style decoder (Touvron et al. 2023) as ``transformers``' ``LlamaForCausalLM`` builds it: RMSNorm
(Zhang & Sennrich 2019), rotary positions (Su et al. 2021), a SwiGLU MLP (Shazeer 2020), grouped-query
attention (Ainslie et al. 2023) with ``n_kv_head`` key/value heads, the output layer tied to the token
embedding, no biases."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from mt_contracts.families.base import HfConfig

if TYPE_CHECKING:
    from mt_contracts.requests import TrainRunRequest

# LLaMA's SwiGLU width is 2/3 of a 4x MLP rounded up to a multiple ("multiple_of", 256 in Meta's code); 64
# keeps toy models toy.
MULTIPLE_OF = 64


def default_intermediate_size(n_embd: int) -> int:
    """``ceil(8 * n_embd / 3 / 64) * 64``: the SwiGLU width with the parameters of a 4x GELU MLP."""
    return -(-8 * n_embd // (3 * MULTIPLE_OF)) * MULTIPLE_OF


class LlamaFamily:
    """``LlamaForCausalLM`` with PyTorch's scaled dot-product attention; ``n_kv_head`` (default ``n_head``:
    multi-head attention) and ``intermediate_size`` (default ``default_intermediate_size``) are its own
    fields; ``dropout`` applies to the attention probabilities (the model has no other dropout)."""

    name: ClassVar[str] = "llama"
    options: ClassVar[tuple[str, ...]] = ("n_kv_head", "intermediate_size")

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
        if request.n_kv_head is not None and request.n_head % request.n_kv_head:
            problems.append(
                ("n_kv_head", f"n_head={request.n_head} must be divisible by n_kv_head={request.n_kv_head}")
            )
        return problems

    def shape(self, request: TrainRunRequest) -> dict[str, int]:
        # Rotary positions have no weights: block_size may differ between runs that share weights.
        return {"n_layer": request.n_layer, "n_head": request.n_head, "n_kv_head": _kv_heads(request),
                "n_embd": request.n_embd, "intermediate_size": _intermediate(request)}  # fmt: skip

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
    return request.n_head if request.n_kv_head is None else request.n_kv_head


def _intermediate(request: TrainRunRequest) -> int:
    return default_intermediate_size(request.n_embd) if request.intermediate_size is None else request.intermediate_size
