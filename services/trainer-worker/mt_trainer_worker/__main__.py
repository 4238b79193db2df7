"""``python -m mt_trainer_worker``: run the trainer worker until SIGINT/SIGTERM; ``--check`` is its liveness probe."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mt_storage.queue import worker_main
from mt_trainer_worker.worker import create_worker


def main(argv: Sequence[str] | None = None) -> int:
    return worker_main("mt_trainer_worker", create_worker, lambda settings: settings.queue.training, argv)


if __name__ == "__main__":
    sys.exit(main())
