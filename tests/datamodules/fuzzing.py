"""Malformed RL rows for the fuzz and soak tests: each bad kind must become a counted skip (or, without
``skip_bad_rows``, an error naming the row); each odd-but-valid kind must load."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path
from typing import Any

from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A few bytes whose header claims 1.6 G pixels: opening it must fail fast, not allocate."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 16))


def write_odd_images(folder: Path) -> dict[str, str]:
    """Files for every image kind: name -> relative path."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "corrupt": b"definitely not an image",
        "bomb": bomb_png(),
    }
    good = Image.new("RGB", (56, 56), (220, 40, 40))
    buf = folder / "good.png"
    good.save(buf)
    files["truncated"] = buf.read_bytes()[: len(buf.read_bytes()) // 2]
    for name, data in files.items():
        (folder / f"{name}.png").write_bytes(data)
    Image.new("RGB", (1, 400), (0, 0, 255)).save(folder / "sliver.png")  # aspect ratio 400: unusable
    Image.new("RGB", (3, 3), (0, 255, 0)).save(folder / "tiny.png")  # smaller than one patch: upscaled
    Image.new("RGB", (2000, 1500), (0, 0, 255)).save(folder / "large.png")  # downscaled
    Image.new("L", (56, 56), 128).save(folder / "gray.png")
    Image.new("RGBA", (56, 56), (0, 0, 255, 100)).save(folder / "rgba.png")
    Image.new("P", (56, 56), 3).save(folder / "palette.png")
    Image.new("I;16", (56, 56), 30000).save(folder / "sixteen_bit.png")
    Image.new("CMYK", (56, 56), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    return {p.stem: f"{folder.name}/{p.name}" for p in folder.iterdir()}


def _good(images: dict[str, str], image: str = "good") -> dict[str, Any]:
    return {
        "image": images[image],
        "problem": "What colour is the shape?",
        "solution": "<answer> A </answer>",
        "problem_type": "multiple_choice",
    }


def bad_row(kind: str, images: dict[str, str]) -> dict[str, Any]:
    row = _good(images)
    if kind == "missing_file":
        row["image"] = "images/nowhere.png"
    elif kind in ("corrupt", "truncated", "bomb", "sliver"):
        row["image"] = images[kind]
    elif kind == "image_wrong_type":
        row["image"] = 42
    elif kind == "missing_solution":
        del row["solution"]
    elif kind == "empty_problem":
        row["problem"] = "   "
    elif kind == "problem_not_text":
        row["problem"] = 123
    elif kind == "unknown_problem_type":
        row["problem_type"] = "astrology"
    elif kind == "null_problem_type":
        row["problem_type"] = None
    else:
        raise ValueError(kind)
    return row


BAD_KINDS = (
    "missing_file",
    "corrupt",
    "truncated",
    "bomb",
    "sliver",
    "image_wrong_type",
    "missing_solution",
    "empty_problem",
    "problem_not_text",
    "unknown_problem_type",
    "null_problem_type",
)
ODD_GOOD_IMAGES = ("tiny", "large", "gray", "rgba", "palette", "sixteen_bit", "cmyk")


def fuzzed_rows(
    n: int, bad_rate: float, images: dict[str, str], seed: int = 0
) -> tuple[list[dict], dict[str, int], set[str]]:
    """``n`` rows (ids ``row-<i>``), each bad with probability ``bad_rate`` (kind drawn uniformly); returns the rows,
    the injected count per kind and the bad rows' ids."""
    rng = random.Random(seed)
    rows, injected, bad = [], {}, set()
    for i in range(n):
        if rng.random() < bad_rate:
            kind = rng.choice(BAD_KINDS)
            row = bad_row(kind, images)
            injected[kind] = injected.get(kind, 0) + 1
            bad.add(f"row-{i}")
        else:
            row = _good(images, rng.choice(("good", *ODD_GOOD_IMAGES)))
        row["id"] = f"row-{i}"
        rows.append(row)
    return rows, injected, bad
