"""Pure functions that pull answers, numbers, option letters and template blocks out of model text.

Every function accepts any string and returns ``None`` (or ``False``) rather than raising, so rewards built on them
never crash on model output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)

# Blocks in order for each template. "caption" is Visionary-R1's caption -> reason -> answer, "think" is R1 style.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "caption": ("info", "think", "answer"),
    "think": ("think", "answer"),
}


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


def extract_answer(text: str, fallbacks: Sequence[str] = ("boxed", "text")) -> str | None:
    """The answer a completion commits to: the last ``<answer>`` block, else each fallback in order.

    Fallbacks: ``"boxed"`` (last ``\\boxed{}``), ``"text"`` (the whole completion, stripped). With no fallbacks a
    completion without ``<answer>`` tags has no answer (None).
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


def parse_number(text: str) -> float | None:
    """The last number in ``text`` as a float: ``"1,234"`` -> 1234, ``"12 cm"`` -> 12, ``"3/4"`` -> 0.75.

    A trailing ``%`` divides by 100 (``"50%"`` -> 0.5), as Visionary-R1's numerical reward does. None if there is
    no number.
    """
    matches = _NUMBER_RE.findall(text[-10_000:])
    if not matches:
        return None
    token = matches[-1].replace("−", "-").replace(",", "").replace(" ", "")
    percent = token.endswith("%")
    token = token.rstrip("%")
    try:
        if "/" in token:
            num, den = token.split("/")
            value = float(num) / float(den)
        else:
            value = float(token)
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100.0 if percent else value


_CHOICE_PATTERNS = (
    re.compile(r"^\(?([A-Z])\)?(?:[.):\s]|$)"),  # "B", "(B)", "B.", "B) 12 cm", "B: 12 cm"
    re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*:?\s*\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"\(([A-Z])\)"),  # "... so (C)"
)


def parse_choice(text: str) -> str | None:
    """The option letter a text names: ``B``, ``(B)``, ``B.``, ``B) 12 cm``, ``The answer is B`` all give ``"B"``."""
    text = text.strip()
    if len(text) == 1 and text.isalpha() and text.isascii():
        return text.upper()
    for pattern in _CHOICE_PATTERNS:
        found = pattern.findall(text[:10_000])
        if found:
            letter = found[-1] if pattern is not _CHOICE_PATTERNS[0] else found[0]
            return letter.upper()
    return None


def parse_template(text: str, template: str) -> dict[str, str] | None:
    """Split ``text`` into its template blocks, or None when the format does not hold.

    The format holds when the whole text (leading/trailing whitespace aside) is exactly the template's blocks in
    order, separated by whitespace only, each block non-empty and free of the template's own tags. Content may span
    lines (the released Visionary-R1 regex used ``.`` without DOTALL and so rejected multi-line captions).
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose from {sorted(TEMPLATES)}")
    tags = TEMPLATES[template]
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
