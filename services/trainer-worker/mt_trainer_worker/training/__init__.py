"""The training and evaluation child processes (``python -m mt_trainer_worker.training``,
``python -m mt_trainer_worker.training.evaluate``).

torch and transformers are imported only here, in the children the worker launches, so the worker's event
loop never runs (or imports) training code; redis and arq are never imported here.

Errors::

    ChildFailure (mt_storage.child)
    └── TrainingFailure     training cannot go on for a reason the user can act on; ``code`` is stable
"""

from __future__ import annotations

from mt_storage.child import ChildFailure


class TrainingFailure(ChildFailure):
    """Ends the run ``failed`` with ``code`` and a message that says what to change."""
