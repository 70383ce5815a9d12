"""Score completions on a benchmark by that benchmark's official rules (see each scorer's module docstring).

- ``score_completions(benchmark, rows)``: in memory, for ``vlrl test``: ``rows`` pairs each benchmark row (a record
  as published, or a converted row as a ``vlrl test`` batch carries it) with its completion (None: no prediction).
- ``score_predictions(benchmark, source, predictions)``: the benchmark file as published and the JSON Lines that
  ``vlrl predict`` writes (``{"id", "completion", ...}`` per line; one file per rank), joined on ``id`` (the ids
  ``datamodules.benchmarks.read_published`` gives, which are the converted rows' ids).
- ``vlrl score --benchmark B --source FILE --predictions FILE [FILE ...] [--out FILE] [--lenient]``: the same,
  printed as a table and written as JSON.

``lenient=True`` (``--lenient``; MathVision only) reads LaTeX answers by their mathematical value (``3\\frac{1}{2}``
is 7/2, ``−3`` with U+2212 is -3) where MATH-V's own code does not (``evaluation.mathvision``); the figure is then
no longer the published metric, and the result says ``"lenient": true``.

The result: ``accuracy`` (0..1, each question right or wrong), ``correct``, ``count`` (questions, after MMBench's
CircularEval grouping), ``missing`` (benchmark rows without a prediction: counted wrong and warned about on stderr),
``answered`` (``{accuracy, correct, count}`` over the questions the official script would score: those whose main
row has a prediction, each right when its rows with a prediction are; the official scripts score only the
predictions they are given, and ``official_missing`` says so in the benchmark's words), ``rows`` and
``row_accuracy`` (each row on its own; differs from accuracy only under CircularEval), ``categories``
``{field: {value: {accuracy, correct, count}}}``, and ``questions``: one record per row with ``id``, ``question``,
``categories``, ``truth``, ``answer`` (the text read from the completion), ``prediction`` (the answer as the
benchmark's rules read it), ``correct``, ``missing``.

Errors (``vlrl score`` prints one line and exits 2): a predictions file that is missing, empty, not JSON Lines, or
whose ids are none of them questions of the benchmark file; a prediction id that is not in the benchmark file (the
error names the file and line); a benchmark file in another benchmark's shape (the error names the benchmark it
looks like, from its keys). A prediction id seen twice keeps its first completion (files of two runs, or the padded
shards of a distributed ``vlrl test``) and is reported on stderr.
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
    official_missing: str  # how the official script counts a question without a prediction
    lenient: Callable[[Any, str], tuple[bool, Any]] | None = None  # ``score`` under ``lenient=True``, where offered


_VLMEVALKIT_ROWS = "VLMEvalKit scores only the rows in its prediction file"
SCORERS: dict[str, Scorer] = {
    "mathvista": Scorer(
        mathvista.question,
        mathvista.score,
        mathvista.FIELDS,
        "MathVista's calculate_score.py counts only the problems in its results file",
    ),
    "mmbench": Scorer(
        partial(vlmevalkit.question, circular=True),
        vlmevalkit.score,
        vlmevalkit.FIELDS,
        "VLMEvalKit scores only the copies in its prediction file, and no question whose main copy is absent",
    ),
    "mmstar": Scorer(vlmevalkit.question, vlmevalkit.score, vlmevalkit.FIELDS, _VLMEVALKIT_ROWS),
    "vlmevalkit": Scorer(vlmevalkit.question, vlmevalkit.score, vlmevalkit.FIELDS, _VLMEVALKIT_ROWS),
    "mathvision": Scorer(
        mathvision.question,
        mathvision.score,
        mathvision.FIELDS,
        "MATH-V's evaluate.py scores only the lines of its answer file",
        lenient=partial(mathvision.score, lenient=True),
    ),
    "mathverse": Scorer(
        mathverse.question,
        mathverse.score,
        mathverse.FIELDS,
        "MathVerse's score_answer_s2.py scores only the answers in its extraction file",
    ),
}

# The published shapes told apart by their keys (datamodules.benchmarks describes each): shape -> (keys, benchmarks).
SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "a MathVista JSON": (("pid", "question_type"), ("mathvista",)),
    "a MathVerse JSON": (("sample_index", "problem_version"), ("mathverse",)),
    "a MathVision JSON": (("id", "options"), ("mathvision",)),
    "a VLMEvalKit TSV": (("index", "answer"), ("mmbench", "mmstar", "vlmevalkit")),
}


def _scorer(benchmark: str) -> Scorer:
    if benchmark not in SCORERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {sorted(SCORERS)}")
    return SCORERS[benchmark]


def _score_function(benchmark: str, lenient: bool) -> Callable[[Any, str], tuple[bool, Any]]:
    scorer = _scorer(benchmark)
    if not lenient:
        return scorer.score
    if scorer.lenient is None:
        offered = sorted(name for name, s in SCORERS.items() if s.lenient is not None)
        raise ValueError(f"{benchmark} has no lenient reading (lenient scoring is offered for {', '.join(offered)})")
    return scorer.lenient


def _score(
    benchmark: str, items: Sequence[tuple[str, Mapping[str, Any], str | None, str]], lenient: bool = False
) -> dict[str, Any]:
    """``items``: (id, row, completion or None, where the row comes from, for errors)."""
    scorer, score = _scorer(benchmark), _score_function(benchmark, lenient)
    records = []
    for id, row, completion, where in items:
        q = scorer.question(row, id, where)
        record = {"id": id, "question": q.group, "categories": q.categories, "truth": q.truth}
        if completion is None:
            records.append({**record, "answer": None, "prediction": None, "correct": 0, "missing": True})
            continue
        answer = answer_text(completion)
        right, prediction = score(q, answer)
        records.append({**record, "answer": answer, "prediction": prediction, "correct": int(right), "missing": False})
    missing = [r["id"] for r in records if r["missing"]]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        print(
            f"warning: {benchmark}: {len(missing)} question row(s) have no prediction and count as wrong: {shown}",
            file=sys.stderr,
        )
    summary = summarise(records, scorer.fields)
    return {
        "benchmark": benchmark,
        "lenient": lenient,
        **summary,
        "official_missing": scorer.official_missing,
        "questions": records,
    }


def score_completions(
    benchmark: str, rows: Sequence[tuple[Mapping[str, Any], str | None]], lenient: bool = False
) -> dict[str, Any]:
    """Score ``(row, completion)`` pairs in memory. A row is a benchmark record as published (its id under the key
    the benchmark uses: ``pid``, ``index``, ``id``, ``sample_index``) or a converted row (``id``, ``solution``,
    ``problem_type``, ``choices``, ``precision``, ``category``: less metadata, so fewer category fields). A completion
    of None counts as missing. ``lenient``: MathVision's LaTeX read by its mathematical value, not as MATH-V's code
    reads it (see the module docstring). Returns the dict described in the module docstring."""
    _score_function(benchmark, lenient)
    items = []
    for i, (row, completion) in enumerate(rows):
        key = "id" if is_converted(row) else READERS[benchmark][1]
        if key not in row:
            raise ValueError(f"{benchmark} row {i}: no key {key!r} (the row's id)")
        items.append((str(row[key]), row, completion, f"{benchmark} row {i} (id {row[key]})"))
    return _score(benchmark, items, lenient)


def prediction_lines(path: str | Path) -> list[tuple[str, str, str]]:
    """``(id, completion, "file line N")`` for each line of one ``vlrl predict`` JSON Lines file, in file order.
    Raises FileNotFoundError for no file, ValueError for a line that is not a prediction or a file without any."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no predictions file at {path}")
    lines = []
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
        lines.append((str(record["id"]), record["completion"], where))
    if not lines:
        raise ValueError(f"{path}: no predictions in the file (vlrl predict writes one JSON line per question)")
    return lines


def read_predictions(paths: Sequence[str | Path]) -> dict[str, tuple[str, str]]:
    """``id -> (completion, "file line N")`` from ``vlrl predict``'s JSON Lines files; the first of repeated ids."""
    return _first_of_each([prediction_lines(path) for path in paths])


def _first_of_each(files: Sequence[list[tuple[str, str, str]]]) -> dict[str, tuple[str, str]]:
    predictions: dict[str, tuple[str, str]] = {}
    repeated = 0
    for lines in files:
        for id, completion, where in lines:
            if id in predictions:
                repeated += 1
                continue
            predictions[id] = (completion, where)
    if repeated:
        print(
            f"warning: {repeated} prediction(s) repeat an id seen before; the first of each is scored", file=sys.stderr
        )
    return predictions


def _shape(record: Mapping[str, Any]) -> str | None:
    return next((shape for shape, (keys, _) in SHAPES.items() if all(key in record for key in keys)), None)


def looks_like(source: str | Path) -> str | None:
    """The published shape (a key of ``SHAPES``) that the file's first record has, read as JSON and as a TSV; None
    when neither reading gives one."""
    for reader in ("mathvista", "vlmevalkit"):  # READERS: the JSON / JSON Lines reader, the TSV reader
        try:
            records = read_published(reader, source)
        except (ValueError, TypeError, UnicodeDecodeError):
            continue
        if records and _shape(records[0][1]) is not None:
            return _shape(records[0][1])
    return None


def _wrong_benchmark(benchmark: str, source: str | Path, published: list | None) -> ValueError | None:
    """The one-line error for a benchmark file in another benchmark's shape; None when it fits ``benchmark`` or its
    shape is unknown (then the scorer's own errors name the missing key)."""
    shape = _shape(published[0][1]) if published else None
    shape = shape or looks_like(source)
    if shape is None or benchmark in SHAPES[shape][1]:
        return None
    keys, names = SHAPES[shape]
    return ValueError(
        f"{source} looks like {shape} (keys {', '.join(map(repr, keys))}), not a file of {benchmark}: "
        f"score it with --benchmark {' / '.join(names)}"
    )


def read_source(benchmark: str, source: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """``read_published(benchmark, source)`` with its ids checked unique and its shape checked against
    ``benchmark``'s (a file of another benchmark is named as such)."""
    try:
        published = read_published(benchmark, source)
    except (ValueError, TypeError) as e:  # TypeError: JSON that is not a list or dict of records
        error = _wrong_benchmark(benchmark, source, None)
        if error is not None:
            raise error from None
        raise ValueError(str(e) if isinstance(e, ValueError) else f"{source}: not a {benchmark} file ({e})") from e
    error = _wrong_benchmark(benchmark, source, published)
    if error is not None:
        raise error
    if not published:
        raise ValueError(f"{benchmark}: {source} has no questions")
    ids: set[str] = set()
    for id, _ in published:
        if id in ids:
            raise ValueError(f"{source}: id {id!r} occurs more than once")
        ids.add(id)
    return published


def _check_ids(
    paths: Sequence[str | Path],
    files: Sequence[list[tuple[str, str, str]]],
    ids: set[str],
    source: str | Path,
    benchmark: str,
) -> None:
    """Every prediction id a question of ``source``; a file none of whose ids is one is named as a whole."""
    for path, lines in zip(paths, files):
        unknown = [(id, where) for id, _, where in lines if id not in ids]
        if unknown and len(unknown) == len(lines):
            raise ValueError(
                f"{path}: none of its {len(lines)} prediction ids is a question of {source} ({benchmark}): "
                f"it has {', '.join(repr(id) for id, _ in unknown[:3])}, the benchmark file "
                f"{', '.join(repr(id) for id in sorted(ids)[:3])} ..."
            )
        if unknown:
            id, where = unknown[0]
            raise ValueError(f"{where}: prediction id {id!r} is not a question of {source} ({benchmark})")


def score_predictions(
    benchmark: str, source: str | Path, predictions: str | Path | Sequence[str | Path], lenient: bool = False
) -> dict:
    """Score ``vlrl predict`` output (one or more JSON Lines files) against the benchmark file ``source`` as
    published. Every prediction id must be a question of ``source``, and each file must hold predictions;
    questions without a prediction count as wrong (``missing``). ``lenient``: as ``score_completions``."""
    _score_function(benchmark, lenient)
    paths = [predictions] if isinstance(predictions, (str, Path)) else list(predictions)
    published = read_source(benchmark, source)
    files = [prediction_lines(path) for path in paths]
    _check_ids(paths, files, {id for id, _ in published}, source, benchmark)
    completions = _first_of_each(files)
    items = [
        (id, record, completions[id][0] if id in completions else None, f"{source} question {id}")
        for id, record in published
    ]
    return {**_score(benchmark, items, lenient), "source": str(source), "predictions": [str(p) for p in paths]}


LENIENT_HELP = (
    "MathVision only: read LaTeX answers by their mathematical value (a mixed number 3\\frac{1}{2} is 7/2, -3 written "
    "with the Unicode minus U+2212 is -3) instead of as MATH-V's evaluate.py reads them (3\\frac{1}{2} is 3*1/2; a "
    "character outside ASCII leaves an answer without a value). The accuracy is then not the published metric."
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vlrl score",
        description="Score vlrl predict output on a benchmark by its official rules. A user mistake (a missing, "
        "empty or mismatched predictions file, a benchmark file of another benchmark) is one line on stderr and "
        "exit status 2.",
    )
    parser.add_argument("--benchmark", required=True, choices=sorted(SCORERS))
    parser.add_argument("--source", required=True, help="the benchmark file as published (TSV / JSON / JSONL)")
    parser.add_argument("--predictions", required=True, nargs="+", help="vlrl predict JSON Lines (one per rank)")
    parser.add_argument("--out", help="write the results (with per-question records) as JSON here")
    parser.add_argument("--lenient", action="store_true", help=LENIENT_HELP)
    args = parser.parse_args(argv)
    try:
        result = score_predictions(args.benchmark, args.source, args.predictions, lenient=args.lenient)
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
