"""The tokenizer worker: an arq worker on the tokenizer queue that trains tokenizers with pluggable methods.

Errors::

    ChildFailure (mt_storage.child)
    └── TokenizerTrainingError     training cannot produce a usable tokenizer; ``code`` is stable
"""

from __future__ import annotations

from mt_storage.child import ChildFailure


class TokenizerTrainingError(ChildFailure):
    """A tokenizer job failed for a reason the user can act on; ``code`` is stable, the message says what
    to change."""
