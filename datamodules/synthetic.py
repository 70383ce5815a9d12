"""A synthetic visual reasoning task rendered with PIL: the embedded default for the demo and the tests.

Each row is drawn from a per-row seed, so any row can be rebuilt alone and datasets of any size are reproducible.
Answers are exact and uniformly distributed, so the question text alone gives chance accuracy: the image must be
looked at. Tasks and their problem types:

- ``shape_color``     multiple_choice  "What colour is the shape?" A-D colours (one shape: the easiest task)
- ``count``           numerical        "How many circles are in the image?"              (1-4 of the asked shape)
- ``largest_color``   multiple_choice  "What colour is the largest shape?" A-D colours
- ``taller_bar``      multiple_choice  "Which bar is taller?" A. left / B. right
- ``digit_sum``       math             "What is the sum of the two digits?"
- ``read_word``       ocr              "What word is written in the image?"
- ``describe``        free_form        "Name the colour and shape of the object."

Each row also carries chain-of-thought targets for cold-start SFT in both templates (``caption``: ``<info>``
description, ``<think>`` reasoning, ``<answer>``; ``think``: ``<think>`` then ``<answer>``), written from the scene
the row was drawn from, so the description is always correct.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from datamodules.prompts import sharegpt_row
from rewards.templates import get_template

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}
SHAPES = ("circle", "square", "triangle")
WORDS = ("cat", "sun", "box", "map", "pen", "cup", "key", "owl", "jam", "fig", "hat", "bus")
TASKS: dict[str, str] = {
    "shape_color": "multiple_choice",
    "count": "numerical",
    "largest_color": "multiple_choice",
    "taller_bar": "multiple_choice",
    "digit_sum": "math",
    "read_word": "ocr",
    "describe": "free_form",
}
LETTERS = "ABCD"


@dataclass
class SyntheticRow:
    image: Image.Image
    problem: str
    answer: str
    problem_type: str
    task: str
    caption: str  # a correct description of the image
    reasoning: str  # steps from the description to the answer

    def target(self, template: str) -> str:
        """The chain-of-thought completion for cold-start SFT in ``template`` ("caption", "think" or "plain"): the
        description in ``<info>`` when the template has that block, else at the start of ``<think>``."""
        spec = get_template(template)
        think = self.reasoning if "info" in spec.blocks else f"{self.caption} {self.reasoning}"
        return spec.render({"info": self.caption, "think": think, "answer": self.answer})


def _plural(shape: str, n: int) -> str:
    return shape if n == 1 else shape + "s"


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color: tuple[int, int, int]):
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=color)


def _cells(size: int, rng: random.Random, k: int, grid: int = 3) -> list[tuple[int, int, int]]:
    """k distinct grid cells as (x, y, cell_size)."""
    cell = size // grid
    picks = rng.sample(range(grid * grid), k)
    return [((p % grid) * cell, (p // grid) * cell, cell) for p in picks]


def _describe_scene(objects: Sequence[tuple[str, str, str]]) -> str:
    """objects: (size word, colour, shape) -> 'The image shows a large blue square and 2 red circles ...'"""
    counts: dict[tuple[str, str, str], int] = {}
    for obj in objects:
        counts[obj] = counts.get(obj, 0) + 1
    parts = [f"{'a' if n == 1 else n} {s + ' ' if s else ''}{c} {_plural(sh, n)}" for (s, c, sh), n in counts.items()]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"The image shows {listed} on a white background."


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def make_row(index: int, seed: int = 0, image_size: int = 112, tasks: Sequence[str] = tuple(TASKS)) -> SyntheticRow:
    """Row ``index`` of the dataset with ``seed``: the same arguments always give the same row."""
    rng = random.Random(seed * 1_000_003 + index)
    task = tasks[index % len(tasks)]
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; choose from {sorted(TASKS)}")
    img = Image.new("RGB", (image_size, image_size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    pad = max(2, image_size // 28)

    if task == "shape_color":
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        side = rng.randint(image_size // 3, image_size - 2 * pad)
        x, y = rng.randint(pad, image_size - pad - side), rng.randint(pad, image_size - pad - side)
        _draw_shape(draw, shape, (x, y, x + side, y + side), COLORS[color])
        letter = LETTERS[list(COLORS).index(color)]
        listing = " ".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(COLORS))
        problem = f"What colour is the shape in the image? Options: {listing}"
        reasoning = f"The shape is {color}, which is option {letter}."
        return SyntheticRow(img, problem, letter, "multiple_choice", task, f"A {color} {shape}.", reasoning)

    if task == "count":
        target = rng.choice(SHAPES)
        n_target = rng.randint(1, 4)
        others = [s for s in SHAPES if s != target]
        n_other = rng.randint(0, 8 - n_target)
        kinds = [target] * n_target + [rng.choice(others) for _ in range(n_other)]
        rng.shuffle(kinds)
        objects = []
        for shape, (x, y, c) in zip(kinds, _cells(image_size, rng, len(kinds))):
            color = rng.choice(list(COLORS))
            _draw_shape(draw, shape, (x + pad, y + pad, x + c - pad, y + c - pad), COLORS[color])
            objects.append(("", color, shape))
        problem = f"How many {target}s are in the image?"
        reasoning = f"Counting the {target}s in the image gives {n_target}."
        return SyntheticRow(img, problem, str(n_target), "numerical", task, _describe_scene(objects), reasoning)

    if task == "largest_color":
        colors = rng.sample(list(COLORS), 3)
        shapes = [rng.choice(SHAPES) for _ in range(3)]
        cells = _cells(image_size, rng, 3)
        objects = []
        for i, (color, shape, (x, y, c)) in enumerate(zip(colors, shapes, cells)):
            inset = pad if i == 0 else c // 3  # the first object is the large one
            _draw_shape(draw, shape, (x + inset, y + inset, x + c - inset, y + c - inset), COLORS[color])
            objects.append(("large" if i == 0 else "small", color, shape))
        options = list(COLORS)
        letter = LETTERS[options.index(colors[0])]
        listing = " ".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(options))
        problem = f"What colour is the largest shape in the image? Options: {listing}"
        reasoning = f"The largest shape is the {colors[0]} {shapes[0]}. {colors[0].capitalize()} is option {letter}."
        return SyntheticRow(img, problem, letter, "multiple_choice", task, _describe_scene(objects), reasoning)

    if task == "taller_bar":
        heights = rng.sample(range(image_size // 6, image_size - 2 * pad, max(1, image_size // 14)), 2)
        width = image_size // 4
        for i, h in enumerate(heights):
            x0 = image_size // 6 + i * (image_size // 2)
            draw.rectangle((x0, image_size - pad - h, x0 + width, image_size - pad), fill=COLORS["blue"])
        taller = 0 if heights[0] > heights[1] else 1
        side = ("left", "right")[taller]
        words = ["taller" if heights[0] > heights[1] else "shorter", "taller" if taller == 1 else "shorter"]
        problem = "Which bar in the image is taller? Options: A. the left bar B. the right bar"
        caption = f"The image shows two blue bars; the left bar is {words[0]} than the right bar."
        reasoning = f"The {side} bar is taller, which is option {'AB'[taller]}."
        return SyntheticRow(img, problem, "AB"[taller], "multiple_choice", task, caption, reasoning)

    if task == "digit_sum":
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        font = _font(image_size // 3)
        draw.text((image_size // 8, image_size // 3), str(a), fill=(0, 0, 0), font=font)
        draw.text((image_size * 5 // 8, image_size // 3), str(b), fill=(0, 0, 0), font=font)
        problem = "What is the sum of the two digits shown in the image?"
        caption = f"The image shows the digit {a} on the left and the digit {b} on the right."
        reasoning = f"{a} + {b} = {a + b}."
        return SyntheticRow(img, problem, str(a + b), "math", task, caption, reasoning)

    if task == "read_word":
        word = rng.choice(WORDS)
        font = _font(image_size // 4)
        draw.text((image_size // 6, image_size // 3), word, fill=(0, 0, 0), font=font)
        problem = "What word is written in the image?"
        caption = f'The image shows the word "{word}" written in black letters.'
        reasoning = f"The written word is {word}."
        return SyntheticRow(img, problem, word, "ocr", task, caption, reasoning)

    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    m = image_size // 5
    _draw_shape(draw, shape, (m, m, image_size - m, image_size - m), COLORS[color])
    problem = "Name the colour and the shape of the object in the image."
    reasoning = f"The object is a {color} {shape}."
    return SyntheticRow(
        img, problem, f"{color} {shape}", "free_form", task, _describe_scene([("", color, shape)]), reasoning
    )


def write_synthetic_dataset(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    split: str = "train",
    image_size: int = 112,
    tasks: Sequence[str] = tuple(TASKS),
    sft_templates: Sequence[str] = ("caption", "think"),
) -> Path:
    """Write ``{split}.jsonl`` (RL rows: image, problem, solution, problem_type, task) and
    ``{split}_sft_{template}.jsonl`` (ShareGPT conversations) plus PNG images under ``out_dir``.

    Returns the RL file's path. Rewriting with the same arguments is skipped (a manifest records them).
    """
    out = Path(out_dir)
    rl_file = out / f"{split}.jsonl"
    manifest = dict(n=n, seed=seed, image_size=image_size, tasks=list(tasks), sft_templates=list(sft_templates))
    stamp = out / f".{split}_manifest.json"
    if rl_file.exists() and stamp.exists() and json.loads(stamp.read_text()) == manifest:
        return rl_file
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    rl_rows: list[dict[str, Any]] = []
    sft_rows: dict[str, list[dict[str, Any]]] = {t: [] for t in sft_templates}
    for i in range(n):
        row = make_row(i, seed, image_size, tasks)
        rel = f"images/{split}/{i:06d}.png"
        tmp = out / f"{rel}.{os.getpid()}.tmp.png"
        row.image.save(tmp)
        tmp.replace(out / rel)  # whole or not at all: another node's process may read it meanwhile
        solution = f"<answer> {row.answer} </answer>"
        rl_rows.append(
            dict(
                id=f"{split}-{i}",
                image=rel,
                problem=row.problem,
                solution=solution,
                problem_type=row.problem_type,
                task=row.task,
            )
        )
        for template in sft_templates:
            sft_rows[template].append(
                sharegpt_row(row.problem, row.problem_type, [rel], template, row.target(template))
            )
    _write_jsonl(rl_file, rl_rows)
    for template, rows in sft_rows.items():
        _write_jsonl(out / f"{split}_sft_{template}.jsonl", rows)
    stamp.write_text(json.dumps(manifest))
    return rl_file


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    # a temporary name of this process's own: the local rank 0 of every node prepares the data, and on a shared
    # file system (or two "nodes" on one machine) two writers of the same file must not rename each other's
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)


def main() -> None:
    """``python -m datamodules.synthetic OUT_DIR [--train N] [--val N] [--seed S] [--image-size PX]``"""
    import argparse

    parser = argparse.ArgumentParser(description="Write the synthetic visual reasoning dataset (RL + SFT files).")
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=1024)
    parser.add_argument("--val", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=112)
    args = parser.parse_args()
    for split, n, seed in (("train", args.train, args.seed), ("val", args.val, args.seed + 10_000)):
        path = write_synthetic_dataset(args.out_dir, n, seed, split, args.image_size)
        print(f"wrote {n} {split} rows to {path}")


if __name__ == "__main__":
    main()
