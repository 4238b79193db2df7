"""The seeded sample of training lines for methods that train on at most so many."""

from __future__ import annotations

from collections import Counter

import pytest

from mt_tokenizer_worker.sampling import sample_lines
from mt_tokenizer_worker.statistics import HoldoutSplit

LINES = [f"line {i}\n" if i % 4 else " \n" for i in range(2_000)]  # every fourth line blank


def _sample(size: int, seed: int, batch: int = 100) -> list[str]:
    batches = iter([LINES[i : i + batch] for i in range(0, len(LINES), batch)])
    return [line for lines in sample_lines(batches, size, seed) for line in lines]


def test_the_sample_has_the_size_in_corpus_order_without_blank_lines() -> None:
    sample = _sample(300, seed=5)
    assert len(sample) == len(set(sample)) == 300
    assert not any(line.isspace() for line in sample)
    assert sample == sorted(sample, key=LINES.index)


def test_the_sample_depends_on_the_seed_only() -> None:
    assert _sample(300, seed=5) == _sample(300, seed=5, batch=7)
    assert _sample(300, seed=5) != _sample(300, seed=6)


def test_fewer_lines_than_the_size_are_all_kept() -> None:
    assert _sample(5_000, seed=1) == [line for line in LINES if not line.isspace()]


def test_every_line_is_equally_likely() -> None:
    counts = Counter(line for seed in range(400) for line in _sample(150, seed))
    # 1,500 non-blank lines, 150 drawn 400 times: each line 40 times on average (binomial sd 6).
    assert len(counts) == 1_500
    assert min(counts.values()) > 40 - 5 * 6 and max(counts.values()) < 40 + 5 * 6
    first_half = sum(count for line, count in counts.items() if LINES.index(line) < 1_000)
    assert abs(first_half / (150 * 400) - 0.5) < 0.02


def test_the_sample_stays_uniform_after_the_held_out_split_with_the_same_seed() -> None:
    # The pipeline holds lines out, then samples, both by the request's seed: the two must not share draws.
    counts: Counter[int] = Counter()
    for seed in range(20_000):
        split = HoldoutSplit(iter([[f"{i}\n" for i in range(12)]]), 0.3, seed)
        counts.update(int(line) for lines in sample_lines(split.training(), 2, seed) for line in lines)
    mean = sum(counts.values()) / 12  # about 3,300; binomial sd about 55
    assert all(abs(count - mean) < 0.08 * mean for count in counts.values()), counts


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="size"):
        next(sample_lines(iter([]), 0, 1))
