"""Accuracy reward: the answer a completion commits to, scored against the row's solution by the row's problem type.

Departures from the released Visionary-R1 code: the problem type is read per sample (that code applied the first
row's type to the whole batch); multi-line answers are accepted; the solution may be plain or wrapped in
``<answer>`` tags; answers longer than ``max_answer_chars`` score 0 (edit distance and ROUGE are quadratic or worse,
and no real answer is that long).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.base import MissingColumnError, Reward, require_column
from rewards.parsing import extract_answer, strip_answer_tags
from rewards.problem_types import canonical_problem_type
from rewards.scoring import anls, rouge_mean_f1, score_math, score_multiple_choice, score_numerical


class AccuracyReward(Reward):
    """Score in [0, 1] per completion: 1/0 for numerical, multiple_choice and math; ANLS for ocr; ROUGE for free_form.

    Args:
        answer_fallbacks: where to look when there is no ``<answer>`` block: ``"boxed"`` and/or ``"text"``, in
            order. ``[]`` means a completion without ``<answer>`` tags scores 0.
        rel_tol, abs_tol: numerical equality tolerance, ``|pred - truth| <= abs_tol + rel_tol * |truth|``.
        anls_threshold: ANLS below this scores 0 (None: no threshold, as in Visionary-R1).
        math_timeout_s: math-verify's time limit per parse/verify call (whole seconds).
        max_answer_chars: longer answers score 0.
        default_problem_type: used when the batch has no ``problem_type`` column.
    """

    name = "accuracy"
    columns = ("solution", "problem_type")

    def __init__(
        self,
        answer_fallbacks: Sequence[str] = ("boxed", "text"),
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

    def score_answer(self, answer: str | None, solution: str, problem_type: str, choices: Sequence[str] | None = None,
                     precision: int | None = None) -> float:  # fmt: skip
        """Score an already-extracted answer (shared with the caption judge and the hard format-result reward)."""
        if answer is None:
            self.stats["no_answer"] += 1
            return 0.0
        if len(answer) > self.max_answer_chars:
            self.stats["answer_too_long"] += 1
            return 0.0
        truth = strip_answer_tags(str(solution))
        kind = canonical_problem_type(problem_type)
        if kind == "numerical":
            return score_numerical(answer, truth, self.rel_tol, self.abs_tol, _precision(precision))
        if kind == "multiple_choice":
            return score_multiple_choice(answer, truth, choices or None)
        if kind == "math":
            return score_math(answer, truth, self.math_timeout_s)
        if kind == "ocr":
            return anls(answer, truth, self.anls_threshold)
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


def _precision(value: Any) -> int | None:
    """A stated precision (decimal places) from a data column: None, NaN or empty mean "use the tolerances"."""
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return None
    return int(float(value))
