"""CombinedReward: weighted sum and components, a reward that raises on some rows scores 0 there (counted), input
errors raised, the union of the rewards' columns and judges, evaluation copies."""

import logging
from collections.abc import Sequence

import pytest

from rewards import (
    AccuracyReward,
    CaptionReward,
    CombinedReward,
    FormatReward,
    HardFormatResultReward,
    Judge,
    OracleJudge,
    Reward,
)
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


class AnswersThree(Judge):
    """A judge that answers 3 to everything."""

    def generate(self, prompts):
        return ["<answer>3</answer>"] * len(prompts)


def test_combined_weights_and_components():
    combined = CombinedReward([FormatReward("caption"), CaptionReward(judge=AnswersThree())], weights=[1.0, 0.1])
    completions = ["<info>count=3</info> <think>t</think> <answer>3</answer>", "<answer>3</answer>"]
    total, parts = combined(completions, problem=["q", "q"], solution=["3", "3"], problem_type=["numerical"] * 2)
    # row 0: format 1 + 0.1 * caption 1 = 1.1; row 1 (no caption, bad format): 0 + 0.1 * 0 = 0
    assert total.tolist() == pytest.approx([1.1, 0.0])
    assert parts["format"].tolist() == [1.0, 0.0] and parts["caption"].tolist() == [1.0, 0.0]
    assert combined.metrics()["caption/no_caption"] == 1.0


def test_combined_rejects_mismatched_weights():
    with pytest.raises(ValueError):
        CombinedReward([FormatReward()], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="unique"):
        CombinedReward([FormatReward(), FormatReward("think")])


def test_columns_are_the_union_of_the_rewards_columns_in_order():
    combined = CombinedReward([FormatReward("caption"), CaptionReward(OracleJudge()), AccuracyReward()])
    # id names a row whose reward raised; format reads none; caption reads problem, solution, problem_type;
    # accuracy adds its optional benchmark columns
    assert combined.columns == ("id", "problem", "solution", "problem_type", "choices", "precision")


def test_the_columns_are_all_a_reward_reads():
    """Scoring with only ``columns`` gives the same scores as the whole row: every column a reward reads is listed.
    The rows are chosen so that each optional column changes a score."""
    rewards = [AccuracyReward(), HardFormatResultReward("think"), CaptionReward(OracleJudge()), FormatReward("think")]
    combined = CombinedReward(rewards)
    completions = [
        "<think>t</think> <answer>A blue square</answer>",  # option B's text: right only with the choices column
        "<think>t</think> <answer>3.14</answer>",  # right only with 2 decimal places (the precision column)
        "<info>a red circle</info> <think>t</think> <answer>A</answer>",  # the oracle reads the caption: red, A
    ]
    batch = {
        "problem": ["Which shape?", "What is pi?", "What color is the circle? Options: A. red B. blue"],
        "solution": ["B", "3.14159", "A"],
        "problem_type": ["multiple_choice", "numerical", "multiple_choice"],
        "choices": [["A red circle", "A blue square"], None, None],
        "precision": [None, 2, None],
        "id": ["a", "b", "c"],
        "category": ["x", "y", "z"],
    }
    _, whole = combined(completions, **batch)
    _, listed = combined(completions, **{key: batch[key] for key in combined.columns})
    assert {k: v.tolist() for k, v in listed.items()} == {k: v.tolist() for k, v in whole.items()}
    assert whole["accuracy"].tolist() == [1.0, 1.0, 1.0] and whole["caption"].tolist() == [0.0, 0.0, 1.0]


def test_judges_are_every_rewards_judges_once():
    shared, other = OracleJudge(), AnswersThree()
    combined = CombinedReward(
        [CaptionReward(shared), FormatReward(), CaptionReward(shared), CaptionReward(other)],
        names=["caption", "format", "caption2", "caption3"],
    )
    assert combined.judges == [shared, other]
    assert CombinedReward([FormatReward()]).judges == []


def test_evaluation_copy_has_its_own_counters_and_shares_the_judges():
    judge = AnswersThree()
    train = CombinedReward([CaptionReward(judge), CrashesOnBoom()], weights=[0.1, 2.0])
    evaluation = train.evaluation_copy()
    assert evaluation.weights == [0.1, 2.0] and evaluation.names == ["caption", "crashy"]
    assert evaluation.judges == [judge] and evaluation.rewards[0] is not train.rewards[0]
    evaluation(["boom", "<info>c</info>"], problem=["q"] * 2, solution=["3"] * 2, problem_type=["numerical"] * 2)
    assert evaluation.metrics() == {
        "caption/errors": 0.0,
        "crashy/errors": 1.0,
        "caption/no_caption": 1.0,
        "caption/judged": 1.0,
    }
    assert train.metrics() == {"caption/errors": 0.0, "crashy/errors": 0.0}  # training counters untouched
