"""Trained tokenizers loaded for ``POST /tokenizers/{id}/encode``, kept in a small LRU cache.

A tokenizer directory never changes once its manifest is written, so an entry never goes stale. Loading and
encoding are CPU work and run in a worker thread, off the event loop. Only HF ``tokenizers`` is imported here
(never torch or transformers).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from pathlib import Path

from tokenizers import Tokenizer

from mt_contracts.tokenizers import EncodeResponse

TOKENIZER_JSON = "tokenizer.json"


def read_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer saved at ``path``.

    Raises:
        OSError: the file is missing or unreadable, or not a ``tokenizers`` file (the library raises a bare
            ``Exception`` for one it cannot parse, and for a missing file too).
    """
    text = path.read_text(encoding="utf-8")
    try:
        return Tokenizer.from_str(text)
    except Exception as exc:  # the library's only error type
        raise OSError(f"{path} is not a tokenizer file: {exc}") from exc


class TokenizerCache:
    """Up to ``capacity`` loaded tokenizers by id, least recently used evicted first. Thread-safe."""

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Tokenizer] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, tokenizer_id: str, directory: Path) -> Tokenizer:
        """The tokenizer of ``directory/tokenizer.json``, from the cache when present.

        Raises:
            OSError: the file cannot be read or parsed (``read_tokenizer``).
        """
        with self._lock:
            cached = self._items.get(tokenizer_id)
            if cached is not None:
                self._items.move_to_end(tokenizer_id)
                return cached
        tokenizer = read_tokenizer(directory / TOKENIZER_JSON)
        with self._lock:
            self._items[tokenizer_id] = tokenizer
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return tokenizer

    async def encode(self, tokenizer_id: str, directory: Path, text: str) -> EncodeResponse:
        """Encode ``text`` (no special tokens added) and decode it back, in a worker thread."""
        return await asyncio.to_thread(self._encode, tokenizer_id, directory, text)

    def _encode(self, tokenizer_id: str, directory: Path, text: str) -> EncodeResponse:
        tokenizer = self.load(tokenizer_id, directory)
        encoding = tokenizer.encode(text, add_special_tokens=False)
        return EncodeResponse(
            ids=encoding.ids,
            tokens=encoding.tokens,
            decoded=tokenizer.decode(encoding.ids, skip_special_tokens=False),
        )
