"""Score completions on a benchmark by that benchmark's official rules (see each scorer's module docstring).

- ``score_completions(benchmark, rows)``: in memory, for ``vlrl test``: ``rows`` pairs each benchmark row (a record
  as published, or a converted row as a ``vlrl test`` batch carries it) with its completion (None: no prediction).
- ``score_predictions(benchmark, source, predictions)``: the benchmark file as published and the JSON Lines that
  ``vlrl predict`` writes (``{"id", "completion", ...}`` per line; one file per rank), joined on ``id`` (the ids
  ``datamodules.benchmarks.read_published`` gives, which are the converted rows' ids).
- ``vlrl score --benchmark B --source FILE --predictions FILE [FILE ...] [--out FILE]``: the same, printed as a table
  and written as JSON.

The result: ``accuracy`` (0..1, each question right or wrong), ``correct``, ``count`` (questions, after MMBench's
CircularEval grouping), ``missing`` (benchmark rows without a prediction: counted wrong and warned about on stderr),
``rows`` and ``row_accuracy`` (each row on its own; differs from accuracy only under CircularEval), ``categories``
``{field: {value: {accuracy, correct, count}}}``, and ``questions``: one record per row with ``id``, ``question``,
``categories``, ``truth``, ``answer`` (the text read from the completion), ``prediction`` (the answer as the
benchmark's rules read it), ``correct``, ``missing``.

A prediction whose id is not in the benchmark file is an error naming the id and the file; a prediction id seen
twice keeps its first completion (files of two runs, or the padded shards of a distributed ``vlrl test``) and is
reported on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from datamodules.benchmarks import READERS, read_published
from evaluation import mathverse, mathvision, mathvista, vlmevalkit
from evaluation.extraction import answer_text
from evaluation.report import format_table, summarise
from evaluation.rows import is_converted


@dataclass(frozen=True)
class Scorer:
    question: Callable[[Mapping[str, Any], str, str], Any]  # (row, id, where) -> question (.id .group .truth ...)
    score: Callable[[Any, str], tuple[bool, Any]]  # (question, answer text) -> (right, prediction as read)
    fields: tuple[str, ...]  # per-category fields, in report order


SCORERS: dict[str, Scorer] = {
    "mathvista": Scorer(mathvista.question, mathvista.score, mathvista.FIELDS),
    "mmbench": Scorer(partial(vlmevalkit.question, circular=True), vlmevalkit.score, vlmevalkit.FIELDS),
    "mmstar": Scorer(vlmevalkit.question, vlmevalkit.score, vlmevalkit.FIELDS),
    "vlmevalkit": Scorer(vlmevalkit.question, vlmevalkit.score, vlmevalkit.FIELDS),
    "mathvision": Scorer(mathvision.question, mathvision.score, mathvision.FIELDS),
    "mathverse": Scorer(mathverse.question, mathverse.score, mathverse.FIELDS),
}


def _scorer(benchmark: str) -> Scorer:
    if benchmark not in SCORERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {sorted(SCORERS)}")
    return SCORERS[benchmark]


def _score(benchmark: str, items: Sequence[tuple[str, Mapping[str, Any], str | None, str]]) -> dict[str, Any]:
    """``items``: (id, row, completion or None, where the row comes from, for errors)."""
    scorer = _scorer(benchmark)
    records = []
    for id, row, completion, where in items:
        q = scorer.question(row, id, where)
        record = {"id": id, "question": q.group, "categories": q.categories, "truth": q.truth}
        if completion is None:
            records.append({**record, "answer": None, "prediction": None, "correct": 0, "missing": True})
            continue
        answer = answer_text(completion)
        right, prediction = scorer.score(q, answer)
        records.append({**record, "answer": answer, "prediction": prediction, "correct": int(right), "missing": False})
    missing = [r["id"] for r in records if r["missing"]]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        print(
            f"warning: {benchmark}: {len(missing)} question row(s) have no prediction and count as wrong: {shown}",
            file=sys.stderr,
        )
    return {"benchmark": benchmark, **summarise(records, scorer.fields), "questions": records}


def score_completions(benchmark: str, rows: Sequence[tuple[Mapping[str, Any], str | None]]) -> dict[str, Any]:
    """Score ``(row, completion)`` pairs in memory. A row is a benchmark record as published (its id under the key
    the benchmark uses: ``pid``, ``index``, ``id``, ``sample_index``) or a converted row (``id``, ``solution``,
    ``problem_type``, ``choices``, ``precision``, ``category``: less metadata, so fewer category fields). A completion
    of None counts as missing. Returns the dict described in the module docstring."""
    _scorer(benchmark)
    items = []
    for i, (row, completion) in enumerate(rows):
        key = "id" if is_converted(row) else READERS[benchmark][1]
        if key not in row:
            raise ValueError(f"{benchmark} row {i}: no key {key!r} (the row's id)")
        items.append((str(row[key]), row, completion, f"{benchmark} row {i} (id {row[key]})"))
    return _score(benchmark, items)


def read_predictions(paths: Sequence[str | Path]) -> dict[str, tuple[str, str]]:
    """``id -> (completion, "file line N")`` from ``vlrl predict``'s JSON Lines files; the first of repeated ids."""
    predictions: dict[str, tuple[str, str]] = {}
    repeated = 0
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"no predictions file at {path}")
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path} line {n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from e
            if not isinstance(record, dict):
                raise ValueError(f"{where}: a {type(record).__name__}, not a JSON object with 'id' and 'completion'")
            for key in ("id", "completion"):
                if key not in record:
                    raise ValueError(f"{where}: no key {key!r}")
            if not isinstance(record["completion"], str):
                raise ValueError(f"{where}: key 'completion' is {type(record['completion']).__name__}, not text")
            id = str(record["id"])
            if id in predictions:
                repeated += 1
                continue
            predictions[id] = (record["completion"], where)
    if repeated:
        print(
            f"warning: {repeated} prediction(s) repeat an id seen before; the first of each is scored", file=sys.stderr
        )
    return predictions


def score_predictions(benchmark: str, source: str | Path, predictions: str | Path | Sequence[str | Path]) -> dict:
    """Score ``vlrl predict`` output (one or more JSON Lines files) against the benchmark file ``source`` as
    published. Every prediction id must be a question of ``source``; questions without a prediction count as wrong
    (``missing``)."""
    _scorer(benchmark)
    paths = [predictions] if isinstance(predictions, (str, Path)) else list(predictions)
    published = read_published(benchmark, source)
    if not published:
        raise ValueError(f"{benchmark}: {source} has no questions")
    ids: set[str] = set()
    for id, _ in published:
        if id in ids:
            raise ValueError(f"{source}: id {id!r} occurs more than once")
        ids.add(id)
    completions = read_predictions(paths)
    for id, (_, where) in completions.items():
        if id not in ids:
            raise ValueError(f"{where}: prediction id {id!r} is not a question of {source} ({benchmark})")
    items = [
        (id, record, completions[id][0] if id in completions else None, f"{source} question {id}")
        for id, record in published
    ]
    return {**_score(benchmark, items), "source": str(source), "predictions": [str(p) for p in paths]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vlrl score", description="Score vlrl predict output on a benchmark by its official rules."
    )
    parser.add_argument("--benchmark", required=True, choices=sorted(SCORERS))
    parser.add_argument("--source", required=True, help="the benchmark file as published (TSV / JSON / JSONL)")
    parser.add_argument("--predictions", required=True, nargs="+", help="vlrl predict JSON Lines (one per rank)")
    parser.add_argument("--out", help="write the results (with per-question records) as JSON here")
    args = parser.parse_args(argv)
    try:
        result = score_predictions(args.benchmark, args.source, args.predictions)
    except (ValueError, FileNotFoundError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
