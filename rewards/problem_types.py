"""Canonical problem types and the aliases datasets use for them."""

from __future__ import annotations

from rewards.base import RewardInputError

PROBLEM_TYPES = ("numerical", "multiple_choice", "math", "ocr", "free_form")

_ALIASES = {
    "numeric": "numerical",
    "number": "numerical",
    "integer": "numerical",
    "float": "numerical",
    "regression": "numerical",
    "multiple choice": "multiple_choice",
    "multi_choice": "multiple_choice",
    "multichoice": "multiple_choice",
    "choice": "multiple_choice",
    "mc": "multiple_choice",
    "free-form": "free_form",
    "free form": "free_form",
    "freeform": "free_form",
    "open": "free_form",
    "text": "free_form",
}


def canonical_problem_type(name: object) -> str:
    """``"multiple choice"`` / ``"OCR"`` / ``"free-form"`` -> ``"multiple_choice"`` / ``"ocr"`` / ``"free_form"``.

    Raises ValueError for anything else, so an unknown type is caught when the data loads, not mid-run.
    """
    if not isinstance(name, str):
        raise RewardInputError(f"problem_type must be a string, got {type(name).__name__} {name!r}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key).replace("-", "_").replace(" ", "_")
    if key not in PROBLEM_TYPES:
        raise RewardInputError(f"unknown problem_type {name!r}; known: {', '.join(PROBLEM_TYPES)} (and aliases)")
    return key
