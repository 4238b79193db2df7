"""``python -m mt_tokenizer_worker.process [--nice N]``: the tokenizer training process.

Reads a ``TokenizerSpec`` (JSON) on stdin, trains, and writes on stdout each line it appends to ``logs.jsonl``
(the worker publishes them live), then one ``TokenizerOutcome`` line. The worker runs it in its own process
group so that a cancel kills it at once; an unexpected error leaves a traceback on stderr and exit code 1.
It never talks to Redis: without the client library (and asyncio, ssl, jwt) it holds 7 MB less.

If the worker dies (SIGKILL, OOM), the process exits within ``ORPHAN_CHECK_SECONDS``: the reaper hands its
job to another worker, and an orphan still training would write the same artifact folder beside it.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

from mt_contracts import codec
from mt_contracts.tokenizers import TokenizerFailed, TokenizerOutcome, TokenizerSpec
from mt_storage import CorpusPathError
from mt_storage.corpus import CorpusDecodeError, CorpusFormatError
from mt_storage.joblog import JobLog
from mt_tokenizer_worker import TokenizerTrainingError
from mt_tokenizer_worker.pipeline import train_tokenizer

# How often the process checks that the worker that started it is still alive.
ORPHAN_CHECK_SECONDS = 1.0


def exit_when_orphaned(parent: int, interval: float = ORPHAN_CHECK_SECONDS) -> threading.Thread:
    """Start a daemon thread that ends this process (exit code 3) once its parent ``parent`` is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(3)

    thread = threading.Thread(target=watch, name="orphan-watch", daemon=True)
    thread.start()
    return thread


def run(spec: TokenizerSpec, log: JobLog) -> TokenizerOutcome:
    """Train, turning every error the user can act on into ``TokenizerFailed`` with a stable code."""
    try:
        return train_tokenizer(spec, log)
    except TokenizerTrainingError as exc:
        return TokenizerFailed(code=exc.code, message=exc.message)
    except CorpusDecodeError as exc:
        return TokenizerFailed(code="invalid_utf8", message=str(exc))
    except CorpusFormatError as exc:
        return TokenizerFailed(code="invalid_jsonl", message=str(exc))
    except CorpusPathError as exc:
        return TokenizerFailed(code="corpus_unavailable", message=str(exc))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mt_tokenizer_worker.process")
    parser.add_argument("--nice", type=int, default=0, help="added to this process's niceness")
    args = parser.parse_args(argv)
    exit_when_orphaned(os.getppid())
    if args.nice:
        os.nice(args.nice)
    spec = codec.decode(sys.stdin.buffer.read(), TokenizerSpec)
    outcome = run(spec, JobLog(Path(spec.log_path), spec.tokenizer_id, _hand_over))
    sys.stdout.buffer.write(codec.encode(outcome) + b"\n")
    sys.stdout.flush()
    return 0


def _hand_over(job_id: str, line: bytes) -> None:
    """Give the worker one ``logs.jsonl`` line (ending in ``\\n``) to publish on the job's live stream."""
    sys.stdout.buffer.write(line)
    sys.stdout.flush()


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # No interpreter shutdown: after a corpus error, SentencePiece may still be training on the part it read,
    # in a C++ thread, and ending the process under it aborts (SIGABRT). Everything is written by now.
    os._exit(code)
