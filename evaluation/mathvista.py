"""MathVista (testmini) scored by the rules of lupantech/MathVista ``evaluation/calculate_score.py``.

Per question, the extracted answer is normalised to the answer type and compared with the published ``answer`` (a
string) by ``==``:

- ``multi_choice``: the first ``(X)`` in the answer (any case) becomes the letter ``X``; an answer that is exactly a
  capital letter within the options picks that option; anything else picks the option with the smallest Levenshtein
  distance (the first on a tie), so a paraphrased option counts as the option it is closest to, and an empty answer
  picks the shortest option (upstream's default; its ``--ignore_empty_extractions`` flag, off by default, would make
  it wrong instead). A bare ``b`` or ``B.`` is not a letter there: it goes to the Levenshtein step like any text.
- ``integer``: ``str(int(float(x)))``, so ``12.7`` reads as ``12`` (``int`` truncates; ``-0.5`` reads as ``0``) and is
  right for the answer ``12``; text that ``float`` cannot read (``"12 cm"``, ``"1,234"``) is wrong.
- ``float``: ``str(round(float(x), precision))``: ``1.54`` at one decimal is ``"1.5"``; Python's rounding of binary
  floats applies (``round(1.45, 1) == 1.4``).
- ``list``: ``str(x)``, the answer text unchanged: ``[2014, 2016]`` is right for the published ``[2014, 2016]``, and
  ``[2014,2016]`` or ``2014, 2016`` are wrong.
A normalisation that fails gives None, which equals no answer: wrong. Python's ``float`` is the reader, as upstream:
it also accepts ``1e3``, ``1_000`` and surrounding whitespace.

Per-category accuracy covers upstream's fields: ``question_type``, ``answer_type`` and the ``metadata`` fields
``language``, ``source``, ``category``, ``task``, ``context``, ``grade``, ``skills`` (a list: the question counts
once for each skill).

Departures: upstream extracts the answer with GPT (``evaluation/extract_answer.py``) before these rules; we read the
``<answer>`` block (``evaluation.extraction``). The GPT step would turn a sentence ("The bar is 12 units tall") into
``12``; on our tagged answers it would do little (its own quick rules, taken before GPT, leave a bare number or an
option's exact text as it is, which the rules above treat the same). A converted row (``datamodules.benchmarks``)
has lost the metadata and labels of the options: its option is found through its letter, ``integer`` / ``float`` /
``list`` are read back from the problem type and precision, and only ``category`` is reported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evaluation.levenshtein import levenshtein
from evaluation.rows import SingleQuestion, is_converted, is_missing, require

FIELDS = ("question_type", "answer_type", "language", "source", "category", "task", "context", "grade", "skills")
METADATA_FIELDS = FIELDS[2:]


@dataclass(frozen=True)
class MathVistaQuestion(SingleQuestion):
    id: str
    question_type: str  # multi_choice | free_form
    answer_type: str  # text | integer | float | list
    answer: str  # for multi_choice, the option's text
    choices: tuple[str, ...] = ()
    precision: int | None = None
    categories: dict[str, Any] = field(default_factory=dict)


def question(row: Mapping[str, Any], id: str, where: str) -> MathVistaQuestion:
    """A MathVista problem as published (``pid``, ``question_type``, ``answer_type``, ``answer``, ``choices``,
    ``precision``, ``metadata``) or as converted; a ValueError naming ``where`` and the key for a row these rules
    cannot score."""
    if is_converted(row):
        return _from_converted(row, id, where)
    question_type = require(row, "question_type", where)
    answer_type = require(row, "answer_type", where)
    answer = require(row, "answer", where)
    if not isinstance(answer, str):
        raise ValueError(f"{where}: key 'answer' is {answer!r}, not a string (upstream compares strings)")
    choices: tuple[str, ...] = ()
    precision = None
    if question_type == "multi_choice":
        choices = tuple(str(choice) for choice in require(row, "choices", where))
        if answer not in choices:
            raise ValueError(f"{where}: key 'answer' {answer!r} is not one of the 'choices'")
    elif question_type == "free_form":
        if answer_type not in ("integer", "float", "list"):
            raise ValueError(
                f"{where}: key 'answer_type' {answer_type!r}: upstream scores free_form answers only as "
                "integer, float or list"
            )
        if answer_type == "float":
            precision = _precision(row.get("precision"), where)
    else:
        raise ValueError(f"{where}: key 'question_type' {question_type!r} is not multi_choice or free_form")
    metadata = row.get("metadata") or {}
    categories = {"question_type": question_type, "answer_type": answer_type}
    categories.update({key: metadata.get(key) for key in METADATA_FIELDS})
    return MathVistaQuestion(id, question_type, answer_type, answer, choices, precision, categories)


def _precision(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: answer_type float needs an integer 'precision', got {value!r}") from None


def _from_converted(row: Mapping[str, Any], id: str, where: str) -> MathVistaQuestion:
    solution = str(require(row, "solution", where))
    kind = row["problem_type"]
    categories = {"category": row.get("category")}
    if kind == "multiple_choice":
        choices = tuple(str(choice) for choice in require(row, "choices", where))
        letters = [chr(ord("A") + i) for i in range(len(choices))]
        if solution not in letters:
            raise ValueError(f"{where}: key 'solution' {solution!r} is not a letter of the {len(choices)} choices")
        return MathVistaQuestion(
            id, "multi_choice", "text", choices[letters.index(solution)], choices, categories=categories
        )
    if kind == "numerical":
        if is_missing(row.get("precision")):
            return MathVistaQuestion(id, "free_form", "integer", solution, categories=categories)
        return MathVistaQuestion(
            id, "free_form", "float", solution, precision=_precision(row["precision"], where), categories=categories
        )
    if kind == "free_form":
        return MathVistaQuestion(id, "free_form", "list", solution, categories=categories)
    raise ValueError(f"{where}: key 'problem_type' {kind!r} is not one the MathVista converter writes")


def nearest_choice(text: str, choices: tuple[str, ...]) -> str:
    """The option with the smallest Levenshtein distance to ``text``; the first of equals."""
    distances = [levenshtein(text, choice) for choice in choices]
    return choices[distances.index(min(distances))]


def normalise(extraction: str, q: MathVistaQuestion) -> str | None:
    """The extracted answer in the form upstream compares with ``q.answer``; None when it cannot be read."""
    if q.question_type == "multi_choice":
        text = extraction.strip()
        bracketed = re.findall(r"\(([a-zA-Z])\)", text)
        if bracketed:
            text = bracketed[0].upper()
        letters = [chr(ord("A") + i) for i in range(len(q.choices))]
        if text in letters:
            return q.choices[letters.index(text)]
        return nearest_choice(text, q.choices)
    try:
        if q.answer_type == "integer":
            return str(int(float(extraction)))
        if q.answer_type == "float":
            return str(round(float(extraction), q.precision))
        return str(extraction)  # list
    except (ValueError, OverflowError, TypeError):
        return None


def score(q: MathVistaQuestion, answer: str) -> tuple[bool, str | None]:
    """(right, the normalised prediction)."""
    prediction = normalise(answer, q)
    return prediction == q.answer, prediction
