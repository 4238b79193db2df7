"""A uniform sample of a fixed number of training lines, seeded: for methods that train on at most so many
lines (SentencePiece's ``input_sentence_size``), whose own sampling is not reproducible."""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Iterator
from itertools import filterfalse

# The sample is handed on in lists of this many lines, in corpus order.
_BATCH_LINES = 4096


def sample_lines(batches: Iterator[list[str]], size: int, seed: int) -> Iterator[list[str]]:
    """``size`` of the non-blank lines of ``batches`` (all of them when there are fewer), each set of ``size``
    lines equally likely, drawn by ``random.Random(f"sample:{seed}")``; yielded in corpus order once
    ``batches`` ends.

    Reservoir sampling with Li's Algorithm L ("Reservoir-sampling algorithms of time complexity
    O(n(1 + log(N/n)))", ACM TOMS 20(4), 1994): the gap to the next line that enters the sample is drawn, so
    the cost is a few draws per sampled line, not one per line read. Holds ``size`` lines in memory.

    Raises:
        ValueError: ``size`` is not positive.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    # A stream of its own: the held-out split draws from random.Random(seed), and sharing its numbers would
    # tie which lines are sampled to which are held out.
    rng = random.Random(f"sample:{seed}")
    sample: list[str] = []
    positions: list[int] = []  # each sampled line's position among the non-blank lines
    start = 0  # the position of the batch's first non-blank line
    weight = _weight(rng, size, 1.0)
    chosen = size + geometric_gap(rng, weight)  # the position of the next line to enter the full sample
    for batch in batches:
        lines = list(filterfalse(str.isspace, batch))
        end = start + len(lines)
        if len(sample) < size:  # the first ``size`` lines fill the sample
            taken = lines[: size - len(sample)]
            positions.extend(range(start, start + len(taken)))
            sample.extend(taken)
        while chosen < end:
            slot = rng.randrange(size)
            sample[slot], positions[slot] = lines[chosen - start], chosen
            weight = _weight(rng, size, weight)
            chosen += 1 + geometric_gap(rng, weight)
        start = end
    order = sorted(range(len(sample)), key=positions.__getitem__)
    for first in range(0, len(order), _BATCH_LINES):
        yield [sample[index] for index in order[first : first + _BATCH_LINES]]


def _weight(rng: random.Random, size: int, weight: float) -> float:
    """Algorithm L's W, times exp(log(U) / size) for U uniform on (0, 1]."""
    return weight * math.exp(math.log(1.0 - rng.random()) / size)


def geometric_gap(rng: random.Random, probability: float) -> int:
    """How many lines pass before the next chosen one when each is chosen with ``probability``, independently:
    ``floor(log(U) / log(1 - probability))`` for ``U`` uniform on (0, 1] (Knuth, TAOCP vol. 2, 3.4.1). One
    draw from ``rng`` when ``probability`` is strictly between 0 and 1; ``sys.maxsize`` (never) at 0 or below,
    or when the quotient overflows (a probability below about 1e-308)."""
    if probability >= 1.0:
        return 0
    if probability <= 0.0:
        return sys.maxsize
    gap = math.log(1.0 - rng.random()) / math.log1p(-probability)
    return math.floor(gap) if gap < sys.maxsize else sys.maxsize
