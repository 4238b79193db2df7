"""``python -m mt_tokenizer_worker.process [--nice N]``: the tokenizer training process.

Reads a ``TokenizerSpec`` (JSON) on stdin, trains, and writes on stdout its log events as they come, then one
outcome (``trained``, carrying the manifest the worker commits, or ``failed``): the child protocol of
``mt_storage.child``. It never talks to Redis: without the client library (and asyncio, ssl, jwt) it holds
7 MB less. If the worker dies (SIGKILL, OOM), the process stops within a second: the reaper hands its job to
another worker, and an orphan still training would write the same artifact folder beside it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mt_contracts import codec
from mt_contracts.events import Failed
from mt_contracts.tokenizer_process import TokenizerSpec, TokenizerTrained
from mt_storage.child import failure, leave, open_channel, watch_parent
from mt_storage.joblog import EventLog
from mt_tokenizer_worker.pipeline import train_tokenizer


def run(spec: TokenizerSpec, log: EventLog) -> TokenizerTrained | Failed:
    """Train, turning every error into ``Failed``: the stable code of one the user can act on, else
    ``internal_error`` (its traceback goes to stderr, the job's process log)."""
    try:
        return train_tokenizer(spec, log)
    except Exception as exc:  # noqa: BLE001 - every failure must reach the worker as a message
        roots = {"APP__ARTIFACTS_ROOT": str(Path(spec.out_dir).parent.parent), "APP__CORPUS_ROOT": spec.corpus_root}
        return failure(exc, "lower input_sentence_size or train on a smaller corpus", roots)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mt_tokenizer_worker.process")
    parser.add_argument("--nice", type=int, default=0, help="added to this process's niceness")
    args = parser.parse_args(argv)
    spec = codec.decode(sys.stdin.buffer.read(), TokenizerSpec)
    channel = open_channel(spec.tokenizer_id)
    watch_parent(channel)
    if args.nice:
        os.nice(args.nice)
    channel.send(run(spec, channel))
    return 0


if __name__ == "__main__":
    leave(main(sys.argv[1:]))
