"""Where bytes live: the artifact layout, atomic file writes, corpus resolution, job records in Redis and
an embedded Redis server for machines that have none.

Errors::

    StorageError
    ├── CorpusPathError      a corpus path is absolute, escapes the corpus root, or names nothing readable
    │   ├── CorpusDecodeError    (corpus.py) a corpus file is not UTF-8; names the file and byte offset
    │   └── CorpusFormatError    (corpus.py) a .jsonl line is not an object with the text field
    ├── RecordNotFound       no job record has this id
    ├── NoWeights            (checkpoints.py) the run has no final weights yet
    └── CheckpointNotKept    (checkpoints.py) the run keeps no checkpoint at that step
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error raised by mt_storage."""


class CorpusPathError(StorageError):
    """A corpus path that cannot be used; the message says why and what to send instead."""


class RecordNotFound(StorageError):
    """No job record exists under the given id."""
