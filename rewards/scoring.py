"""Per-problem-type answer scoring: pure functions from (predicted answer, ground truth) to a score in [0, 1].

- numerical: the last number of each side, equal within ``abs_tol + rel_tol * |truth|``; ``%`` divides by 100.
- multiple_choice: option letters after normalisation (``B``, ``(B)``, ``B.``, ``B) 12 cm``, ``The answer is B``).
- math: math-verify equivalence (fractions, roots, LaTeX) with a time limit per parse/verify call.
- ocr: ANLS, case-insensitive: 1 - edit distance / longer length, with an optional threshold below which the
  score is 0 (the standard ANLS uses 0.5; Visionary-R1 used none, so the default is none).
- free_form: the mean of ROUGE-1, ROUGE-2 and ROUGE-L F1.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

from torchmetrics.functional.text import edit_distance
from torchmetrics.functional.text.rouge import rouge_score

from rewards.parsing import parse_choice, parse_number


def score_numerical(
    pred: str, truth: str, rel_tol: float = 1e-4, abs_tol: float = 1e-6, precision: int | None = None
) -> float:
    """Equal within ``abs_tol + rel_tol * |truth|``; with ``precision`` (decimal places, as MathVista states per
    question) both are rounded to that many places and compared exactly."""
    p, t = parse_number(pred), parse_number(truth)
    if p is None or t is None or not math.isfinite(p):
        return 0.0
    if precision is not None:
        return float(round(p, int(precision)) == round(t, int(precision)))
    return float(abs(p - t) <= abs_tol + rel_tol * abs(t))


def _normalise_option(text: str) -> str:
    return " ".join(text.strip().strip(".").lower().split())


def choice_from_text(pred: str, choices: Sequence[str]) -> str | None:
    """The letter of the option whose text ``pred`` is (case and spacing ignored), when exactly one matches."""
    target = _normalise_option(pred)
    hits = [i for i, option in enumerate(choices) if target and _normalise_option(str(option)) == target]
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[hits[0]] if len(hits) == 1 else None


def score_multiple_choice(pred: str, truth: str, choices: Sequence[str] | None = None) -> float:
    """Letters compared (``B``, ``(B)``, ``The answer is B`` ...); an answer that names no letter but repeats one
    option's text counts as that option's letter when ``choices`` (the option texts, in letter order) are given."""
    p, t = parse_choice(pred), parse_choice(truth)
    if t is None:  # a ground truth that names no letter: compare the option text itself
        return float(pred.strip().lower() == truth.strip().lower() and bool(truth.strip()))
    if choices:
        by_text = choice_from_text(pred, choices)
        if by_text is not None and (p is None or len(pred.strip()) > 1):
            p = by_text  # "blue" or "Blue." for option C; a lone letter stays a letter
    return float(p == t)


def score_math(pred: str, truth: str, timeout_s: int = 3) -> float:
    """math-verify equivalence. Its time limit uses SIGALRM, which only works in the main thread; elsewhere the check
    runs without a limit (answers are capped in length by the caller)."""
    from math_verify import parse, verify

    limit = timeout_s if threading.current_thread() is threading.main_thread() else None

    def wrap(s: str) -> str:
        return s if "$" in s or "\\(" in s or "\\[" in s else f"${s}$"

    try:
        gold = parse(wrap(truth), parsing_timeout=limit)
        answer = parse(wrap(pred), parsing_timeout=limit)
        if not gold or not answer:
            return 0.0
        return float(verify(gold, answer, timeout_seconds=limit))
    except Exception:  # noqa: BLE001 - math-verify raises on malformed LaTeX and timeouts; both mean "not equal"
        return 0.0


def anls(pred: str, truth: str, threshold: float | None = None) -> float:
    """Normalised Levenshtein similarity, case-insensitive; 1.0 for two empty strings."""
    p, t = pred.strip().lower(), truth.strip().lower()
    longest = max(len(p), len(t))
    if longest == 0:
        return 1.0
    if not p or not t:
        return 0.0
    dist = float(edit_distance([p], [t], reduction="none")[0])
    value = 1.0 - dist / longest
    if threshold is not None and value < threshold:
        return 0.0
    return value


def rouge_mean_f1(pred: str, truth: str) -> float:
    """Mean ROUGE-1/2/L F1. An exact (case-insensitive) match scores 1.0: ROUGE-2 of a one-word answer is 0 even
    when it is right, which would cap a correct one-word answer at 2/3."""
    if not pred.strip() or not truth.strip():
        return 0.0
    if pred.strip().lower() == truth.strip().lower():
        return 1.0
    scores = rouge_score(pred, truth, rouge_keys=("rouge1", "rouge2", "rougeL"))
    return float(sum(scores[f"{k}_fmeasure"] for k in ("rouge1", "rouge2", "rougeL")) / 3.0)
