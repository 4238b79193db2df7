"""HTTP handlers, one module per resource: decode, call one function, encode."""

from __future__ import annotations

from mt_api.routes import evals, generation, health, runs, tokenizers

ROUTES = [*tokenizers.ROUTES, *runs.ROUTES, *evals.ROUTES, *generation.ROUTES, *health.ROUTES]
