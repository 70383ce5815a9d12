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

Use ``BenchmarkDataModule(benchmark="mmbench" | "mmstar" | "vlmevalkit" | "mathvista" | "mathvision", source=FILE)``
in ``vlrl validate|test`` configs (``configs/eval/``).
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


def vlmevalkit_rows(source: Path, images: Path) -> list[dict[str, Any]]:
    csv.field_size_limit(sys.maxsize)  # base64 images are long fields
    rows = []
    with source.open(newline="") as f:
        for i, raw in enumerate(csv.DictReader(f, delimiter="\t")):
            where = f"{source} row index {i}"
            if _missing(raw.get("question")) or _missing(raw.get("answer")) or _missing(raw.get("image")):
                raise ValueError(f"{where}: needs question, answer and image columns with values")
            options = [raw[letter] for letter in LETTERS if letter in raw and not _missing(raw[letter])]
            options = strip_option_labels(options)
            hint = "" if _missing(raw.get("hint")) else raw["hint"].strip() + "\n"
            problem = hint + raw["question"].strip() + (f"\n{options_block(options)}" if options else "")
            category = raw.get("category") if not _missing(raw.get("category")) else raw.get("l2-category")
            rows.append({
                "id": str(raw.get("index", i)), "image": _save_image(raw["image"], images, where), "problem": problem,
                "solution": raw["answer"].strip(), "problem_type": "multiple_choice" if options else "free_form",
                "category": None if _missing(category) else str(category), "choices": options or None,
                "precision": None,
            })  # fmt: skip
    return rows


def _json_records(source: Path) -> list[dict[str, Any]]:
    if source.suffix == ".jsonl":
        return [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    data = json.loads(source.read_text())
    return list(data.values()) if isinstance(data, dict) else list(data)


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
        rows.append({
            "id": str(rec.get("pid", i)), "image": _image_path(rec["image"], source, images, where), "problem": problem,
            "solution": solution, "problem_type": kind, "category": meta.get("category") or meta.get("task"),
            "choices": choices, "precision": None if _missing(precision) else int(float(precision)),
        })  # fmt: skip
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
        rows.append({
            "id": str(rec.get("id", i)), "image": _image_path(rec["image"], source, images, where), "problem": problem,
            "solution": str(rec["answer"]), "problem_type": kind, "category": rec.get("subject"),
            "choices": options or None, "precision": None,
        })  # fmt: skip
    return rows


CONVERTERS: dict[str, Callable[[Path, Path], list[dict[str, Any]]]] = {
    "vlmevalkit": vlmevalkit_rows, "mmbench": vlmevalkit_rows, "mmstar": vlmevalkit_rows,
    "mathvista": mathvista_rows, "mathvision": mathvision_rows,
}  # fmt: skip


def _stamp(benchmark: str, source: Path) -> dict[str, Any]:
    stat = source.stat()
    return {"benchmark": benchmark, "source": str(source.resolve()), "size": stat.st_size, "mtime": stat.st_mtime,
            "version": CONVERSION_VERSION}  # fmt: skip


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
        raise FileNotFoundError(f"{benchmark}: no file at {source}")
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
    """A benchmark for ``vlrl validate`` / ``vlrl test``: converted once, then read as validation and test data.

    Args:
        benchmark: ``vlmevalkit`` (or its aliases ``mmbench``, ``mmstar``), ``mathvista`` or ``mathvision``.
        source: the benchmark file as published (TSV / JSON / JSONL).
        cache_dir: where the converted rows and images go (default: a folder under ``$VLRL_CACHE/benchmarks`` or
            ``~/.cache/vlrl/benchmarks``, keyed by the source file; never beside the source).
        kwargs: other arguments as ``VQADataModule`` (template, pixels, batch sizes, limit_val ...).
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
        super().setup(stage)
