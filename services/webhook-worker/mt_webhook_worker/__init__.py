"""The webhook worker: an arq worker on the webhook queue that sends signed deliveries of job events
(``mt_storage.webhooks``), and the dispatcher that turns the lifecycle's outbox into deliveries."""

from __future__ import annotations
