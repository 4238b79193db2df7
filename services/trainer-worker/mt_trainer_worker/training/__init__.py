"""The training process, run as ``python -m mt_trainer_worker.training --spec PATH``.

torch and transformers are imported only here, in the subprocess the worker launches, so the worker's
event loop never runs (or imports) training code.

Errors::

    TrainingFailure     training cannot go on for a reason the user can act on; ``code`` is stable
"""

from __future__ import annotations


class TrainingFailure(Exception):
    """Ends the run ``failed`` with ``code`` and a message that says what to change."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
