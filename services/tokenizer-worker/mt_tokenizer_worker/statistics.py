"""Statistics of a trained tokenizer on held-out lines, and the held-out split itself."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from itertools import chain, compress
from operator import eq

from tokenizers import Tokenizer

from mt_contracts.tokenizers import HeldOutStats, LengthBin, TokenCount
from mt_tokenizer_worker.methods import TrainedTokenizer
from mt_tokenizer_worker.sampling import geometric_gap

TOP_TOKENS = 20
# The held-out text aimed at on a large corpus: 1 MiB (about 30,000 lines, 250,000 tokens of English) puts
# the statistics' sampling error well under 1%, and measuring more costs a large job seconds.
HELDOUT_TARGET_BYTES = 1 << 20
# Held-out text is kept in memory for the statistics; past this many bytes no more lines are held out.
HELDOUT_MAX_BYTES = 2 << 20
# Lines encoded per call: each Encoding holds its tokens' strings and offsets, so larger batches cost memory.
_BATCH_LINES = 256


class HoldoutSplit:
    """Splits a line stream, given as lists of lines: each non-blank line is held out with probability
    ``fraction``, independently, until ``max_bytes`` of text are held out. ``training()`` yields the other
    lines, in lists; ``training_has_text`` tells whether any of them is not blank.

    With ``corpus_bytes`` (the corpus's size, known before reading), ``fraction`` is lowered to
    ``target_bytes / corpus_bytes`` where that is smaller, so that a large corpus holds out about
    ``target_bytes`` spread over all of it, not its first files up to ``max_bytes``; ``self.fraction`` is
    the one used.

    Rather than one draw per line, the gap to the next chosen line is drawn (``geometric_gap``) from
    ``random.Random(seed)``: the choice depends only on the seed and the lines' positions, and costs one draw
    per held-out line, not per line: a corpus has millions.
    """

    def __init__(
        self,
        batches: Iterator[list[str]],
        fraction: float,
        seed: int,
        *,
        corpus_bytes: int = 0,
        target_bytes: int = HELDOUT_TARGET_BYTES,
        max_bytes: int = HELDOUT_MAX_BYTES,
    ) -> None:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), got {fraction}")
        self.fraction = min(fraction, target_bytes / corpus_bytes) if corpus_bytes > 0 else fraction
        self._batches = batches
        self._random = random.Random(seed)
        self._max_bytes = max_bytes
        self.heldout: list[str] = []
        self.heldout_bytes = 0
        self.training_lines = 0
        self.training_has_text = False

    def training(self) -> Iterator[list[str]]:
        """The training lines in lists; fills ``heldout`` and the counters as it goes, a list at a time."""
        start = 0  # the stream position of the batch's first line
        chosen = geometric_gap(self._random, self.fraction)  # the stream position of the next chosen line
        for batch in self._batches:
            end = start + len(batch)
            held: list[int] = []
            while chosen < end and self.heldout_bytes < self._max_bytes:
                line = batch[chosen - start]
                if not line.isspace():
                    held.append(chosen - start)
                    self.heldout.append(line)
                    self.heldout_bytes += len(line.encode())
                chosen += 1 + geometric_gap(self._random, self.fraction)
            start = end
            self.training_lines += len(batch) - len(held)
            kept = batch.copy() if held else batch
            for index in reversed(held):
                del kept[index]
            self.training_has_text = self.training_has_text or not all(map(str.isspace, kept))
            yield kept


def heldout_statistics(tokenizer: Tokenizer, lines: list[str], trained: TrainedTokenizer) -> HeldOutStats | None:
    """``HeldOutStats`` of ``tokenizer`` on ``lines`` (``None`` when there are none). Lines are encoded
    without added special tokens; a round trip decodes with special tokens kept. A character is uncovered when
    the tokenizer writes it as the unknown token or as byte-fallback tokens."""
    if not lines:
        return None
    # Unknown and byte-fallback ids; every other id is a vocabulary piece.
    uncovered_ids = set(trained.byte_fallback_ids) | ({trained.unk_id} if trained.unk_id is not None else set())
    counts: Counter[int] = Counter()
    tokens = exact = uncovered_chars = 0
    for start in range(0, len(lines), _BATCH_LINES):
        batch = lines[start : start + _BATCH_LINES]
        encodings = tokenizer.encode_batch(batch, add_special_tokens=False)
        batch_ids = [encoding.ids for encoding in encodings]
        counts.update(chain.from_iterable(batch_ids))
        tokens += sum(map(len, batch_ids))
        exact += sum(map(eq, batch, tokenizer.decode_batch(batch_ids, skip_special_tokens=False)))
        if uncovered_ids:
            # The byte-fallback tokens of one character share its offsets: count each span once.
            for encoding, line_ids in zip(encodings, batch_ids, strict=True):
                if not uncovered_ids.isdisjoint(line_ids):
                    spans = set(compress(encoding.offsets, map(uncovered_ids.__contains__, line_ids)))
                    uncovered_chars += sum(end - begin for begin, end in spans)
    unk_tokens = 0 if trained.unk_id is None else counts[trained.unk_id]
    fallback_tokens = sum(counts[token_id] for token_id in trained.byte_fallback_ids)
    n_bytes, n_chars = sum(map(len, map(str.encode, lines))), sum(map(len, lines))
    words = sum(map(len, map(str.split, lines)))
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
