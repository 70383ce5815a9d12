"""Accuracy reward: the answer a completion commits to, scored against the row's solution by the row's problem type.

The answer is the completion's ``<answer>`` block, as in Visionary-R1; a completion without one scores 0 (a
truncated or untagged completion earns nothing). ``answer_fallbacks`` can also read ``\\boxed{}`` or the whole
text, for evaluating models that were not trained on the tag template; never set them for training.

Where this departs from Visionary-R1's released ``accuracy_reward`` (``src/open_r1/grpo_vllm_caption.py``), and
why, is listed in docs/recipes.md ("Departures from the published code"). In short: the problem type is read per sample
(that code applied the first row's type to the whole batch); the last ``<answer>`` block counts (that code took
the first); a solution without ``<answer>`` tags is used as written (that code read it as an empty string, which
an answerless completion then matched); numbers are compared by the answer's last number within a tolerance (that
code took the first number and tested exact float equality); answers longer than ``max_answer_chars`` score 0
(edit distance and ROUGE are quadratic or worse, and no real answer is that long).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rewards.base import MissingColumnError, Reward, require_column
from rewards.parsing import extract_answer, strip_answer_tags
from rewards.problem_types import canonical_problem_type
from rewards.scoring import rouge_mean_f1, score_math, score_multiple_choice, score_numerical, score_ocr


class AccuracyReward(Reward):
    """Score in [0, 1] per completion: 1/0 for numerical, multiple_choice and math; ANLS for ocr (1/0 when the
    solution is a bare number); ROUGE for free_form. See ``rewards.scoring`` for each rule.

    Args:
        answer_fallbacks: where to look when there is no ``<answer>`` block: ``"boxed"`` and/or ``"text"``, in
            order. Default ``()``: a completion without ``<answer>`` tags scores 0, as in Visionary-R1. Set them
            only to evaluate a model that was not trained on the tag template (``template: plain``).
        rel_tol, abs_tol: numerical equality tolerance, ``|pred - truth| <= abs_tol + rel_tol * |truth|``.
        anls_threshold: ANLS below this scores 0 (None: no threshold, as in Visionary-R1).
        math_timeout_s: math-verify's time limit per parse/verify call (whole seconds).
        max_answer_chars: longer answers score 0.
        default_problem_type: used when the batch has no ``problem_type`` column.
    """

    name = "accuracy"
    columns = ("solution", "problem_type", "choices", "precision")  # the last two optional (benchmark rows)

    def __init__(
        self,
        answer_fallbacks: Sequence[str] = (),
        rel_tol: float = 1e-4,
        abs_tol: float = 1e-6,
        anls_threshold: float | None = None,
        math_timeout_s: int = 3,
        max_answer_chars: int = 4096,
        default_problem_type: str | None = None,
    ) -> None:
        super().__init__()
        for fallback in answer_fallbacks:
            if fallback not in ("boxed", "text"):
                raise ValueError(f"unknown answer fallback {fallback!r}; use 'boxed' or 'text'")
        self.answer_fallbacks = tuple(answer_fallbacks)
        self.rel_tol, self.abs_tol = rel_tol, abs_tol
        self.anls_threshold = anls_threshold
        self.math_timeout_s = math_timeout_s
        self.max_answer_chars = max_answer_chars
        self.default_problem_type = canonical_problem_type(default_problem_type) if default_problem_type else None

    def score_answer(
        self,
        answer: str | None,
        solution: str,
        problem_type: str,
        choices: Sequence[str] | None = None,
        precision: int | None = None,
    ) -> float:
        """Score an already-extracted answer (shared with the caption judge and the hard format-result reward)."""
        if answer is None:
            self.stats["no_answer"] += 1
            return 0.0
        if len(answer) > self.max_answer_chars:
            self.stats["answer_too_long"] += 1
            return 0.0
        truth = strip_answer_tags(str(solution))
        kind = canonical_problem_type(problem_type)
        if not truth:  # a data problem, not the model's: it would otherwise reward an empty answer
            self.stats["empty_solution"] += 1
            return 0.0
        if kind == "numerical":
            return score_numerical(answer, truth, self.rel_tol, self.abs_tol, _precision(precision))
        if kind == "multiple_choice":
            return score_multiple_choice(answer, truth, choices or None)
        if kind == "math":
            return score_math(answer, truth, self.math_timeout_s)
        if kind == "ocr":
            return score_ocr(answer, truth, self.anls_threshold, self.rel_tol, self.abs_tol)
        return rouge_mean_f1(answer, truth)

    def problem_types(self, batch: dict[str, Any], n: int) -> Sequence[str]:
        if batch.get("problem_type") is not None:
            return batch["problem_type"]
        if self.default_problem_type is None:
            raise MissingColumnError(f"{type(self).__name__} needs a 'problem_type' column or default_problem_type")
        return [self.default_problem_type] * n

    def score(self, completions: Sequence[str], **batch: Sequence[Any]) -> list[float]:
        solutions = require_column(batch, "solution", type(self).__name__)
        kinds = self.problem_types(batch, len(completions))
        n = len(completions)
        choices = batch.get("choices") or [None] * n  # optional benchmark columns
        precisions = batch.get("precision") or [None] * n
        return [
            self.score_answer(extract_answer(text, self.answer_fallbacks), sol, kind, opts, prec)
            for text, sol, kind, opts, prec in zip(completions, solutions, kinds, choices, precisions)
        ]


def solution_error(solution: Any) -> str | None:
    """Why ``AccuracyReward`` could never give credit against ``solution`` (one line), or None when it can: no
    solution (None, NaN), one that is neither text nor a number, one whose ``<answer>`` tags ``strip_answer_tags``
    cannot take off (unbalanced), or one that is empty once they are off (``score_answer`` scores 0 for every answer
    then, counted as ``empty_solution``). The data scan (``datamodules.scan``) asks this of every row before
    training. Math solutions are not parsed with math-verify here: a millisecond or more each, minutes over 100k
    rows, and it turns almost any non-empty text into something."""
    if solution is None or (isinstance(solution, float) and math.isnan(solution)):
        return "no solution"
    if not isinstance(solution, (str, int, float)):
        return f"the solution is a {type(solution).__name__}, not text or a number: {str(solution)[:80]!r}"
    truth = strip_answer_tags(str(solution))
    if "<answer>" in truth.lower() or "</answer>" in truth.lower():
        return f"unbalanced <answer> tags in the solution {str(solution)[:80]!r}"
    if not truth:
        return f"empty solution {solution!r}"
    return None


def _precision(value: Any) -> int | None:
    """A stated precision (decimal places) from a data column: None, NaN or empty mean "use the tolerances"."""
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return None
    return int(float(value))
