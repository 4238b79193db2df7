"""The tokenizer worker: an arq worker on the tokenizer queue that trains tokenizers with pluggable methods.

Errors::

    TokenizerTrainingError     training cannot produce a usable tokenizer; ``code`` is stable
"""

from __future__ import annotations


class TokenizerTrainingError(Exception):
    """A tokenizer job failed for a reason the user can act on; ``code`` is stable, the message says what
    to change."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
