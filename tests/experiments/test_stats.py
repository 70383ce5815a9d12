"""Bootstrap intervals over seeds and rows: values worked by hand."""

import pytest

from experiments.stats import bootstrap_ci, paired_differences


def test_constant_rows_have_a_point_interval():
    assert bootstrap_ci([[1.0] * 5, [1.0] * 7]) == (1.0, 1.0, 1.0)


def test_one_seed_of_half_right_rows_gives_the_binomial_interval():
    # 100 rows, 50 right: the row bootstrap's standard error is sqrt(0.25 / 100) = 0.05, so the 95% interval is
    # about 0.5 +- 0.098
    mean, low, high = bootstrap_ci([[1.0] * 50 + [0.0] * 50], draws=4000)
    assert mean == 0.5
    assert 0.39 <= low <= 0.42 and 0.58 <= high <= 0.61


def test_seeds_that_disagree_widen_the_interval_to_their_range():
    # two seeds, all right and all wrong: a draw picks the same seed twice half the time, so both ends are reached
    mean, low, high = bootstrap_ci([[1.0] * 20, [0.0] * 20])
    assert (mean, low, high) == (0.5, 0.0, 1.0)


def test_paired_differences_use_the_rows_both_arms_scored():
    a = [{"r1": 1.0, "r2": 0.0, "r3": 1.0}, {"r1": 0.0}]
    b = [{"r1": 0.0, "r2": 0.0}, {"r1": 1.0, "r9": 1.0}]
    assert paired_differences(a, b) == [[1.0, 0.0], [-1.0]]
    with pytest.raises(ValueError, match="1 and 2 seeds"):
        paired_differences(a[:1], b)
    with pytest.raises(ValueError, match="no rows"):
        bootstrap_ci([[], []])
