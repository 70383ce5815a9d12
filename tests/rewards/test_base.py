"""The reward contract: one float per completion, column lengths checked, counters reported and reset, no judges by
default, and evaluation copies that keep their counters apart from the training reward's while sharing its judge."""

from collections.abc import Sequence

import pytest

from rewards import AccuracyReward, CaptionReward, FormatReward, HardFormatResultReward, OracleJudge
from rewards.base import Reward, RewardInputError


class Counts(Reward):
    """Scores the completion's length and counts the empty ones."""

    name = "counts"
    columns = ("solution",)

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def score(self, completions: Sequence[str], **batch) -> list[float]:
        self.stats["empty"] += sum(not c for c in completions)
        return [self.scale * len(c) for c in completions]


def test_scores_are_one_float_per_completion_and_counters_reset_when_read():
    reward = Counts(scale=0.5)
    out = reward(["abcd", "", None], solution=["x", "y", "z"])  # a non-string completion is scored as ""
    assert out.tolist() == [2.0, 0.0, 0.0]  # 0.5 x 4 characters
    assert reward.metrics() == {"counts/empty": 2.0}
    assert reward.metrics() == {}
    with pytest.raises(RewardInputError, match="column 'solution' has 1 values for 2 completions"):
        reward(["a", "b"], solution=["x"])


def test_a_reward_has_no_judges_unless_it_calls_one():
    assert Counts().judges == [] and AccuracyReward().judges == [] and FormatReward().judges == []
    judge = OracleJudge()
    assert CaptionReward(judge).judges == [judge]


def test_evaluation_copy_keeps_settings_empties_counters_and_shares_the_judge():
    reward = Counts(scale=0.5)
    reward(["", "ab"], solution=["x", "y"])
    copy = reward.evaluation_copy()
    assert type(copy) is Counts and copy.scale == 0.5 and copy.stats == {} and reward.stats == {"empty": 1}
    copy([""], solution=["x"])
    assert reward.metrics() == {"counts/empty": 1.0} and copy.metrics() == {"counts/empty": 1.0}

    judge = OracleJudge()
    caption = CaptionReward(judge, max_caption_chars=100)
    caption(["no caption"], problem=["q"], solution=["1"], problem_type=["numerical"])
    evaluation = caption.evaluation_copy()
    assert evaluation.judge is judge and evaluation.judges == [judge]  # the judge (a model, in general) is shared
    assert evaluation.max_caption_chars == 100 and evaluation.prompt == caption.prompt
    assert evaluation.stats == {} and caption.stats == {"no_caption": 1}
    # the nested accuracy rules have their own counters too: scoring on the copy leaves the original's untouched
    assert evaluation.accuracy is not caption.accuracy and evaluation.accuracy.rel_tol == caption.accuracy.rel_tol
    hard = HardFormatResultReward()
    hard.evaluation_copy()(["<think>t</think> <answer></answer>"], solution=["1"], problem_type=["numerical"])
    assert hard.stats == {} and hard.accuracy.stats == {}
