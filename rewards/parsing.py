"""Pure functions that pull answers, numbers, option letters and template blocks out of model text.

Every function accepts any string and returns ``None`` (or ``False``) rather than raising, so rewards built on them
never crash on model output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rewards.templates import get_tagged_template

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def strip_answer_tags(text: str) -> str:
    """``"<answer> 12 </answer>"`` -> ``"12"``; text without tags is returned stripped."""
    found = ANSWER_RE.findall(text)
    return (found[-1] if found else text).strip()


def extract_tag(text: str, tag: str) -> str | None:
    """Content of the last complete ``<tag>..</tag>`` block (may span lines), stripped; None if there is none."""
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", text, flags=re.DOTALL | re.IGNORECASE)
    return found[-1].strip() if found else None


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces; None if absent or unbalanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def extract_answer(text: str, fallbacks: Sequence[str] = ()) -> str | None:
    """The answer a completion commits to: the last ``<answer>`` block, else each fallback in order, else None.

    Fallbacks (off by default, as in Visionary-R1, which reads the ``<answer>`` block only): ``"boxed"`` (last
    ``\\boxed{}``), ``"text"`` (the whole completion, stripped). They are for scoring models that were not trained on
    the tag template; in training they would reward truncated and untagged completions.
    """
    answer = extract_tag(text, "answer")
    if answer is not None:
        return answer
    for fallback in fallbacks:
        if fallback == "boxed":
            boxed = extract_boxed(text)
            if boxed is not None:
                return boxed
        elif fallback == "text":
            return text.strip()
        else:
            raise ValueError(f"unknown answer fallback {fallback!r}; use 'boxed' or 'text'")
    return None


_NUMBER_RE = re.compile(
    r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?\s*%?|"
    r"(?<![\w.])[-+−]?\.\d+\s*%?"
)
_BARE_NUMBER_RE = re.compile(r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+−]?\.\d+")


def parse_numbers(text: str) -> list[tuple[float, bool]]:
    """Every number in ``text``, in order, as ``(value, had_percent)``; the value is as written (``"50%"`` ->
    ``(50.0, True)``). Understands ``1,234``, ``-5``, ``.5``, ``3/4`` and a unicode minus; ``1/0`` is skipped."""
    numbers = []
    for match in _NUMBER_RE.findall(text[-10_000:]):
        token = match.replace("−", "-").replace(",", "").replace(" ", "")
        percent = token.endswith("%")
        token = token.rstrip("%")
        try:
            if "/" in token:
                num, den = token.split("/")
                value = float(num) / float(den)
            else:
                value = float(token)
        except (ValueError, ZeroDivisionError):
            continue
        numbers.append((value, percent))
    return numbers


def parse_number(text: str) -> float | None:
    """The last number in ``text`` as a float, a trailing ``%`` dividing by 100: ``"1,234"`` -> 1234,
    ``"12 cm"`` -> 12, ``"3/4"`` -> 0.75, ``"50%"`` -> 0.5. None if there is no number."""
    numbers = parse_numbers(text)
    if not numbers:
        return None
    value, percent = numbers[-1]
    return value / 100.0 if percent else value


def is_bare_number(text: str) -> bool:
    """True when ``text`` (stripped) is one number and nothing else: ``"38"``, ``"-1.5"``, ``"1,234"``; not
    ``"12 cm"``, ``"50%"`` or ``"3/4"``."""
    return _BARE_NUMBER_RE.fullmatch(text.strip()) is not None


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# A letter counts only as a standalone option mark: "I think B" and "A red circle" name no letter.
_WHOLE_MARK = re.compile(r"[(\[]?([A-Za-z])[)\]]?[.:]?")  # the whole text: "B", "(B)", "B.", "B)", "[B]", "b"
_LEADING_MARK = re.compile(r"[(\[]?([A-Z])(?:[)\]]|[.:])\s+\S")  # then the option's text: "B) 12 cm", "B. blue"
_NAMED_MARK = re.compile(  # "answer is B", "Answer: (B)", "option B", "the choice is (C)."
    r"(?i:\b(?:answer|option|choice))(?:\s+is)?\s*(?::\s*)?[(\[]?(?:([A-Z])(?!\w)|([a-z])[)\]]?[.!]?\s*$)"
)
_PAREN_MARK = re.compile(r"[(\[]([A-Z])[)\]]")  # "... so (C)"
_DECORATION = "*_`'\" "  # markdown emphasis and quotes around an answer: "**B**", "'B'"


def _normalise_option(text: str) -> str:
    return " ".join(text.strip().strip(".").lower().split())


def choice_from_text(text: str, choices: Sequence[str]) -> str | None:
    """The letter of the one option whose text ``text`` is (case, spacing and a final period ignored), also written
    after its own letter (``"A red circle"`` for option A ``red circle``); None when no single option fits."""
    target = _normalise_option(text)
    if not target:
        return None
    options = [_normalise_option(str(option)) for option in choices][: len(LETTERS)]
    for candidates in (options, [f"{LETTERS[i].lower()} {o}" for i, o in enumerate(options)]):
        hits = [i for i, option in enumerate(candidates) if option == target]
        if len(hits) == 1:
            return LETTERS[hits[0]]
    return None


def parse_choice(text: str, choices: Sequence[str] | None = None) -> str | None:
    """The option letter a text names, or None.

    In order: the whole text is a mark (``B``, ``(B)``, ``B.``, ``B)``, ``b``); with ``choices`` (the option texts in
    letter order) the text is one option's text (``"A blue square"`` for option B ``A blue square`` is B, not A);
    the text starts with a mark and a separator (``B) 12 cm``, ``B. blue``, ``(B) blue``); the last mark named as
    such (``The answer is B``, ``Answer: (B)``, ``option B``); the last mark in brackets (``... so (C)``). A capital
    that starts or ends a sentence is not a mark: ``"I think B"`` and ``"A red circle"`` give None (with choices,
    ``"A red circle"`` is the option whose text it is).
    """
    text = text.strip()[:10_000].strip(_DECORATION).strip()
    if not text:
        return None
    whole = _WHOLE_MARK.fullmatch(text)
    if whole:
        return whole.group(1).upper()
    if choices:
        by_text = choice_from_text(text, choices)
        if by_text is not None:
            return by_text
    leading = _LEADING_MARK.match(text)
    if leading:
        return leading.group(1)
    named = _NAMED_MARK.findall(text)
    if named:
        upper, lower = named[-1]
        return (upper or lower).upper()
    bracketed = _PAREN_MARK.findall(text)
    return bracketed[-1] if bracketed else None


def parse_template(text: str, template: str) -> dict[str, str] | None:
    """Split ``text`` into the blocks of ``template`` (``rewards.templates``: ``caption`` or ``think``), or None when
    the format does not hold. A template name that is unknown or has no blocks (``plain``) is a ValueError.

    The format holds when the whole text (leading/trailing whitespace aside) is exactly the template's blocks in
    order, separated by any whitespace (or none), each block non-empty and free of the template's own tags; content
    may span lines. Tags are case-sensitive.

    Visionary-R1's format regex (``re.fullmatch`` with ``re.DOTALL``, so multi-line blocks pass there too) differs
    in four ways: it needs exactly one whitespace character between ``</info>`` and ``<think>`` (``"\\n\\n"`` or none
    fails), it allows no whitespace before the first or after the last block, it accepts empty blocks, and its lazy
    ``.*?`` can stretch over further tags, so ``<answer>1</answer><answer>2</answer>`` at the end passes. Here the
    separators are free (they carry no meaning and a tokenizer may emit either), and an empty block or a repeated or
    nested tag fails (they leave the answer ambiguous).
    """
    tags = get_tagged_template(template).blocks
    any_tag = "|".join(tags)
    body = rf"((?:(?!</?(?:{any_tag})>).)*)"  # content that holds none of the template's tags
    pattern = r"\s*" + r"\s*".join(rf"<{t}>{body}</{t}>" for t in tags) + r"\s*"
    match = re.fullmatch(pattern, text, flags=re.DOTALL)
    if match is None:
        return None
    blocks = dict(zip(tags, (g.strip() for g in match.groups())))
    if any(not v for v in blocks.values()):
        return None
    return blocks
