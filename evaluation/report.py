"""Per-question records -> accuracy, per-category results and a readable table. Pure functions.

A record is one scored row: ``id``, ``question`` (the question it counts towards: its own id, or under MMBench's
CircularEval the group of rotated copies), ``categories`` (field -> value; a list value counts for each element;
None: not known), ``correct`` (0/1 for this row), ``missing`` (no prediction: wrong). A question is right when all
of its rows are; its categories are those of its main row (the one whose id is the question's), else its first.

The official scripts score only the predictions they are given; ``answered`` is that figure: the questions whose main
row has a prediction, each right when its rows with a prediction are (VLMEvalKit's CircularEval on a partial file).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _rate(correct: int, count: int) -> dict[str, Any]:
    return {"accuracy": correct / count if count else 0.0, "correct": correct, "count": count}


def summarise(records: Sequence[dict[str, Any]], fields: Sequence[str]) -> dict[str, Any]:
    """``accuracy`` / ``correct`` / ``count`` over questions, ``missing`` (rows without a prediction), ``answered``
    (``{accuracy, correct, count}`` as the official scripts count: see the module docstring), ``rows`` and
    ``row_accuracy`` (each row on its own; equal to the question figures unless rows are grouped), and ``categories``
    ``{field: {value: {accuracy, correct, count}}}`` for the ``fields`` that have values, values in sorted order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(record["question"], []).append(record)
    tallies: dict[str, dict[str, list[int]]] = {f: {} for f in fields}  # field -> value -> [correct, count]
    correct = 0
    answered = [0, 0]  # [correct, count] over the questions whose main row has a prediction
    for key, rows in groups.items():
        right = all(r["correct"] for r in rows)
        correct += right
        main = next((r for r in rows if r["id"] == key), rows[0])
        if not main["missing"]:
            answered[0] += all(r["correct"] for r in rows if not r["missing"])
            answered[1] += 1
        for name in fields:
            value = main["categories"].get(name)
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in dict.fromkeys(str(x) for x in values if x is not None):
                tally = tallies[name].setdefault(v, [0, 0])
                tally[0] += right
                tally[1] += 1
    summary = _rate(correct, len(groups))
    summary["missing"] = sum(bool(r["missing"]) for r in records)
    summary["answered"] = _rate(*answered)
    summary["rows"] = len(records)
    summary["row_accuracy"] = _rate(sum(bool(r["correct"]) for r in records), len(records))["accuracy"]
    summary["categories"] = {
        name: {v: _rate(*tallies[name][v]) for v in sorted(tallies[name])} for name in fields if tallies[name]
    }
    return summary


def format_table(result: dict[str, Any]) -> str:
    """The headline figures (with the rows that had no prediction, and how the official script would count them),
    then one block per category field: value, accuracy, correct/count."""
    name = result.get("benchmark", "benchmark") + (" (lenient)" if result.get("lenient") else "")
    headline = f"{name}: accuracy {result['accuracy']:.4f} ({result['correct']}/{result['count']} questions"
    if result["missing"]:
        headline += f"; {result['missing']} row(s) without a prediction, counted wrong"
    lines = [headline + ")"]
    if result["missing"]:
        answered = result["answered"]
        rule = result.get("official_missing", "the official script scores only the predictions it is given")
        lines.append(
            f"  officially {answered['accuracy']:.4f} ({answered['correct']}/{answered['count']} answered questions): "
            f"{rule}"
        )
    if result["rows"] != result["count"]:
        lines.append(f"  {result['rows']} rows (CircularEval copies), row accuracy {result['row_accuracy']:.4f}")
    categories = result["categories"]
    width = max([len(v) for values in categories.values() for v in values] + [8]) + 4
    for field_name, values in categories.items():
        lines.append("")
        lines.append(f"{field_name:<{width}}{'accuracy':>10}{'correct/count':>16}")
        for value, rate in values.items():
            fraction = f"{rate['correct']}/{rate['count']}"
            lines.append(f"  {value:<{width - 2}}{rate['accuracy']:>10.4f}{fraction:>16}")
    return "\n".join(lines)
