"""Caption reward: alignment, rejection, failures, its judge. (Judges on real models: tests/clients, tests/rollout.)"""

import re

import pytest

from rewards import CaptionReward, Judge
from rewards.caption import REJECT_MARKER


class KeywordJudge(Judge):
    """A rule-following stand-in for a judge LLM: rejects captions with 'therefore', answers with the number
    written after 'count=' in the caption. Lets the tests check the reward's bookkeeping exactly."""

    def __init__(self, fail_on: str | None = None):
        self.calls = 0
        self.fail_on = fail_on

    def reply(self, prompt: str) -> str | None:
        caption = prompt.split("Description: ")[1].split("\n\nQuestion:")[0]
        if self.fail_on and self.fail_on in caption:
            return None
        if "therefore" in caption:
            return REJECT_MARKER
        found = re.search(r"count=(\d+)", caption)
        return f"<answer>{found.group(1) if found else 'unknown'}</answer>"

    def generate(self, prompts):
        self.calls += 1
        return [self.reply(p) for p in prompts]


def test_scores_stay_aligned_when_some_have_no_caption():
    completions = [
        "<think>x</think><answer>3</answer>",  # no caption -> 0 (and must not shift the rest)
        "<info>count=3 circles</info><think>x</think><answer>3</answer>",  # judge says 3, right -> 1
        "<info>therefore the answer is 3</info><answer>3</answer>",  # reasoning in caption -> rejected -> 0
        "<info>count=5 circles</info><answer>3</answer>",  # judge says 5, wrong -> 0
        "<info>count=2</info>",  # judge says 2, right for this row -> 1
    ]
    reward = CaptionReward(judge=KeywordJudge())
    out = reward(
        completions, problem=["How many?"] * 5, solution=["3", "3", "3", "3", "2"], problem_type=["numerical"] * 5
    )
    assert out.tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert reward.metrics() == {"caption/no_caption": 1.0, "caption/rejected": 1.0, "caption/judged": 4.0}
    assert reward.judge.calls == 1  # batched: one call for the whole batch


def test_judge_failures_score_zero_and_are_counted():
    reward = CaptionReward(judge=KeywordJudge(fail_on="flaky"))
    out = reward(
        ["<info>count=1 flaky</info>", "<info>count=1</info>"],
        problem=["q", "q"],
        solution=["1", "1"],
        problem_type=["numerical", "numerical"],
    )
    assert out.tolist() == [0.0, 1.0]
    assert reward.metrics()["caption/judge_failures"] == 1.0

    class Broken(Judge):
        def generate(self, prompts):
            raise ConnectionError("judge down")

    reward = CaptionReward(judge=Broken())
    out = reward(
        ["<info>a</info>", "<info>b</info>"], problem=["q", "q"], solution=["1", "1"], problem_type=["ocr"] * 2
    )
    assert out.tolist() == [0.0, 0.0]
    assert reward.metrics()["caption/judge_failures"] == 2.0


class ScriptedJudge(Judge):
    """Replies with the given strings in order, and records the prompts it saw."""

    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def generate(self, prompts):
        self.prompts.extend(prompts)
        return self.replies[: len(prompts)]


def test_published_row_judged_answer_scored_as_text():
    # Visionary-R1's README row: solution "<answer> Yes </answer>" under problem_type "numerical". The judge's answer
    # is compared as text (case and a final period aside); it used to score 0 whatever the judge said.
    judge = ScriptedJudge(["<answer>Yes</answer>", "<answer>yes.</answer>", "<answer>No</answer>"])
    reward = CaptionReward(judge=judge)
    out = reward(
        ["<info>a chart</info>"] * 3,
        problem=["Is the value of Favorable 38 in 2015?"] * 3,
        solution=["<answer> Yes </answer>"] * 3,
        problem_type=["numerical"] * 3,
    )
    assert out.tolist() == [1.0, 1.0, 0.0]


def test_rejection_is_the_whole_reply():
    replies = [REJECT_MARKER, f"  {REJECT_MARKER}.\n", f"Not {REJECT_MARKER}: the answer is <answer>3</answer>"]
    reward = CaptionReward(judge=ScriptedJudge(replies))
    out = reward(["<info>three dots</info>"] * 3, problem=["q"] * 3, solution=["3"] * 3, problem_type=["numerical"] * 3)
    # the first two are rejections (0); the marker inside a longer reply is not, and its answer 3 is right (1)
    assert out.tolist() == [0.0, 0.0, 1.0]
    assert reward.metrics() == {"caption/rejected": 2.0, "caption/judged": 3.0}


def test_multi_line_caption_is_judged():
    # the released code looked for <info> without DOTALL, so a caption over two lines counted as no caption
    judge = ScriptedJudge(["<answer>2</answer>"])
    reward = CaptionReward(judge=judge)
    out = reward(["<info>two dots,\none red</info>"], problem=["How many?"], solution=["2"], problem_type=["numerical"])
    assert out.tolist() == [1.0]
    assert "two dots,\none red" in judge.prompts[0]


def test_the_judge_is_the_rewards_only_judge_and_the_prompt_needs_its_fields():
    judge = KeywordJudge()
    assert CaptionReward(judge=judge).judges == [judge]
    with pytest.raises(ValueError, match="caption"):
        CaptionReward(judge=judge, prompt="Question: {problem}")
