"""Per-problem-type answer scoring: pure functions from (predicted answer, ground truth) to a score in [0, 1].

- numerical: a ground truth holding exactly one number is compared with the answer's last number, equal within
  ``abs_tol + rel_tol * |truth|``; a ``%`` on one side only accepts either reading (``38%`` for ``38``, ``50%`` for
  ``0.5``). Any other ground truth (``Yes``, ``1:30``) is compared as text (case, spacing and a final period
  ignored), as Visionary-R1 compares a solution that is not a number.
- multiple_choice: option letters after normalisation (``B``, ``(B)``, ``B.``, ``B) 12 cm``, ``The answer is B``;
  with the option texts, an option's text); a ground truth that names no letter is compared as a number when it is
  a bare number, else as text.
- math: math-verify equivalence (fractions, roots, LaTeX) with a time limit per parse/verify call.
- ocr: a ground truth that is a bare number (``38``, ``1,234``) is scored as numerical, as Visionary-R1 does;
  otherwise ANLS, case-insensitive: 1 - edit distance / longer length, with an optional threshold below which the
  score is 0 (the standard ANLS uses 0.5; Visionary-R1 used none, so the default is none).
- free_form: the mean of ROUGE-1, ROUGE-2 and ROUGE-L F1 (an exact match scores 1).

An empty ground truth scores 0 everywhere (the caller counts it): it would otherwise reward an empty answer.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence

from torchmetrics.functional.text import edit_distance
from torchmetrics.functional.text.rouge import rouge_score

from rewards.parsing import choice_from_text, is_bare_number, parse_choice, parse_numbers

__all__ = [
    "anls",
    "choice_from_text",
    "rouge_mean_f1",
    "same_text",
    "score_math",
    "score_multiple_choice",
    "score_numerical",
    "score_ocr",
]


def same_text(pred: str, truth: str) -> float:
    """1.0 when both say the same thing up to case, runs of whitespace and a final period (``"Yes."`` is ``"yes"``);
    an empty ground truth matches nothing."""
    a, b = (" ".join(x.strip().rstrip(".").lower().split()) for x in (pred, truth))
    return float(bool(b) and a == b)


def _close(a: float, b: float, rel_tol: float, abs_tol: float, precision: int | None) -> bool:
    """Equal after rounding to ``precision`` places, or within ``abs_tol + rel_tol * |b|``. Two integers compare
    exactly: a relative tolerance would count 10001 for 10000 (upstream compares numbers with ``==``)."""
    if precision is not None:
        return round(a, precision) == round(b, precision)
    if float(a).is_integer() and float(b).is_integer():
        return a == b
    return abs(a - b) <= abs_tol + rel_tol * abs(b)


def score_numerical(
    pred: str, truth: str, rel_tol: float = 1e-4, abs_tol: float = 1e-6, precision: int | None = None
) -> float:
    """A ground truth with exactly one number: the answer's last number equals it within ``abs_tol + rel_tol *
    |truth|``, or, with ``precision`` (decimal places, as MathVista states per question), once both are rounded to
    that many places. A ``%`` on one side only accepts either reading: ``38%`` for ``38`` (a chart's percentage
    written without the sign) and ``50%`` for ``0.5``. A ground truth with no number or several (``Yes``, ``1:30``)
    is compared as text (``same_text``)."""
    truths = parse_numbers(truth)
    if len(truths) != 1:
        return same_text(pred, truth)
    preds = parse_numbers(pred)
    if not preds:
        return 0.0
    (p, p_pct), (t, t_pct) = preds[-1], truths[0]
    if not math.isfinite(t):  # "9" * 400 overflows: every finite answer would be "within tolerance" of inf
        return same_text(pred, truth)
    if not math.isfinite(p):
        return 0.0
    digits = None if precision is None else int(precision)
    readings = [(p, t)]  # as written; with a % on both sides this is the same as dividing both by 100
    if p_pct != t_pct:
        readings.append((p / 100.0 if p_pct else p, t / 100.0 if t_pct else t))
    return float(any(_close(a, b, rel_tol, abs_tol, digits) for a, b in readings))


def score_multiple_choice(pred: str, truth: str, choices: Sequence[str] | None = None) -> float:
    """Letters compared (``B``, ``(B)``, ``The answer is B`` ...; see ``parse_choice``). With ``choices`` (the option
    texts in letter order) an answer, or a ground truth, that is one option's text counts as that option's letter.
    A ground truth that names no letter is compared as a number when it is a bare number (``3`` for ``3.0``, as
    Visionary-R1 does for any type but ocr and free-form), else as text (``same_text``)."""
    t = parse_choice(truth, choices or None)
    if t is None:
        return score_numerical(pred, truth) if is_bare_number(truth) else same_text(pred, truth)
    return float(parse_choice(pred, choices or None) == t)


def score_ocr(
    pred: str, truth: str, threshold: float | None = None, rel_tol: float = 1e-4, abs_tol: float = 1e-6
) -> float:
    """A bare-number ground truth (``38``, ``1,234``): numerical, so a wrong number earns nothing (ANLS would give
    ``39`` for ``38`` 0.5). Anything else: ``anls``."""
    if is_bare_number(truth):
        return score_numerical(pred, truth, rel_tol, abs_tol)
    return anls(pred, truth, threshold)


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
    """Normalised Levenshtein similarity, case-insensitive, ends stripped; 0.0 when either side is empty."""
    p, t = pred.strip().lower(), truth.strip().lower()
    if not p or not t:
        return 0.0
    longest = max(len(p), len(t))
    dist = float(edit_distance([p], [t], reduction="none")[0])
    value = 1.0 - dist / longest
    if threshold is not None and value < threshold:
        return 0.0
    return value


def _rouge_tokens(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()  # the ROUGE tokenizer's view of a text


def rouge_mean_f1(pred: str, truth: str) -> float:
    """Mean ROUGE-1/2/L F1, no stemming. The same text (``same_text``) or the same ROUGE tokens (case and punctuation
    aside) score 1.0: ROUGE-2 of a one-word answer is 0 even when it is right, which would cap it at 2/3. ROUGE
    keeps only ``[a-z0-9]`` tokens, so other scripts score 0 unless the text matches exactly."""
    if same_text(pred, truth):
        return 1.0
    p, t = _rouge_tokens(pred), _rouge_tokens(truth)
    if not p or not t:
        return 0.0
    if p == t:
        return 1.0
    scores = rouge_score(pred, truth, rouge_keys=("rouge1", "rouge2", "rougeL"))
    return float(sum(scores[f"{k}_fmeasure"] for k in ("rouge1", "rouge2", "rougeL")) / 3.0)
