"""The held-out split: which lines are held out of tokenizer training."""

from __future__ import annotations

import pytest

from mt_tokenizer_worker.statistics import HoldoutSplit

LINES = [f"line {i}\n" if i % 5 else "\n" for i in range(100_000)]  # every fifth line blank


def _split(fraction: float, seed: int, max_bytes: int = 1 << 30, size: int = 2_400) -> tuple[HoldoutSplit, list[str]]:
    batches = iter([LINES[i : i + size] for i in range(0, len(LINES), size)])
    split = HoldoutSplit(batches, fraction, seed, max_bytes=max_bytes)
    training = [line for batch in split.training() for line in batch]
    return split, training


def test_each_non_blank_line_is_held_out_with_the_fraction_and_the_rest_trains_in_order() -> None:
    split, training = _split(0.1, seed=7)
    non_blank = len(LINES) * 4 // 5
    # Binomial(80,000, 0.1): mean 8,000, standard deviation 85.
    assert abs(len(split.heldout) - 0.1 * non_blank) < 5 * 85
    assert not any(line.isspace() for line in split.heldout)
    assert split.training_lines == len(training) == len(LINES) - len(split.heldout)
    held = set(split.heldout)
    assert training == [line for line in LINES if line not in held]
    assert split.training_has_text


def test_the_choice_depends_on_the_seed_and_positions_only() -> None:
    first, _ = _split(0.05, seed=1)
    again, _ = _split(0.05, seed=1, size=777)  # other batch boundaries
    other, _ = _split(0.05, seed=2)
    assert first.heldout == again.heldout
    assert first.heldout != other.heldout


def test_nothing_is_held_out_at_fraction_zero_and_no_more_than_max_bytes() -> None:
    none, training = _split(0.0, seed=1)
    assert none.heldout == [] and training == LINES
    capped, _ = _split(0.5, seed=1, max_bytes=1_000)
    assert 1_000 <= capped.heldout_bytes < 1_000 + len("line 99999\n")


def test_a_vanishing_fraction_holds_out_nothing() -> None:
    split, training = _split(1e-320, seed=1)
    assert split.heldout == [] and training == LINES


def test_a_fraction_of_one_or_more_is_refused() -> None:
    with pytest.raises(ValueError, match="fraction"):
        HoldoutSplit(iter([]), 1.0, 0)


def test_a_large_corpus_holds_out_about_the_target_spread_over_all_of_it() -> None:
    corpus_bytes = sum(map(len, LINES))  # 799,960
    split = HoldoutSplit(iter([LINES]), 0.5, seed=3, corpus_bytes=corpus_bytes, target_bytes=40_000)
    training = [line for batch in split.training() for line in batch]
    assert split.fraction == 40_000 / corpus_bytes
    # 5% of the bytes of non-blank lines (blank ones are 1 byte each): about 39,000; sd about 1.5%.
    assert 0.9 * 40_000 < split.heldout_bytes < 1.1 * 40_000
    positions = [LINES.index(line) for line in split.heldout]
    assert positions[0] < 5_000 and positions[-1] > 95_000  # from the whole corpus, not its start
    assert len(training) + len(split.heldout) == len(LINES)
