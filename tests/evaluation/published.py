"""Writers for tiny benchmark files in the shapes their projects publish, and for ``vlrl predict`` output."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image


def png(color: str = "white") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def b64_png(color: str = "white") -> str:
    return base64.b64encode(png(color)).decode()


def write_images(folder: Path, paths: list[str]) -> None:
    """An 8 x 8 PNG at each relative path (the JSON benchmarks name their images by path)."""
    for path in paths:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(png())


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join("\t".join(row) for row in [header, *rows]) + "\n")
    return path


def write_predictions(path: Path, completions: dict[str, str]) -> Path:
    """One line per prediction, as ``vlrl predict``'s ``JSONLPredictionWriter`` writes them
    (``evaluation/records.py``: id, problem, completion, answer, completion_tokens, truncated)."""
    records: list[dict[str, Any]] = [
        {"id": id, "problem": "...", "completion": text, "answer": None, "completion_tokens": 7, "truncated": False}
        for id, text in completions.items()
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path
