"""GPT-2 (Radford et al. 2019) as ``transformers`` builds it: learned positions, pre-LayerNorm blocks, a
4x GELU MLP, the output layer tied to the token embedding."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import msgspec

from mt_contracts.families.base import HfConfig

if TYPE_CHECKING:
    from mt_contracts.requests import TrainRunRequest


class Gpt2Options(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """GPT-2 takes no options beyond the common sizes."""


class Gpt2Family:
    """``GPT2LMHeadModel`` with PyTorch's scaled dot-product attention."""

    name: ClassVar[str] = "gpt2"
    options_type: ClassVar[type[msgspec.Struct]] = Gpt2Options

    def check(self, request: TrainRunRequest) -> list[tuple[str, str]]:
        if request.n_embd % request.n_head:
            return [("n_embd", f"n_embd={request.n_embd} must be divisible by n_head={request.n_head}")]
        return []

    def shape(self, request: TrainRunRequest) -> dict[str, int]:
        # The position embedding is block_size x n_embd, so the context fixes a shape too.
        return {"n_layer": request.n_layer, "n_head": request.n_head, "n_embd": request.n_embd,
                "block_size": request.block_size}  # fmt: skip

    def count_parameters(self, request: TrainRunRequest, vocab_size: int) -> int:
        # Token and position embeddings; per block two LayerNorms (2d each), qkv (d x 3d + 3d), the attention
        # projection (d x d + d), the MLP (d x 4d + 4d, 4d x d + d): 12d^2 + 13d; the final LayerNorm (2d).
        d = request.n_embd
        return vocab_size * d + request.block_size * d + request.n_layer * (12 * d * d + 13 * d) + 2 * d

    def hf_config(self, request: TrainRunRequest, vocab_size: int, end_of_text_id: int) -> HfConfig:
        return HfConfig(
            model_type="gpt2",
            options={
                "vocab_size": vocab_size,
                "n_positions": request.block_size,
                "n_embd": request.n_embd,
                "n_layer": request.n_layer,
                "n_head": request.n_head,
                "resid_pdrop": request.dropout,
                "embd_pdrop": request.dropout,
                "attn_pdrop": request.dropout,
                "bos_token_id": end_of_text_id,
                "eos_token_id": end_of_text_id,
            },
        )
