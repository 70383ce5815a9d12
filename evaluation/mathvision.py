"""MathVision scored by the rules of mathllm/MATH-V ``evaluation/evaluate.py`` and ``evaluation/utils.py``.

Reading the reply (``model_answer``), in upstream's order:
1. A reply that ends with `` C.`` or `` (C).``, or starts with ``C\\n``, ``(C)\\n`` or ``(C) C\\n`` (C in A-E) becomes
   ``C``.
2. When the text after the last ``is `` (a trailing period dropped) is a number to Python's ``float``, it becomes
   the reply.
3. Without ``oxed{`` in it, the reply is cut after each of ``the final answer is``, ``the answer is``, ``the correct
   answer is``, ``the answer should be`` (then the same with ``The``), keeping the first line and the first
   sentence of what follows; with several ``\\boxed{`` only the last is kept.
4. ``find_math_answer``: lower case; the content of ``\\boxed{...}`` (greedy, to the last ``}``); the text after the
   last ``=`` and ``\\approx``; spaces, ``\\text``, ``\\left``/``\\right``, degrees, ``$``, ``\\%`` and some units
   (``m^3``, ``km``, ``units``) removed; ``0.5`` becomes ``\\frac{1}{2}`` and ``a/b`` (integers) ``\\frac{a}{b}``
   (``_strip_string``). Then ``(a)`` ... ``(e)`` and ``{a}`` ... ``{e}`` lose their brackets and a final ``.`` and a
   leading ``:`` go.

Comparing (``is_equal``), the reply against the answer and, for a question with options, against the text of the
right option: both lower-cased; an empty side is wrong; equal text is right; tuples and lists ``(a, b)`` are
compared element by element after evaluating each element to 2 decimals; otherwise both sides are evaluated as
LaTeX and are equal when they agree to 2 decimal places (``1/2`` and ``0.5``, ``\\frac{\\sqrt{3}}{2}`` and
``0.866``). So a multiple-choice question is right for its letter (``B``, ``(B)``, ``b``) or for its option's text.
The value of a LaTeX text is by default the one upstream finds (``evaluation.latex``: its parser reads
``3\\frac{1}{2}`` as 3 * 1/2 = 1.5 and gives no value to text with a character outside ASCII, such as ``−3`` with
U+2212), so ``3\\frac{1}{2}`` is wrong for ``7/2`` and right for ``1.5``, as in MATH-V's own scores.
``lenient=True`` (``vlrl score --lenient``) reads the mathematical value instead (``3\\frac{1}{2}`` = 7/2, ``−3`` =
-3): closer to what the model meant, no longer the published metric.

Per-category accuracy: ``subject`` and ``level`` (upstream also reports their combinations).

Departures: the reply read is the ``<answer>`` block (whole reply without one), then the steps above. Upstream parses
LaTeX with ``latex2sympy2`` and runs the printed expression through Python's ``eval`` (in the namespace of ``math``);
we parse with ``latex2sympy2_extended`` and compute the printed expression with an ``ast`` walk over arithmetic and
``math``'s names, never ``eval``. The two parsers differ in more than the cases ``evaluation.latex`` brings into
line (its docstring lists those known to remain), so an unusual answer can still be judged differently. Each
evaluation is limited to a few seconds (in the main thread). A converted row has lost ``level`` (its ``category``
is the subject).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evaluation.latex import latex_value
from evaluation.rows import SingleQuestion, is_converted, require

FIELDS = ("subject", "level")
ANSWER_FLAGS = ("the final answer is", "the answer is", "the correct answer is", "the answer should be")


@dataclass(frozen=True)
class MathVisionQuestion(SingleQuestion):
    id: str
    answer: str  # a letter when there are options
    options: tuple[str, ...] = ()
    categories: dict[str, Any] = field(default_factory=dict)

    @property
    def answer_value(self) -> str:
        """The right option's text; ``""`` without options (``is_equal`` then never matches it)."""
        return self.options[ord(self.answer) - ord("A")] if self.options else ""


def question(row: Mapping[str, Any], id: str, where: str) -> MathVisionQuestion:
    """A MathVision record as published (``id``, ``question``, ``options``, ``answer``, ``subject``, ``level``) or a
    converted row."""
    if is_converted(row):
        answer, options = str(require(row, "solution", where)), tuple(str(o) for o in row.get("choices") or ())
        categories = {"subject": row.get("category")}
    else:
        answer = str(require(row, "answer", where))
        if "options" not in row:
            raise ValueError(f"{where}: no key 'options' (a list, empty for a free answer)")
        options = tuple(str(o) for o in row["options"] or ())
        categories = {"subject": row.get("subject"), "level": row.get("level")}
    if options and not (len(answer) == 1 and 0 <= ord(answer) - ord("A") < len(options)):
        raise ValueError(f"{where}: key 'answer' {answer!r} is not the letter of one of the {len(options)} options")
    return MathVisionQuestion(id, answer, options, categories)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def model_answer(reply: str) -> str:
    """Steps 1-4 of the module docstring: the answer upstream reads from a reply."""
    text = reply.strip()
    for c in "ABCDE":
        if text.endswith((f" {c}.", f" ({c}).")) or text.startswith((f"{c}\n", f"({c})\n", f"({c}) {c}\n")):
            text = c
    tail = text.split("is ")[-1].rstrip(".")
    if _is_number(tail):
        text = tail
    if "oxed{" not in text:
        for flag in ANSWER_FLAGS:
            for phrase in (flag, flag.replace("the", "The")):
                found = phrase in text
                text = text.split(phrase)[-1].strip()
                if found:
                    text = text.split("\n")[0].split(". ")[0]
    elif text.count("oxed{") > 1:
        text = "\\boxed{" + text.split("oxed{")[-1]
    text = find_math_answer(text)
    for c in "abcde":
        text = text.replace(f"({c})", c)
    for c in "abcde":
        text = text.replace(f"{{{c}}}", c)
    return text.rstrip(".").lstrip(":").strip()


_FIND_REPLACEMENTS = (
    (" ", ""),
    ("\\,", ""),
    ("∞", "\\infty"),
    ("+\\infty", "\\infty"),
    ("\\\\", "\\"),
    ("\n", ""),
    ("\\text", ""),
    ("\\mbox", ""),
    ("bmatrix", "pmatrix"),
    ("\\left", ""),
    ("\\right", ""),
    ("^{\\circ}", ""),
    ("^\\circ", ""),
    ("{m}^3", ""),
    ("m^3", ""),
    ("{units}", ""),
    ("units", ""),
    ("{km}", ""),
    ("km", ""),
)


def find_math_answer(text: str) -> str:
    """Upstream's ``find_math_answer`` (step 4)."""
    text = text.lower().replace("{}", "")
    boxed = re.findall(r"oxed{(.*)}", text, flags=re.S)
    answer = boxed[-1] if boxed else text
    close, opening = answer.find("}"), answer.find("{")
    if close != -1 and (opening == -1 or close < opening):
        answer = answer.split("}")[0]
    answer = answer.split("=")[-1].split("\\approx")[-1]
    for old, new in _FIND_REPLACEMENTS:
        answer = answer.replace(old, new)
    return strip_string(answer)


_STRIP_REPLACEMENTS = (
    ("\n", ""),
    ("\\!", ""),
    ("\\\\", "\\"),
    ("tfrac", "frac"),
    ("dfrac", "frac"),
    ("\\left", ""),
    ("\\right", ""),
    ("^{\\circ}", ""),
    ("^\\circ", ""),
    ("\\$", ""),
    ("$", ""),
)


def strip_string(text: str) -> str:
    """Upstream's ``_strip_string``, including its quirks: ``\\frac12`` is braced only when the text also holds
    ``sqrt``, and only ``0.5`` (no other decimal) becomes a fraction."""
    for old, new in _STRIP_REPLACEMENTS:
        text = text.replace(old, new)
    text = text.split("\\text{ ")[0].replace("\\%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    if len(text.split("=")) == 2:
        text = text.split("=")[-1]
    if len(text.split("\\approx")) == 2:
        text = text.split("\\approx")[-1]
    if "sqrt" in text:
        text = _fix_sqrt(text)
    text = text.replace(" ", "")
    if "sqrt" in text:
        text = _fix_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _fix_a_slash_b(text)


def _fix_sqrt(text: str) -> str:
    """``\\sqrt3`` -> ``\\sqrt{3}`` (one character)."""
    head, *parts = text.split("\\sqrt")
    return head + "".join(f"\\sqrt{{{p[0]}}}{p[1:]}" if p and p[0] != "{" else f"\\sqrt{p}" for p in parts)


def _fix_fracs(text: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{2}`` -> ``\\frac{1}{2}``; unchanged when a ``\\frac`` has fewer
    than two characters after it."""
    head, *parts = text.split("\\frac")
    out = head
    for part in parts:
        out += "\\frac"
        if part and part[0] == "{":
            out += part
        elif len(part) < 2:
            return text
        elif part[1] != "{":
            out += f"{{{part[0]}}}{{{part[1]}}}{part[2:]}"
        else:
            out += f"{{{part[0]}}}{part[1:]}"
    return out


def _fix_a_slash_b(text: str) -> str:
    """``3/4`` -> ``\\frac{3}{4}`` when both sides are integers written plainly."""
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return text
    return f"\\frac{{{a}}}{{{b}}}" if text == f"{a}/{b}" else text


def eval_tuple(text: str, lenient: bool = False) -> str:
    """``(a,b,...)`` / ``[a,b,...]`` with each element evaluated to 2 decimals (``infty``, ``a``, ``-a`` kept) and
    printed as Python prints it (``3`` for an integer, ``3.0`` for a float); any other text, or one whose element has
    no value, unchanged."""
    elements = text[1:-1].split(",")
    if len(text) < 2 or len(elements) < 2 or (text[0], text[-1]) not in (("(", ")"), ("[", "]")):
        return text
    try:
        values = [e if "infty" in e or e in ("a", "-a") else str(round(latex_value(e, lenient), 2)) for e in elements]
    except Exception:  # noqa: BLE001 - upstream returns the text unchanged on any failure
        return text
    return f"{text[0]}{','.join(values)}{text[-1]}"


def is_equal(a: str, b: str, lenient: bool = False) -> bool:
    """Upstream's ``is_equal`` (see the module docstring); ``lenient``: values read as ``evaluation.latex`` does
    with ``lenient=True``."""
    a, b = a.lower(), b.lower()
    if not a.replace(" ", "") or not b.replace(" ", ""):
        return False
    if a.strip() == b.strip():
        return True
    a, b = eval_tuple(a, lenient), eval_tuple(b, lenient)
    if a == b:
        return True
    try:
        return round(latex_value(a, lenient), 2) == round(latex_value(b, lenient), 2)
    except Exception:  # noqa: BLE001 - a parse or evaluation failure means "not equal", as upstream
        return False


def score(q: MathVisionQuestion, answer: str, lenient: bool = False) -> tuple[bool, str]:
    """(right, the answer as upstream reads it). ``lenient``: LaTeX values read mathematically (mixed numbers,
    U+2212 minus ...; ``evaluation.latex``), not as MATH-V's parser reads them."""
    read = model_answer(answer)
    return is_equal(q.answer, read, lenient) or is_equal(q.answer_value, read, lenient), read
