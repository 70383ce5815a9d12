"""MathVerse (testmini) scored by the rule-based part of its evaluation (ZrrSkywalker/MathVerse
``evaluation/score_answer_s2.py``; VLMEvalKit ``vlmeval/dataset/utils/mathverse.py`` ``post_check_score``).

Upstream scores in two GPT steps: ``extract_answer_s1.py`` asks GPT to extract the answer from the reply, then
``score_answer_s2.py`` asks GPT whether it is consistent with the standard answer (its only rule-based path,
``--quick_match``, is ``answer == extraction``; VLMEvalKit first accepts the two equal after stripping and only then
asks GPT). The judge's instructions: a multiple-choice answer must match completely (the letter, or the option's
content: ``B:2√3`` is wrong for ``C``, the right option's formula is right); for other questions the same meaning
counts, written differently (``0.5m`` and ``50cm``).

The rules here, in order; any one makes the answer right:
1. The answer equals the published ``answer``, both stripped (upstream's rule).
2. ``multi-choice``: the letter the answer names is the published letter (``C`` and ``(C)`` are both published). The
   letter is read from a bare mark (``C``, ``(C)``, ``C.``), a mark that starts the answer (``C:√3``, ``C. 5``), or
   ``rewards.parsing.parse_choice``, which also takes an option's text when the options are written in the question
   (``Choices:\\nA:40°\\nB:60°``; Vision-Dominant/Only questions show them in the image, so only letters count there).
3. ``free-form``: the two are equal after normalising both: ``$``, ``\\(``/``\\)``, ``\\left``/``\\right``, spacing
   commands and all whitespace removed, ``\\dfrac``/``\\tfrac`` as ``\\frac``, ``\\text{..}``/``\\mathrm{..}``
   unwrapped, degree signs dropped, lower case, a final period dropped; when only one side is an equation (``h=15``
   against ``15``), its right-hand side is compared; two plain numbers compare as numbers (``14`` and ``14.0``).

What the GPT judge adds and these rules miss: unit conversions and answers with a unit the standard answer lacks
(``14 cm`` for ``14``), algebraically equal forms (``2\\sqrt{2}`` and ``\\sqrt{8}``, ``x^2-1`` and ``(x-1)(x+1)``),
answers in words, and extraction from a sentence (we read the ``<answer>`` block, or the whole reply without one).
So this accuracy is a lower bound of the judged one; ``vlrl`` does not call a judge here.

Per-category accuracy: ``problem_version`` (Text Dominant / Text Lite / Vision Intensive / Vision Dominant / Vision
Only, or Text Only), ``subject``, and ``subfield`` (written ``subject-subfield``, as upstream prints it, since the
same subfield name occurs under several subjects). A converted row has kept only the version (its ``category``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from datamodules.benchmarks import choices_in_question, option_letter
from evaluation.rows import SingleQuestion, is_converted, require
from rewards.parsing import is_bare_number, parse_choice

FIELDS = ("problem_version", "subject", "subfield")
_LEADING_MARK = re.compile(r"\s*\(?([A-Z])\)?\s*[:.：)]")
_WRAPPER = re.compile(r"\\(?:text|mathrm|mbox|textrm)\s*\{([^{}]*)\}")
_REMOVED = (
    "$",
    "\\(",
    "\\)",
    "\\[",
    "\\]",
    "\\left",
    "\\right",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\quad",
    "~",
    "^{\\circ}",
    "^\\circ",
    "\\circ",
    "°",
)


@dataclass(frozen=True)
class MathVerseQuestion(SingleQuestion):
    id: str
    question_type: str  # multi-choice | free-form
    answer: str  # as published
    letter: str | None = None  # multi-choice: the right letter
    choices: tuple[str, ...] = ()  # option texts, when the question lists them
    categories: dict[str, Any] = field(default_factory=dict)


def question(row: Mapping[str, Any], id: str, where: str) -> MathVerseQuestion:
    """A MathVerse sample as published (``sample_index``, ``problem_version``, ``question``, ``answer``,
    ``question_type``, ``metadata``) or a converted row."""
    if is_converted(row):
        solution = str(require(row, "solution", where)).strip()
        kind = "multi-choice" if row["problem_type"] == "multiple_choice" else "free-form"
        choices = tuple(str(c) for c in row.get("choices") or ())
        categories = {"problem_version": row.get("category")}
        letter = option_letter(solution) if kind == "multi-choice" else None
        return MathVerseQuestion(id, kind, solution, letter, choices, categories)
    answer = str(require(row, "answer", where))
    kind = require(row, "question_type", where)
    letter, choices = None, ()
    if kind == "multi-choice":
        letter = option_letter(answer)
        if letter is None:
            raise ValueError(f"{where}: key 'answer' {answer!r} is not an option letter (question_type multi-choice)")
        choices = tuple(choices_in_question(str(row.get("question") or "")) or ())
    elif kind != "free-form":
        raise ValueError(f"{where}: key 'question_type' {kind!r} is not multi-choice or free-form")
    metadata = row.get("metadata") or {}
    subject, subfield = metadata.get("subject"), metadata.get("subfield")
    categories = {
        "problem_version": row.get("problem_version"),
        "subject": subject,
        "subfield": None if subfield is None else f"{subject}-{subfield}",
    }
    return MathVerseQuestion(id, kind, answer, letter, choices, categories)


def letter_of(answer: str, choices: tuple[str, ...]) -> str | None:
    """Rule 2's reading of an answer: the option letter it names, or None."""
    letter = option_letter(answer)
    if letter is None:
        mark = _LEADING_MARK.match(answer)
        letter = mark.group(1) if mark else parse_choice(answer, choices or None)
    return letter


def normalise(text: str) -> str:
    """Rule 3's normal form of a free-form answer."""
    text = _WRAPPER.sub(r"\1", text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac"))
    for old in _REMOVED:
        text = text.replace(old, "")
    return "".join(text.split()).lower().rstrip(".")


def _same_value(a: str, b: str) -> bool:
    if a == b:
        return True
    if is_bare_number(a) and is_bare_number(b):
        return float(a.replace(",", "").replace("−", "-")) == float(b.replace(",", "").replace("−", "-"))
    return False


def score(q: MathVerseQuestion, answer: str) -> tuple[bool, str | None]:
    """(right, the answer as read: the letter for multi-choice, the normal form for free-form)."""
    if q.question_type == "multi-choice":
        letter = letter_of(answer, q.choices)
        return answer.strip() == q.answer.strip() or letter == q.letter, letter
    read, truth = normalise(answer), normalise(q.answer)
    if not read:
        return answer.strip() == q.answer.strip(), read
    if ("=" in truth) != ("=" in read):
        truth, read = truth.rsplit("=", 1)[-1], read.rsplit("=", 1)[-1]
    return answer.strip() == q.answer.strip() or _same_value(read, truth), read
