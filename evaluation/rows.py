"""What every benchmark scorer shares: telling a converted row from a published record, reading a record's keys
with errors that name the row and the key, and the question that is scored on its own."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def is_converted(row: Mapping[str, Any]) -> bool:
    """True for a row of ``datamodules.benchmarks``' converted contract (``{id, image, problem, solution,
    problem_type, category, choices, precision}``, as a ``vlrl test`` batch carries it); False for a record as the
    benchmark publishes it (none of the published shapes has a ``problem_type`` key)."""
    return "problem_type" in row and "solution" in row


def is_missing(value: Any) -> bool:
    """None, NaN, or blank text."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def require(row: Mapping[str, Any], key: str, where: str) -> Any:
    """``row[key]``, or a ValueError naming ``where`` and the key when it is absent or empty."""
    if key not in row or is_missing(row[key]):
        raise ValueError(f"{where}: no value for key {key!r}")
    return row[key]


class SingleQuestion:
    """For a benchmark's question dataclass (with ``id`` and ``answer`` fields) whose questions are scored each on its
    own: its group is its id (MMBench's CircularEval groups its copies instead) and its truth is its answer."""

    id: str
    answer: str

    @property
    def group(self) -> str:
        return self.id

    @property
    def truth(self) -> str:
        return self.answer
