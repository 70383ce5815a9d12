"""CombinedReward: a reward that raises on some rows scores 0 there, counted; input errors are raised."""

import logging
from collections.abc import Sequence

import pytest

from rewards import AccuracyReward, CombinedReward, FormatReward, Reward
from rewards.base import MissingColumnError, RewardInputError


class CrashesOnBoom(Reward):
    """A user reward with a bug: raises on any completion containing 'boom', else scores 0.5."""

    name = "crashy"

    def score(self, completions: Sequence[str], **batch) -> list[float]:
        return [1 / 0 if "boom" in c else 0.5 for c in completions]


def test_a_reward_that_raises_scores_zero_on_those_rows_only(caplog):
    combined = CombinedReward([FormatReward("caption"), CrashesOnBoom()], weights=[1.0, 2.0])
    completions = ["<info>c</info> <think>t</think> <answer>1</answer>", "boom", "fine", "boom boom"]
    with caplog.at_level(logging.WARNING):
        total, parts = combined(completions, id=["a", "b", "c", "d"])
    assert parts["crashy"].tolist() == [0.5, 0.0, 0.5, 0.0]
    assert parts["format"].tolist() == [1.0, 0.0, 0.0, 0.0]  # the other rewards are unaffected
    assert total.tolist() == pytest.approx([2.0, 0.0, 1.0, 0.0])
    assert combined.metrics()["crashy/errors"] == 2.0
    assert combined.metrics()["crashy/errors"] == 0.0  # counters reset after each read
    warnings = [r.getMessage() for r in caplog.records if "crashy" in r.getMessage()]
    assert len(warnings) == 1 and "row index 1 (id b)" in warnings[0] and "ZeroDivisionError" in warnings[0]


def test_input_errors_are_raised_not_scored():
    combined = CombinedReward([AccuracyReward()])
    with pytest.raises(MissingColumnError, match="solution"):
        combined(["<answer>1</answer>"], problem_type=["numerical"])
    with pytest.raises(RewardInputError, match="unknown problem_type 'poetry'"):
        combined(["<answer>1</answer>"], solution=["1"], problem_type=["poetry"])
    with pytest.raises(RewardInputError, match="2 values for 1 completions"):
        combined(["<answer>1</answer>"], solution=["1", "2"], problem_type=["numerical"])
