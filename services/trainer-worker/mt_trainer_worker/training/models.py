"""Model families behind one small Protocol, looked up by the request's ``model``.

Adding a family (a Llama-style model, say) is one module that implements ``ModelFamily`` and one entry in
``MODEL_FAMILIES``.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel

from mt_contracts.requests import TrainRunRequest


class ModelFamily(Protocol):
    """Builds a causal language model that maps ``(batch, T) int64`` token ids to
    ``(batch, T, vocab_size)`` float logits and saves with ``save_pretrained``."""

    name: ClassVar[str]

    def build(self, request: TrainRunRequest, vocab_size: int, end_of_text_id: int) -> PreTrainedModel: ...


class Gpt2Family:
    """GPT-2 (Radford et al. 2019) from ``transformers``, with PyTorch's scaled dot-product attention."""

    name: ClassVar[str] = "gpt2"

    def build(self, request: TrainRunRequest, vocab_size: int, end_of_text_id: int) -> PreTrainedModel:
        config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=request.block_size,
            n_embd=request.n_embd,
            n_layer=request.n_layer,
            n_head=request.n_head,
            resid_pdrop=request.dropout,
            embd_pdrop=request.dropout,
            attn_pdrop=request.dropout,
            bos_token_id=end_of_text_id,
            eos_token_id=end_of_text_id,
        )
        config._attn_implementation = "sdpa"
        return GPT2LMHeadModel(config)


MODEL_FAMILIES: dict[str, ModelFamily] = {Gpt2Family.name: Gpt2Family()}


def logits_of(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Forward pass: ``(batch, T) int64`` ids to ``(batch, T, vocab_size)`` logits (``model`` a family's
    model, or the DistributedDataParallel wrapping one)."""
    logits = model(input_ids=input_ids).logits
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model returned {type(logits).__name__} logits")
    return logits
