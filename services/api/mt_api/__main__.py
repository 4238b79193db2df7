"""``python -m mt_api``: serve the gateway with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import os
import sys

import uvicorn

from mt_api.app import create_app
from mt_contracts.logs import configure_logging
from mt_contracts.settings import ApiSettings, SettingsError, from_env


def main() -> None:
    try:
        settings = from_env(ApiSettings, os.environ)
    except SettingsError as exc:
        print(f"mt_api: {exc}", file=sys.stderr)
        sys.exit(2)
    # One JSON handler on the root for every logger, uvicorn's included (log_config=None leaves them
    # propagating to it), and it redacts secrets (access_token values, URL passwords) from every line.
    configure_logging(settings.app.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.http.host,
        port=settings.http.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
    )


if __name__ == "__main__":
    main()
