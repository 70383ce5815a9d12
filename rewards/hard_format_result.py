"""Vision-R1's hard formatting result reward: 1 only when the format holds and the answer is right, else 0.

"Right" means the accuracy score reaches ``correct_threshold`` (1.0: exact for every problem type; lower it to
accept near matches for ocr/free_form, whose accuracy is continuous). The answer is read from the template's
``<answer>`` block only, never from a fallback.

Vision-R1 (Osilly/Vision-R1) has not released its reward code: its README names the reward (HFRRF) and points to
EasyR1 or verl for RL on its geometry3k-shaped data. The format check (``rewards.parsing.parse_template``), the
``<answer>`` block as the answer, and the accuracy rules (``rewards.scoring``) are therefore ours, not theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.accuracy import AccuracyReward
from rewards.base import Reward, require_column
from rewards.parsing import parse_template
from rewards.templates import get_tagged_template


class HardFormatResultReward(Reward):
    name = "hard_format_result"
    columns = ("solution", "problem_type")

    def __init__(self, template: str = "think", correct_threshold: float = 1.0, accuracy: AccuracyReward | None = None):
        super().__init__()
        self.template = get_tagged_template(template).name
        self.correct_threshold = correct_threshold
        self.accuracy = accuracy or AccuracyReward()

    def score(self, completions: Sequence[str], **batch: Sequence[Any]) -> list[float]:
        solutions = require_column(batch, "solution", type(self).__name__)
        kinds = self.accuracy.problem_types(batch, len(completions))
        scores = []
        for text, sol, kind in zip(completions, solutions, kinds):
            blocks = parse_template(text, self.template)
            if blocks is None:
                self.stats["bad_format"] += 1
                scores.append(0.0)
                continue
            acc = self.accuracy.score_answer(blocks["answer"], sol, kind)
            scores.append(float(acc >= self.correct_threshold))
        return scores
