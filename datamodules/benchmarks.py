"""Evaluation benchmarks read in the shapes they are published in, converted once to the project's RL rows.

Each converter turns a local file into rows ``{id, image, problem, solution, problem_type, category, choices,
precision}`` (images written as PNG files beside the converted JSONL), which ``VQADataModule`` then reads like any
other data; ``category`` feeds per-category accuracy, ``choices`` lets an answer given as an option's text count as
its letter, ``precision`` scores numbers at the stated decimal places. Options are listed as ``A. text``; options
that already carry their own label (``(A) red``, ``A. red``, ``A) red``, ``A: red``, every one at its position) lose
it first, so the prompt does not read ``A. (A) red``.

The converted rows go to a cache folder keyed by the source file's path, size and modification time, never beside
the source (dataset folders are often read-only or shared): ``$VLRL_CACHE/benchmarks/`` when ``VLRL_CACHE`` is set,
else ``$XDG_CACHE_HOME/vlrl/benchmarks/`` (``~/.cache/vlrl/benchmarks/``), or ``cache_dir`` when given.

- ``vlmevalkit``: the TSV layout VLMEvalKit publishes MMBench, MMStar and most other benchmarks in: ``index``,
  ``question``, optional ``hint``, option columns ``A``-``I``, ``answer`` (a letter when there are options),
  ``image`` (base64), optional ``category`` / ``l2-category``.
- ``mathvista``: MathVista's JSON (testmini): a dict (or list) of problems with ``pid``, ``question``, ``image``
  (path), ``choices`` (list or null), ``answer`` (the option *text* for multi_choice), ``question_type``
  (``multi_choice`` / ``free_form``), ``answer_type`` (``integer`` / ``float`` / ``text`` / ``list``),
  ``precision``, ``unit``, ``metadata`` (``category``, ``task``, ``skills`` ...).
- ``mathvision``: MathVision's JSON/JSONL: ``id``, ``question``, ``options`` (list, may be empty), ``answer``,
  ``image`` (path), ``subject``, ``level``.
- ``mathverse``: MathVerse's testmini JSON (a list): ``sample_index`` (the id), ``problem_index``, ``problem_version``
  (``Text Dominant`` ... ``Vision Only``), ``question`` (options, if any, written into it after ``Choices:``; empty
  for Vision Only, whose question is in the image), ``image`` (path), ``answer`` (a letter, sometimes ``(C)``, for
  ``multi-choice``; the value for ``free-form``), ``question_type``, ``metadata`` (``subject``, ``subfield``). The
  converted ``category`` is the ``problem_version`` (the benchmark's headline split). ``testmini_text_only.json`` has
  no images and cannot be converted (an RL row needs one).

In VLMEvalKit's TSVs an ``image`` cell of at most 64 characters names the ``index`` of the row whose image it shares
(MMBench's circular copies are stored this way), as VLMEvalKit's ``ImageBaseDataset`` reads it.

``read_published`` reads a benchmark file as published, without decoding images, each record paired with the ``id``
its converted row gets (``vlrl predict`` writes that id): the scorers in ``evaluation/`` join predictions on it.

Use ``BenchmarkDataModule(benchmark="mmbench" | "mmstar" | "vlmevalkit" | "mathvista" | "mathvision" | "mathverse",
source=FILE)`` in ``vlrl validate|test`` configs (``configs/eval/``).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from datamodules.errors import MissingPathError
from datamodules.vqa import VQADataModule

LETTERS = "ABCDEFGHI"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() in ("", "nan")


CONVERSION_VERSION = 2  # bumped when converted rows change (2: option labels stripped), so old caches are rebuilt


def strip_option_labels(options: list[str]) -> list[str]:
    """Options without their own labels when every option carries the label of its position: ``(A) red``, ``A. red``,
    ``A) red`` or ``A: red`` (any mix, either case) -> ``red``. Otherwise unchanged, so text that merely starts with a
    letter (``A red circle``, or labels out of order) is kept as written. Pure."""
    stripped = []
    for i, option in enumerate(options):
        label = re.match(rf"\s*(?:\({LETTERS[i]}\)|{LETTERS[i]}[.):](?=\s))\s*(?=\S)", str(option), re.IGNORECASE)
        if label is None:
            return list(options)
        stripped.append(str(option)[label.end() :])
    return stripped


def options_block(options: list[str]) -> str:
    return "Options:\n" + "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))


def _save_image(data: bytes | str, out: Path, where: str) -> str:
    raw = base64.b64decode(data) if isinstance(data, str) else data
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except Exception as e:  # noqa: BLE001 - reported with the row
        raise ValueError(f"{where}: cannot decode the image: {e}") from e
    name = f"{hashlib.sha1(raw).hexdigest()[:16]}.png"
    if not (out / name).exists():
        image.save(out / name)
    return f"images/{name}"


def _tsv_records(source: Path) -> list[dict[str, Any]]:
    csv.field_size_limit(sys.maxsize)  # base64 images are long fields
    with source.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _shared_image(raw: dict[str, Any], images: dict[str, str], where: str) -> str:
    """The row's base64 image; a cell of at most 64 characters names the ``index`` of the row holding it."""
    value = str(raw["image"])
    if len(value) > 64:
        return value
    if len(images.get(value) or "") <= 64:
        raise ValueError(f"{where}: column 'image' refers to index {value!r}, which has no image of its own")
    return images[value]


def vlmevalkit_rows(source: Path, images: Path) -> list[dict[str, Any]]:
    rows = []
    records = _tsv_records(source)
    by_index = {str(raw.get("index")): raw.get("image") for raw in records}
    for i, raw in enumerate(records):
        where = f"{source} row index {i}"
        if _missing(raw.get("question")) or _missing(raw.get("answer")) or _missing(raw.get("image")):
            raise ValueError(f"{where}: needs question, answer and image columns with values")
        options = [raw[letter] for letter in LETTERS if letter in raw and not _missing(raw[letter])]
        options = strip_option_labels(options)
        hint = "" if _missing(raw.get("hint")) else raw["hint"].strip() + "\n"
        problem = hint + raw["question"].strip() + (f"\n{options_block(options)}" if options else "")
        category = raw.get("category") if not _missing(raw.get("category")) else raw.get("l2-category")
        rows.append(
            {
                "id": str(raw.get("index", i)),
                "image": _save_image(_shared_image(raw, by_index, where), images, where),
                "problem": problem,
                "solution": raw["answer"].strip(),
                "problem_type": "multiple_choice" if options else "free_form",
                "category": None if _missing(category) else str(category),
                "choices": options or None,
                "precision": None,
            }
        )
    return rows


def _json_records(source: Path) -> list[dict[str, Any]]:
    if source.suffix == ".jsonl":
        records = []
        for n, line in enumerate(source.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{source}: line {n} is not valid JSON ({e})") from e
    else:
        try:
            data = json.loads(source.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e})") from e
        records = list(data.values()) if isinstance(data, dict) else list(data)
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{source}: record {i} is a {type(record).__name__}, not a JSON object")
    return records


def _image_path(value: str, source: Path, images: Path, where: str) -> str:
    path = Path(value) if Path(value).is_absolute() else source.parent / value
    if not path.is_file():
        raise ValueError(f"{where}: image file not found: {path}")
    return _save_image(path.read_bytes(), images, where)


def mathvista_rows(source: Path, images: Path) -> list[dict[str, Any]]:
    rows = []
    for i, rec in enumerate(_json_records(source)):
        where = f"{source} problem {rec.get('pid', i)}"
        choices = rec.get("choices") or None
        question = rec["question"].strip()
        unit = "" if _missing(rec.get("unit")) else f" (unit: {rec['unit']})"
        if rec.get("question_type") == "multi_choice":
            if not choices or rec["answer"] not in choices:
                raise ValueError(f"{where}: multi_choice answer {rec['answer']!r} is not one of the choices")
            solution, kind = LETTERS[choices.index(rec["answer"])], "multiple_choice"
            choices = strip_option_labels(choices)
            problem = f"{question}\n{options_block(choices)}"
        else:
            answer_type = rec.get("answer_type", "text")
            solution = str(rec["answer"])
            kind = "numerical" if answer_type in ("integer", "float") else "free_form"
            problem = question + unit
        meta = rec.get("metadata") or {}
        precision = rec.get("precision") if rec.get("answer_type") == "float" else None
        rows.append(
            {
                "id": str(rec.get("pid", i)),
                "image": _image_path(rec["image"], source, images, where),
                "problem": problem,
                "solution": solution,
                "problem_type": kind,
                "category": meta.get("category") or meta.get("task"),
                "choices": choices,
                "precision": None if _missing(precision) else int(float(precision)),
            }
        )
    return rows


def mathvision_rows(source: Path, images: Path) -> list[dict[str, Any]]:
    rows = []
    for i, rec in enumerate(_json_records(source)):
        where = f"{source} problem {rec.get('id', i)}"
        options = strip_option_labels([str(o) for o in rec.get("options") or []])
        question = rec["question"].replace("<image1>", "").strip()
        if options:
            problem, kind = f"{question}\n{options_block(options)}", "multiple_choice"
        else:
            problem, kind = question, "math"
        rows.append(
            {
                "id": str(rec.get("id", i)),
                "image": _image_path(rec["image"], source, images, where),
                "problem": problem,
                "solution": str(rec["answer"]),
                "problem_type": kind,
                "category": rec.get("subject"),
                "choices": options or None,
                "precision": None,
            }
        )
    return rows


_CHOICE_LINE = re.compile(r"\s*(?:\(([A-Z])\)\s*[:.：]?|([A-Z])\s*[:.：])\s*(.*)")  # (A) x | A: x | A. x


def choices_in_question(question: str) -> list[str] | None:
    """The option texts MathVerse writes into a question after ``Choices:``, one a line (``A:40°``, ``B.60``,
    ``(C) 120``), when they run A, B, C ... from the first line after the marker; None otherwise. Pure."""
    marker = question.rfind("Choices:")
    if marker < 0:
        return None
    choices = []
    for line in question[marker + len("Choices:") :].strip().splitlines():
        match = _CHOICE_LINE.fullmatch(line)
        if match is None or len(choices) == len(LETTERS) or (match[1] or match[2]) != LETTERS[len(choices)]:
            break
        choices.append(match[3].strip())
    return choices or None


def option_letter(answer: Any) -> str | None:
    """``"C"``, ``"(C)"`` or ``"C."`` -> ``"C"``; None for anything else. Pure."""
    match = re.fullmatch(r"\s*\(?([A-Za-z])\)?\.?\s*", str(answer))
    return match.group(1).upper() if match else None


VISION_ONLY_PROBLEM = "According to the question shown in the image, answer the question."


def mathverse_rows(source: Path, images: Path) -> list[dict[str, Any]]:
    rows = []
    for i, rec in enumerate(_json_records(source)):
        where = f"{source} problem {rec.get('sample_index', i)}"
        for key in ("question", "answer", "question_type"):
            if key not in rec:
                raise ValueError(f"{where}: no {key!r} key")
        if _missing(rec.get("image")):
            raise ValueError(f"{where}: no image (testmini_text_only.json has none; an RL row needs one)")
        problem = str(rec["question"]).strip() or VISION_ONLY_PROBLEM  # Vision Only: the question is in the image
        if rec["question_type"] == "multi-choice":
            solution, kind = option_letter(rec["answer"]), "multiple_choice"
            if solution is None:
                raise ValueError(f"{where}: multi-choice answer {rec['answer']!r} is not an option letter")
            choices = choices_in_question(problem)
        elif rec["question_type"] == "free-form":
            solution, kind, choices = str(rec["answer"]).strip(), "math", None
        else:
            raise ValueError(f"{where}: question_type {rec['question_type']!r} is not multi-choice or free-form")
        rows.append(
            {
                "id": str(rec.get("sample_index", i)),
                "image": _image_path(rec["image"], source, images, where),
                "problem": problem,
                "solution": solution,
                "problem_type": kind,
                "category": rec.get("problem_version"),
                "choices": choices,
                "precision": None,
            }
        )
    return rows


CONVERTERS: dict[str, Callable[[Path, Path], list[dict[str, Any]]]] = {
    "vlmevalkit": vlmevalkit_rows,
    "mmbench": vlmevalkit_rows,
    "mmstar": vlmevalkit_rows,
    "mathvista": mathvista_rows,
    "mathvision": mathvision_rows,
    "mathverse": mathverse_rows,
}

# How each benchmark's file is read, and which key holds the id of a record (its position when the key is absent).
READERS: dict[str, tuple[Callable[[Path], list[dict[str, Any]]], str]] = {
    "vlmevalkit": (_tsv_records, "index"),
    "mmbench": (_tsv_records, "index"),
    "mmstar": (_tsv_records, "index"),
    "mathvista": (_json_records, "pid"),
    "mathvision": (_json_records, "id"),
    "mathverse": (_json_records, "sample_index"),
}


def read_published(benchmark: str, source: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """``(id, record)`` for each record of ``source`` as published, in file order, with the ``id`` the converted row
    gets (and ``vlrl predict`` writes). Images are left as they are (base64 text or a path), not decoded."""
    if benchmark not in READERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {sorted(READERS)}")
    source = Path(source)
    if not source.is_file():
        raise MissingPathError(f"{benchmark}: no file at {source}")
    read, key = READERS[benchmark]
    return [(str(record.get(key, i)), record) for i, record in enumerate(read(source))]


def _stamp(benchmark: str, source: Path) -> dict[str, Any]:
    stat = source.stat()
    return {
        "benchmark": benchmark,
        "source": str(source.resolve()),
        "size": stat.st_size,
        "mtime": stat.st_mtime,
        "version": CONVERSION_VERSION,
    }


def default_cache_dir(benchmark: str, source: str | Path) -> Path:
    """``<user cache>/benchmarks/<benchmark>-<hash of the source's path, size, mtime>`` (see the module docstring):
    a changed or moved source gets a folder of its own, and nothing is written next to the source."""
    root = os.environ.get("VLRL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vlrl"
    key = hashlib.sha1(json.dumps(_stamp(benchmark, Path(source)), sort_keys=True).encode()).hexdigest()[:16]
    return Path(root).expanduser() / "benchmarks" / f"{benchmark}-{key}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a reader (another rank) sees the old file or the whole new one


def convert_benchmark(benchmark: str, source: str | Path, out_dir: str | Path | None = None) -> Path:
    """Convert ``source`` once into ``out_dir/<benchmark>.jsonl`` (+ images), by default under the user cache
    (``default_cache_dir``); reused while the source is unchanged."""
    if benchmark not in CONVERTERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {sorted(CONVERTERS)}")
    source = Path(source)
    if not source.is_file():
        raise MissingPathError(f"{benchmark}: no file at {source}")
    out = Path(out_dir) if out_dir is not None else default_cache_dir(benchmark, source)
    stamp = _stamp(benchmark, source)
    target, stamp_file = out / f"{benchmark}.jsonl", out / f"{benchmark}.stamp.json"
    if target.exists() and stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        return target
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = CONVERTERS[benchmark](source, out / "images")
    if not rows:
        raise ValueError(f"{benchmark}: {source} has no rows")
    _write_atomic(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    _write_atomic(stamp_file, json.dumps(stamp))
    return target


class BenchmarkDataModule(VQADataModule):
    """A benchmark for ``vlrl validate`` / ``vlrl test`` / ``vlrl predict``: converted once, then read as validation,
    test and (unless ``predict_data`` is given) prediction data.

    Args:
        benchmark: ``vlmevalkit`` (or its aliases ``mmbench``, ``mmstar``), ``mathvista``, ``mathvision`` or
            ``mathverse``.
        source: the benchmark file as published (TSV / JSON / JSONL).
        cache_dir: where the converted rows and images go (default: a folder under ``$VLRL_CACHE/benchmarks`` or
            ``~/.cache/vlrl/benchmarks``, keyed by the source file; never beside the source).
        kwargs: ``VQADataModule``'s other arguments (``model_name_or_path``, ``prompts``, ``loader``, ``predict_data``).
    """

    def __init__(self, benchmark: str, source: str, cache_dir: str | None = None, **kwargs: Any) -> None:
        if benchmark not in CONVERTERS:
            raise ValueError(f"unknown benchmark {benchmark!r}; choose from {sorted(CONVERTERS)}")
        super().__init__(**kwargs)
        self.benchmark, self.source = benchmark, source
        self.cache_dir = cache_dir  # None: the user cache, resolved at conversion (the source may not exist yet)

    def prepare_data(self) -> None:
        convert_benchmark(self.benchmark, self.source, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        rows = convert_benchmark(self.benchmark, self.source, self.cache_dir)
        self.hparams.val_data = self.hparams.test_data = str(rows)
        self.hparams.predict_data = self.hparams.predict_data or str(rows)  # vlrl predict: ids as vlrl-score reads
        super().setup(stage)
