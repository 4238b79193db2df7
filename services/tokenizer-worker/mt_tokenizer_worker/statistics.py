"""Statistics of a trained tokenizer on held-out lines, and the held-out split itself."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from itertools import compress, repeat, starmap

from tokenizers import Tokenizer

from mt_contracts.tokenizers import HeldOutStats, LengthBin, TokenCount
from mt_tokenizer_worker.methods import TrainedTokenizer

TOP_TOKENS = 20
# Held-out text is kept in memory for the statistics; past this many bytes no more lines are held out.
HELDOUT_MAX_BYTES = 8 << 20
_BATCH_LINES = 256


class HoldoutSplit:
    """Splits a line stream, given as lists of lines: each non-blank line is held out with probability
    ``fraction``, drawn from a ``random.Random(seed)`` stream (one draw per line, so the choice depends only on
    the seed and the line's position), until ``max_bytes`` of text are held out. ``training()`` yields the
    other lines, in lists."""

    def __init__(
        self, batches: Iterator[list[str]], fraction: float, seed: int, max_bytes: int = HELDOUT_MAX_BYTES
    ) -> None:
        self._batches = batches
        self._fraction = fraction
        self._random = random.Random(seed)
        self._max_bytes = max_bytes
        self.heldout: list[str] = []
        self.heldout_bytes = 0
        self.training_lines = 0
        self.training_non_blank_lines = 0

    def training(self) -> Iterator[list[str]]:
        """The training lines in lists; fills ``heldout`` and the counters as it goes, a list at a time."""
        # Every loop over a list's lines runs in C (starmap, compress, map): a job's corpus has millions.
        draw, below = self._random.random, self._fraction.__gt__
        for batch in self._batches:
            # One draw per line, in line order, whatever is held out.
            draws = list(starmap(draw, repeat((), len(batch))))
            held: list[int] = []
            for index in compress(range(len(batch)), map(below, draws)):
                line = batch[index]
                if not line.isspace() and self.heldout_bytes < self._max_bytes:
                    held.append(index)
                    self.heldout.append(line)
                    self.heldout_bytes += len(line.encode())
            self.training_lines += len(batch) - len(held)
            self.training_non_blank_lines += len(batch) - sum(map(str.isspace, batch)) - len(held)
            kept = batch.copy() if held else batch
            for index in reversed(held):
                del kept[index]
            yield kept


def heldout_statistics(tokenizer: Tokenizer, lines: list[str], trained: TrainedTokenizer) -> HeldOutStats | None:
    """``HeldOutStats`` of ``tokenizer`` on ``lines`` (``None`` when there are none). Lines are encoded
    without added special tokens; a round trip decodes with special tokens kept."""
    if not lines:
        return None
    unk = trained.unk_id
    fallback = set(trained.byte_fallback_ids)
    counts: Counter[int] = Counter()
    tokens = unk_tokens = fallback_tokens = uncovered_chars = exact = 0
    for start in range(0, len(lines), _BATCH_LINES):
        batch = lines[start : start + _BATCH_LINES]
        encodings = tokenizer.encode_batch(batch, add_special_tokens=False)
        decoded = tokenizer.decode_batch([e.ids for e in encodings], skip_special_tokens=False)
        for line, encoding, text in zip(batch, encodings, decoded, strict=True):
            exact += text == line
            ids = encoding.ids
            counts.update(ids)
            tokens += len(ids)
            # Most lines hold neither unknown nor byte-fallback tokens: skip their offsets.
            if unk not in ids and fallback.isdisjoint(ids):
                continue
            uncovered: set[int] = set()
            for token_id, (begin, end) in zip(ids, encoding.offsets, strict=True):
                if token_id == unk:
                    unk_tokens += 1
                    uncovered.update(range(begin, end))
                elif token_id in fallback:
                    fallback_tokens += 1
                    uncovered.update(range(begin, end))
            uncovered_chars += len(uncovered)
    n_bytes = sum(len(line.encode()) for line in lines)
    n_chars = sum(len(line) for line in lines)
    words = sum(len(line.split()) for line in lines)
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_TOKENS]
    return HeldOutStats(
        lines=len(lines),
        bytes=n_bytes,
        characters=n_chars,
        words=words,
        tokens=tokens,
        bytes_per_token=_ratio(n_bytes, tokens),
        chars_per_token=_ratio(n_chars, tokens),
        tokens_per_word=_ratio(tokens, words),
        unk_rate=_ratio(unk_tokens, tokens),
        byte_fallback_rate=_ratio(fallback_tokens, tokens),
        char_coverage=1.0 - _ratio(uncovered_chars, n_chars),
        roundtrip_exact_rate=_ratio(exact, len(lines)),
        top_tokens=[TokenCount(token=tokenizer.id_to_token(i) or "", id=i, count=c) for i, c in top],
    )


def length_histogram(token_byte_lengths: list[int]) -> list[LengthBin]:
    """How many vocabulary tokens have each length in bytes, shortest first."""
    return [LengthBin(bytes=length, count=count) for length, count in sorted(Counter(token_byte_lengths).items())]


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0
