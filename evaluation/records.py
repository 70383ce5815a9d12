"""Evaluation records: one per question (``results_{stage}_questions.jsonl``), per-category result tables
(``results_{stage}.json`` / ``.csv``) and a benchmark's official score, written by ``vlrl validate`` / ``vlrl test``.

Each question record: ``id``, ``category``, ``solution``, ``answer`` as extracted, ``score``, ``completion``, all ranks
merged in dataset order; its mean score is the logged ``{stage}/accuracy``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datamodules.benchmarks import read_published
from evaluation.report import format_table
from evaluation.score import score_completions
from rewards.parsing import extract_answer


def write_results(results: dict[str, dict[str, float]], folder: Path, stage: str) -> None:
    """``category -> {accuracy, count}`` (with ``all``) as ``results_{stage}.json`` and ``.csv``, and a table."""

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"results_{stage}.json").write_text(json.dumps(results, indent=2))
    with (folder / f"results_{stage}.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["category", "accuracy", "count"])
        for key, value in results.items():
            writer.writerow([key, f"{value['accuracy']:.4f}", value["count"]])
    width = max(len(k) for k in results) + 2
    lines = [f"{'category':<{width}}{'accuracy':>10}{'count':>8}"]
    lines += [f"{k:<{width}}{v['accuracy']:>10.3f}{v['count']:>8}" for k, v in results.items()]
    print("\n".join(lines) + f"\n({folder / f'results_{stage}.json'})")


def write_benchmark_results(datamodule: Any, rows: list[dict[str, Any]], folder: Path, stage: str) -> dict | None:
    """When the evaluated data is a benchmark (``BenchmarkDataModule``): score the completions by that benchmark's
    official rules (``evaluation.score``, the code ``vlrl-score`` runs on ``vlrl predict`` output), against the
    records as published (all their category fields); write the same JSON as ``results_{stage}.json`` and print its
    table. Returns the result, or None for other data.

    Every question of the file is scored, as the official scripts do: one that was not evaluated (skipped at loading,
    or left out by ``limit_test_batches``) counts as wrong and is reported as ``missing``. A row repeated by the
    distributed sampler's padding is scored once."""
    benchmark, source = getattr(datamodule, "benchmark", None), getattr(datamodule, "source", None)
    if benchmark is None or source is None:
        return None

    published = read_published(benchmark, source)
    ids = [id for id, _ in published]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: question ids repeat, so completions cannot be matched to questions")
    completions: dict[str, str] = {}
    for row in rows:
        completions.setdefault(str(row["id"]), row["completion"])
    unknown = sorted(set(completions) - set(ids))
    if unknown:
        raise ValueError(f"{source}: evaluated ids {unknown[:5]} are not questions of the file ({benchmark})")
    result = score_completions(benchmark, [(record, completions.get(id)) for id, record in published])
    result = {**result, "source": str(source), "evaluated": len(completions)}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"results_{stage}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"{format_table(result)}\n({path})")
    return result


def question_rows(
    batch: dict[str, Any], texts: Sequence[str], scores: Sequence[float], answer_fallbacks: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """One row per evaluated question of ``batch`` (see the module docstring); ``index`` (the dataset row) orders
    the merged file and is not written."""

    categories = batch.get("category") or [None] * len(texts)
    return [
        {
            "index": batch["index"][i],
            "id": batch["id"][i],
            "category": categories[i],
            "solution": batch["solution"][i],
            "answer": extract_answer(text, answer_fallbacks),
            "score": float(score),
            "completion": text,
        }
        for i, (text, score) in enumerate(zip(texts, scores))
    ]


def write_question_rows(rows: list[dict[str, Any]], folder: Path, stage: str) -> Path:
    """``rows`` (from ``question_rows``) as ``results_{stage}_questions.jsonl`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"results_{stage}_questions.jsonl"
    lines = (json.dumps({k: v for k, v in row.items() if k != "index"}, ensure_ascii=False) + "\n" for row in rows)
    path.write_text("".join(lines))
    print(f"wrote {len(rows)} per-question results to {path}")
    return path


def completion_record(out: Any, row: int, answer_fallbacks: Sequence[str] = ()) -> dict[str, Any]:
    """The generated part of a prediction record for row ``row`` of a rollout ``out``; ``answer_fallbacks`` as
    ``AccuracyReward``'s (default: the ``<answer>`` block only; a template's own are ``Template.answer_fallbacks``)."""

    text = out.texts[row]
    return {
        "completion": text,
        "answer": extract_answer(text, answer_fallbacks),
        "completion_tokens": int(out.lengths[row]),
        "truncated": bool(out.truncated[row]),
    }
