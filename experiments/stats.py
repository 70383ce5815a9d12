"""Bootstrap confidence intervals over seeds and held-out rows, for the shortcut study. Pure functions.

A run's held-out score is a mean over rows, and runs differ by seed (the model's initialisation, its data order and
its held-out rows). A hierarchical bootstrap resamples both: each draw picks seeds with replacement, then rows with
replacement within each picked seed, and takes the mean over the picked rows. The 2.5th and 97.5th percentiles of
the draws are the 95% interval. With 3 seeds the seed level is coarse, so the interval is wide when seeds disagree,
which is the honest reading.

A difference between two arms is paired: both arms are scored on the same rows of the same seed, so each draw
resamples (seed, row) pairs once and averages the per-row differences.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence


def _resampled_mean(per_seed: Sequence[Sequence[float]], rng: random.Random) -> float:
    total, count = 0.0, 0
    for _ in per_seed:
        rows = per_seed[rng.randrange(len(per_seed))]
        for _ in rows:
            total += rows[rng.randrange(len(rows))]
        count += len(rows)
    return total / count


def bootstrap_ci(
    per_seed: Sequence[Sequence[float]], draws: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean over every row of every seed, and its hierarchical bootstrap interval."""
    per_seed = [list(rows) for rows in per_seed if len(rows)]
    if not per_seed:
        raise ValueError("no rows to bootstrap")
    rng = random.Random(seed)
    means = sorted(_resampled_mean(per_seed, rng) for _ in range(draws))
    k = int((1.0 - level) / 2 * draws)  # as many draws below the low end as above the high end
    low, high = means[k], means[draws - 1 - k]
    return statistics.fmean(v for rows in per_seed for v in rows), low, high


def paired_differences(a: Sequence[dict[str, float]], b: Sequence[dict[str, float]]) -> list[list[float]]:
    """Per seed, ``a[id] - b[id]`` over the row ids both arms scored (``a`` and ``b``: one {id: score} per seed)."""
    if len(a) != len(b):
        raise ValueError(f"arms have {len(a)} and {len(b)} seeds")
    return [[left[i] - right[i] for i in sorted(left.keys() & right.keys())] for left, right in zip(a, b)]
