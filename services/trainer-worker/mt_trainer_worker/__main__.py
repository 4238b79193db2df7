"""``python -m mt_trainer_worker``: run the trainer worker until SIGINT/SIGTERM."""

from __future__ import annotations

import os

from mt_contracts.logs import configure_logging
from mt_contracts.settings import WorkerServiceSettings, from_env
from mt_trainer_worker.worker import create_worker


def main() -> None:
    settings = from_env(WorkerServiceSettings, os.environ)
    configure_logging(settings.app.log_level)
    create_worker(settings).run()


if __name__ == "__main__":
    main()
