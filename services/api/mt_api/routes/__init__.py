"""HTTP handlers, one module per resource: decode, call one function, encode."""

from __future__ import annotations

from mt_api.routes import artifacts, corpora, evals, generation, health, logs, runs, tokenizers, webhooks

ROUTES = [
    *tokenizers.ROUTES,
    *runs.ROUTES,
    *evals.ROUTES,
    *generation.ROUTES,
    *logs.ROUTES,
    *artifacts.ROUTES,
    *health.ROUTES,
    *corpora.ROUTES,
    *webhooks.ROUTES,
]
