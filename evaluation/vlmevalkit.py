"""MMBench (CircularEval) and MMStar scored by VLMEvalKit's rules (open-compass/VLMEvalKit
``vlmeval/utils/matching_util.py`` ``can_infer``, ``vlmeval/dataset/utils/multiple_choice.py``, ``vlmeval/dataset/
image_mcq.py`` ``evaluate_heuristic``), with its ``exact_matching`` policy: no judge model.

The options are the columns ``A`` ... ``Z`` that hold a value. VLMEvalKit reads the TSV with ``pandas.read_csv``, so a
cell that is empty or one of pandas' missing-value words (``NA``, ``None``, ``null``, ``nan`` ...) is no option.
The letter a reply names (``can_infer``):

1. A reply containing ``Failed to obtain answer via API`` names nothing; one containing a refusal phrase
   (``Cannot determine the answer`` ...) names ``Z``.
2. Punctuation ``.()[],:;!*#{}`` becomes spaces and the reply is split into words. When exactly one option letter is
   a word, that letter counts if its first occurrence is among the last four words (``"B"``, ``"(B) red"``,
   ``"The answer is B."``; but not ``"B is wrong because ... long reasoning"``). With no letter word, a word ``Z``
   names ``Z``.
3. ``answer is X`` / ``correct answer is **X**`` (any case, X in A-D and an option) names X.
4. Otherwise an option whose text (lower-cased) occurs in the lower-cased reply names that option when it is the only
   such option and the reply is at most twice as long as all option texts together.
A reply that names nothing counts as ``Z``: wrong. A question is right when the named letter is its ``answer``.

MMBench's TSVs hold each question several times with the options rotated; the copies share ``index`` modulo
1,000,000. Under CircularEval a question is right only when every copy is; ``count`` is the number of questions
(groups), and ``row_accuracy`` (each copy on its own, VLMEvalKit's ``PRINT_VANILLA`` "vanilla all") is reported
beside it. Per-category results use ``category`` and ``l2-category`` (MMBench's ``split`` column is not a field here:
a file is one split). MMStar (and plain ``vlmevalkit``) score each row on its own, as VLMEvalKit does for a dataset
whose name is not circular.

Departures: the reply read is the ``<answer>`` block (whole reply without one), not the whole reply; with a judge
model VLMEvalKit would ask GPT to match a reply that names no letter (step 4 failing) to an option, which we count
wrong, as ``exact_matching`` does. VLMEvalKit scores only the copies present in its prediction file (a group without
its main copy is not scored at all); we score every question of the benchmark file, and a question with a copy that
has no prediction is wrong (and counted in ``missing``). ``can_infer``'s extra check under the ``VERBOSE``
environment variable (an ``A`` in a reply of more than three words is read as an article) is not applied.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evaluation.rows import is_converted, require

FIELDS = ("category", "l2-category")
CIRCULAR_OFFSET = 1_000_000

# pandas.read_csv's default missing-value strings: such a cell is NaN in VLMEvalKit, so not an option
PANDAS_NA = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
API_FAILURE = "Failed to obtain answer via API"
_PUNCTUATION = str.maketrans({c: " " for c in ".()[],:;!*#{}"})
_ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


@dataclass(frozen=True)
class ChoiceQuestion:
    id: str
    group: str  # the question this row counts towards: its own id, or under CircularEval index % 1,000,000
    answer: str  # the right letter
    options: dict[str, str]  # letter -> text
    categories: dict[str, Any] = field(default_factory=dict)

    @property
    def truth(self) -> str:
        return self.answer


def _is_na(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value) in PANDAS_NA


def question(row: Mapping[str, Any], id: str, where: str, circular: bool = False) -> ChoiceQuestion:
    """A row of a VLMEvalKit TSV (``index``, ``question``, ``A`` ... , ``answer``, ``category``, ``l2-category``) or a
    converted row. ``circular``: group the copies of a question by ``index`` modulo 1,000,000 (MMBench)."""
    group = id
    if circular:
        try:
            group = str(int(str(id).strip()) % CIRCULAR_OFFSET)
        except ValueError:
            raise ValueError(f"{where}: key 'index' {id!r} is not an integer (CircularEval groups by it)") from None
    if is_converted(row):
        choices = row.get("choices") or []
        options = {string.ascii_uppercase[i]: str(text) for i, text in enumerate(choices)}
        categories = {"category": row.get("category")}
        return ChoiceQuestion(id, group, str(require(row, "solution", where)).strip(), options, categories)
    options = {c: str(row[c]) for c in string.ascii_uppercase if c in row and not _is_na(row[c])}
    answer = row.get("answer")
    if _is_na(answer):
        raise ValueError(f"{where}: no value for key 'answer'")
    categories = {key: None if _is_na(row.get(key)) else str(row[key]) for key in FIELDS}
    return ChoiceQuestion(id, group, str(answer).strip(), options, categories)


def letter_named(reply: str, options: Mapping[str, str]) -> str | None:
    """Steps 1-3 of the module docstring (VLMEvalKit's ``can_infer_option``): the letter, ``Z``, or None."""
    if API_FAILURE in reply:
        return None
    if any(refusal in reply for refusal in REFUSALS):
        return "Z"
    words = reply.translate(_PUNCTUATION).split()
    named = [letter for letter in options if letter in words]
    if len(named) == 1:
        if words.index(named[0]) > len(words) - 5:
            return named[0]
    elif not named and "Z" in words:
        return "Z"
    match = _ANSWER_IS.search(reply)
    if match and match.group(1).upper() in options:
        return match.group(1).upper()
    return None


def option_by_text(reply: str, options: Mapping[str, str]) -> str | None:
    """Step 4 (VLMEvalKit's ``can_infer_text``): the one option whose text the reply contains, case aside."""
    lowered = reply.lower()
    if len(lowered) > 2 * sum(len(text) for text in options.values()):
        return None
    hits = [letter for letter, text in options.items() if text.lower() in lowered]
    return hits[0] if len(hits) == 1 else None


def infer_option(reply: str, options: Mapping[str, str]) -> str:
    """The letter VLMEvalKit reads from ``reply`` under exact matching; ``Z`` when it reads none."""
    return letter_named(reply, options) or option_by_text(reply, options) or "Z"


def score(q: ChoiceQuestion, answer: str) -> tuple[bool, str]:
    """(this row right, the letter read)."""
    letter = infer_option(answer, q.options)
    return letter == q.answer, letter
