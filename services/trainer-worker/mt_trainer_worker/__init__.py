"""The trainer worker: an arq worker on the training queue that launches and supervises one training
subprocess per run (``mt_trainer_worker.training``), turning its events into the job record and logs."""

from __future__ import annotations
