"""``python -m mt_webhook_worker``: run the webhook worker until SIGINT/SIGTERM; ``--check`` probes liveness."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mt_storage.queue import worker_main
from mt_webhook_worker.worker import create_worker


def main(argv: Sequence[str] | None = None) -> int:
    return worker_main(
        "mt_webhook_worker", create_worker, lambda settings: settings.queue.webhooks, argv, uses_storage=False
    )


if __name__ == "__main__":
    sys.exit(main())
