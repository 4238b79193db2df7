"""Tokenizer methods, looked up by the request's ``method``.

Adding a method is one module that implements ``TokenizerMethod`` and one entry in ``METHODS``.
"""

from __future__ import annotations

from mt_tokenizer_worker.methods.base import TokenizerMethod, TrainedTokenizer
from mt_tokenizer_worker.methods.bpe import BpeMethod
from mt_tokenizer_worker.methods.sentencepiece import SentencePieceMethod

METHODS: dict[str, TokenizerMethod] = {BpeMethod.name: BpeMethod(), SentencePieceMethod.name: SentencePieceMethod()}

__all__ = ["METHODS", "TokenizerMethod", "TrainedTokenizer"]
