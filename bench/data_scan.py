"""Data scan speed: rows per second of the check every RL dataset runs when it is built (``datamodules.scan``).

Writes ``--rows`` RL rows (JSON Lines, default 100,000) pointing at ``--images`` small PNGs (default 300: rows share
images, as real datasets do; each distinct file is checked once) in a temporary folder, then builds the dataset as
``VQADataModule`` does (``VQADataset``, no tokenizer) and times, apart: the whole build (reading the table, problem
types, the scan) and the scan itself run again on the built table with a fresh image cache (reading the checked
columns, then every check: the image file's ``stat`` and header, the problem, the problem type, the solution). One
row is appended to ``bench/RESULTS.md``.

    vlrl bench data-scan                              # 100,000 rows, 300 images
    vlrl bench data-scan --rows 100000 --images 20000 # fewer rows per image: more files opened
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.results import append_result
from datamodules.config import PromptConfig
from datamodules.scan import scan_table
from datamodules.vqa import VQADataset

KINDS = (("multiple_choice", "<answer> B </answer>"), ("numerical", "<answer> 12 </answer>"), ("ocr", "STOP"))


def write_rows(folder: Path, rows: int, images: int, size: int) -> Path:
    """``images`` PNGs of ``size`` pixels square under ``folder/images`` and ``rows`` rows cycling through them."""
    (folder / "images").mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", (size, size), (i % 256, (i * 7) % 256, (i * 13) % 256)).save(folder / "images" / f"{i}.png")
    path = folder / "train.jsonl"
    with path.open("w") as f:
        for i in range(rows):
            kind, solution = KINDS[i % len(KINDS)]
            row = {"image": f"images/{i % images}.png", "problem": f"Question {i}?", "solution": solution}
            f.write(json.dumps({**row, "problem_type": kind}) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vlrl bench data-scan", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=300, help="distinct PNG files the rows point at")
    parser.add_argument("--image-size", type=int, default=56)
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = write_rows(Path(tmp), args.rows, args.images, args.image_size)
        start = time.perf_counter()
        dataset = VQADataset(path, None, PromptConfig(min_pixels=args.image_size**2, max_pixels=args.image_size**2))
        build = time.perf_counter() - start
        start = time.perf_counter()
        report = scan_table(dataset.table, dataset.scan_checks(), str(path))  # fresh checks: an empty image cache
        scan = time.perf_counter() - start
    assert not report.bad and report.rows == args.rows == len(dataset), report.counts()
    setting = f"{args.rows} RL rows (JSON Lines), {args.images} distinct {args.image_size}x{args.image_size} PNGs"
    result = (
        f"scan {scan:.2f} s ({args.rows / scan:,.0f} rows/s; the checks alone {report.seconds:.2f} s); "
        f"dataset build with the scan {build:.2f} s (table read included)"
    )
    print(result)
    if not args.no_record:
        command = "vlrl bench data-scan " + " ".join(sys.argv[1:] if argv is None else argv)
        append_result("data scan", setting, result, command.strip())


if __name__ == "__main__":
    main()
