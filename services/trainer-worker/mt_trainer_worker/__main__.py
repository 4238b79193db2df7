"""``python -m mt_trainer_worker``: run the trainer worker until SIGINT/SIGTERM. ``--check`` is its liveness
probe: exit 0 when a worker on the queue refreshed arq's health key in time, else 1."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from mt_contracts.logs import configure_logging
from mt_contracts.settings import WorkerServiceSettings, from_env
from mt_storage.queue import check_health
from mt_trainer_worker.worker import create_worker


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mt_trainer_worker", description="Run the trainer worker.")
    parser.add_argument(
        "--check", action="store_true", help="check arq's health key for the worker's queue and exit (0: healthy)"
    )
    check = parser.parse_args(argv).check is True
    settings = from_env(WorkerServiceSettings, os.environ)
    if check:
        return check_health(settings.redis.url, settings.queue.training)
    configure_logging(settings.app.log_level)
    create_worker(settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
