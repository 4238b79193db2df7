"""``python -m mt_tokenizer_worker``: run the tokenizer worker until SIGINT/SIGTERM; ``--check`` probes liveness."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mt_storage.queue import worker_main
from mt_tokenizer_worker.worker import create_worker


def main(argv: Sequence[str] | None = None) -> int:
    return worker_main("mt_tokenizer_worker", create_worker, lambda settings: settings.queue.tokenizer, argv)


if __name__ == "__main__":
    sys.exit(main())
