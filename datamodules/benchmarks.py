"""Evaluation benchmarks read in the shapes they are published in, converted once to the project's RL rows.

Each converter turns a local file into rows ``{id, image, problem, solution, problem_type, category, choices,
precision}`` (images written as PNG files beside the converted JSONL), which ``VQADataModule`` then reads like any
other data; ``category`` feeds per-category accuracy, ``choices`` lets an answer given as an option's text count as
its letter, ``precision`` scores numbers at the stated decimal places.

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
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from datamodules.vqa import VQADataModule

LETTERS = "ABCDEFGHI"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() in ("", "nan")


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
            where = f"{source} row {i}"
            if _missing(raw.get("question")) or _missing(raw.get("answer")) or _missing(raw.get("image")):
                raise ValueError(f"{where}: needs question, answer and image columns with values")
            options = [raw[letter] for letter in LETTERS if letter in raw and not _missing(raw[letter])]
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
        options = [str(o) for o in rec.get("options") or []]
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


def convert_benchmark(benchmark: str, source: str | Path, out_dir: str | Path) -> Path:
    """Convert ``source`` once into ``out_dir/<benchmark>.jsonl`` (+ images); reused while the source is unchanged."""
    if benchmark not in CONVERTERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {sorted(CONVERTERS)}")
    source, out = Path(source), Path(out_dir)
    if not source.is_file():
        raise FileNotFoundError(f"{benchmark}: no file at {source}")
    stat = source.stat()
    stamp = {"benchmark": benchmark, "source": str(source.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}
    target, stamp_file = out / f"{benchmark}.jsonl", out / f"{benchmark}.stamp.json"
    if target.exists() and stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        return target
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = CONVERTERS[benchmark](source, out / "images")
    if not rows:
        raise ValueError(f"{benchmark}: {source} has no rows")
    target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    stamp_file.write_text(json.dumps(stamp))
    return target


class BenchmarkDataModule(VQADataModule):
    """A benchmark for ``vlrl validate`` / ``vlrl test``: converted once, then read as validation and test data.

    Args:
        benchmark: ``vlmevalkit`` (or its aliases ``mmbench``, ``mmstar``), ``mathvista`` or ``mathvision``.
        source: the benchmark file as published (TSV / JSON / JSONL).
        cache_dir: where the converted rows and images go (default: ``<source folder>/vlrl_<benchmark>``).
        Other arguments as ``VQADataModule`` (template, pixels, batch sizes, limit_val ...).
    """

    def __init__(self, benchmark: str, source: str, cache_dir: str | None = None, **kwargs: Any) -> None:
        if benchmark not in CONVERTERS:
            raise ValueError(f"unknown benchmark {benchmark!r}; choose from {sorted(CONVERTERS)}")
        super().__init__(**kwargs)
        self.benchmark, self.source = benchmark, source
        self.cache_dir = cache_dir or str(Path(source).parent / f"vlrl_{benchmark}")

    def prepare_data(self) -> None:
        convert_benchmark(self.benchmark, self.source, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        rows = convert_benchmark(self.benchmark, self.source, self.cache_dir)
        self.hparams.val_data = self.hparams.test_data = str(rows)
        super().setup(stage)
