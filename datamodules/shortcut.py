"""A shortcut-prone synthetic benchmark: questions whose wording predicts the answer in training, and held-out
splits where that cue is absent, reversed, or where the scene is harder.

The question names the object ("What colour is the square?"). In the training split each shape has a cued colour
(circle -> red, square -> blue, triangle -> green); with probability ``cue_strength`` the asked shape is drawn in its
cued colour, otherwise in a uniformly drawn colour. A model can then score ``cue_strength + (1 - cue_strength) / 4``
on training questions without looking at the image. Held-out splits, each seeded apart from training:

- ``in_distribution``: the training distribution (same cue strength).
- ``cue_absent``: colour independent of the shape (uniform): the wording carries no information.
- ``cue_reversed``: the asked shape is never in its cued colour: answering from the wording is always wrong.
- ``hard``: 3-5 objects of different shapes and colours, cue absent, three question kinds: the colour of the named
  shape, how many shapes of a named colour, and which of two named shapes is larger.

Rows carry ``category`` (``cue_agrees`` / ``cue_disagrees`` for the one-object splits, the question kind for
``hard``), so ``vlrl validate``/``test`` report accuracy per category. Each row is drawn from its own seed, so any
split of any size is reproducible.

SFT targets (both templates) for a cold start are drawn from a separate ``cold_start`` stream at
``sft_cue_strength`` (the RL cue strength unless given). At 0 the cold start teaches the format and the chain of
thought with no prior from the wording, so whatever shortcut the policy has later, RL put there.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from datamodules.prompts import sharegpt_row
from datamodules.synthetic import (
    COLORS,
    LETTERS,
    SHAPES,
    SyntheticRow,
    _cells,
    _describe_scene,
    _draw_shape,
    _write_jsonl,
)

CUED_COLOR = {"circle": "red", "square": "blue", "triangle": "green"}
SPLITS = ("train", "in_distribution", "cue_absent", "cue_reversed", "hard")
COLD_START = "cold_start"  # the SFT rows' stream: drawn as "train" is, at its own cue strength
_SPLIT_SEED = {name: i for i, name in enumerate((*SPLITS, COLD_START))}  # each split draws from its own seed stream
_LISTING = " ".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(COLORS))


def _rng(seed: int, split: str, index: int) -> random.Random:
    return random.Random((seed * 7 + _SPLIT_SEED[split]) * 1_000_003 + index)


def _one_object_row(
    rng: random.Random, split: str, cue_strength: float, image_size: int, distractors: int = 0
) -> tuple[SyntheticRow, str]:
    shape = rng.choice(SHAPES)
    cued = CUED_COLOR[shape]
    if split == "cue_reversed":
        color = rng.choice([c for c in COLORS if c != cued])
    elif split == "cue_absent" or rng.random() >= cue_strength:
        color = rng.choice(list(COLORS))
    else:
        color = cued
    img = Image.new("RGB", (image_size, image_size), (255, 255, 255))
    letter = LETTERS[list(COLORS).index(color)]
    problem = f"What colour is the {shape} in the image? Options: {_LISTING}"
    reasoning = f"The {shape} is {color}, which is option {letter}."
    category = "cue_agrees" if color == cued else "cue_disagrees"
    if distractors:
        caption = _draw_with_distractors(img, rng, shape, color, distractors)
        return SyntheticRow(img, problem, letter, "multiple_choice", "shortcut_color", caption, reasoning), category
    pad = max(2, image_size // 28)
    side = rng.randint(image_size // 3, image_size - 2 * pad)
    x, y = rng.randint(pad, image_size - pad - side), rng.randint(pad, image_size - pad - side)
    _draw_shape(ImageDraw.Draw(img), shape, (x, y, x + side, y + side), COLORS[color])
    return SyntheticRow(img, problem, letter, "multiple_choice", "shortcut_color", f"A {color} {shape}.", reasoning), (
        category
    )


def _draw_with_distractors(img: Image.Image, rng: random.Random, shape: str, color: str, distractors: int) -> str:
    """Draw ``shape`` in ``color`` and ``distractors`` objects of the other shapes, each in a colour other than
    ``color``, in distinct grid cells; return the scene's caption. Naming the asked shape's colour then needs the
    shape bound to its colour, not only the colours present."""
    others = [s for s in SHAPES if s != shape]
    if not 0 < distractors <= len(others):
        raise ValueError(f"distractors must be in [0, {len(others)}] (one object per other shape), got {distractors}")
    objects = [(shape, color)] + [
        (s, rng.choice([c for c in COLORS if c != color])) for s in rng.sample(others, distractors)
    ]
    rng.shuffle(objects)
    draw = ImageDraw.Draw(img)
    pad = max(2, img.width // 28)
    for (name, fill), (x, y, cell) in zip(objects, _cells(img.width, rng, len(objects), grid=2)):
        _draw_shape(draw, name, (x + pad, y + pad, x + cell - pad, y + cell - pad), COLORS[fill])
    return _describe_scene([("", fill, name) for name, fill in objects])


def _hard_row(rng: random.Random, image_size: int) -> tuple[SyntheticRow, str]:
    k = rng.randint(3, 5)
    shapes = [rng.choice(SHAPES) for _ in range(k)]
    shapes[:3] = rng.sample(SHAPES, 3)  # every shape at least once, so each can be named
    colors = [rng.choice(list(COLORS)) for _ in range(k)]
    insets = [rng.choice((1, 4)) for _ in range(k)]  # 1: a large object, 4: a small one (cell // inset margin)
    img = Image.new("RGB", (image_size, image_size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    objects = []
    for shape, color, inset, (x, y, c) in zip(shapes, colors, insets, _cells(image_size, rng, k)):
        m = max(2, image_size // 28) if inset == 1 else c // 3
        _draw_shape(draw, shape, (x + m, y + m, x + c - m, y + c - m), COLORS[color])
        objects.append(("large" if inset == 1 else "small", color, shape))
    caption = _describe_scene(objects)
    kind = rng.choice(("color_of", "count_color", "larger"))
    unique = [s for s in SHAPES if shapes.count(s) == 1]
    if kind == "color_of" and unique:
        shape = rng.choice(unique)
        color = colors[shapes.index(shape)]
        letter = LETTERS[list(COLORS).index(color)]
        problem = f"What colour is the {shape} in the image? Options: {_LISTING}"
        return SyntheticRow(
            img,
            problem,
            letter,
            "multiple_choice",
            "shortcut_hard",
            caption,
            f"There is one {shape}; it is {color}, which is option {letter}.",
        ), kind
    if kind == "larger":
        named = [i for i in range(k) if shapes[i] in unique]  # objects their shape names unambiguously
        pairs = [(i, j) for i in named for j in named if i < j and insets[i] != insets[j]]
        if pairs:
            i, j = rng.choice(pairs)
            big = i if insets[i] == 1 else j
            letter = "A" if big == i else "B"
            problem = f"Which is larger in the image? Options: A. the {shapes[i]} B. the {shapes[j]}"
            return SyntheticRow(
                img,
                problem,
                letter,
                "multiple_choice",
                "shortcut_hard",
                caption,
                f"The {shapes[big]} is the larger one, which is option {letter}.",
            ), kind
    color = rng.choice(colors)
    n = colors.count(color)
    problem = f"How many {color} shapes are in the image?"
    return SyntheticRow(
        img, problem, str(n), "numerical", "shortcut_hard", caption, f"Counting the {color} shapes gives {n}."
    ), "count_color"


def make_shortcut_row(
    index: int, split: str, seed: int = 0, cue_strength: float = 0.9, image_size: int = 112, distractors: int = 0
) -> tuple[SyntheticRow, str]:
    """Row ``index`` of ``split`` (one of ``SPLITS`` or ``COLD_START``) and its category. Pure in its arguments.
    ``distractors`` (0-2) adds objects of the other shapes, in other colours, to the one-object splits."""
    if split not in (*SPLITS, COLD_START):
        raise ValueError(f"unknown shortcut split {split!r}; choose from {(*SPLITS, COLD_START)}")
    if not 0.0 <= cue_strength <= 1.0:
        raise ValueError(f"cue_strength must be in [0, 1], got {cue_strength}")
    rng = _rng(seed, split, index)
    if split == "hard":
        return _hard_row(rng, image_size)
    return _one_object_row(rng, split, cue_strength, image_size, distractors)


def write_shortcut_benchmark(
    out_dir: str | Path,
    n_train: int,
    n_eval: int,
    seed: int = 0,
    cue_strength: float = 0.9,
    image_size: int = 112,
    sft_templates: tuple[str, ...] = ("caption", "think"),
    distractors: int = 0,
    n_sft: int | None = None,
    sft_cue_strength: float | None = None,
) -> dict[str, Path]:
    """Write ``{split}.jsonl`` for every split (``n_train`` training rows, ``n_eval`` per held-out split), images under
    ``images/{split}/``, ``train_sft_{template}.jsonl`` (``n_sft`` rows of the cold-start stream, ``n_train`` unless
    given, at ``sft_cue_strength``, ``cue_strength`` unless given) and ``manifest.json``. Returns split -> RL file.
    Rewriting with the same arguments is skipped."""
    out = Path(out_dir)
    n_sft = n_train if n_sft is None else n_sft
    sft_cue_strength = cue_strength if sft_cue_strength is None else sft_cue_strength
    manifest = dict(
        n_train=n_train,
        n_eval=n_eval,
        seed=seed,
        cue_strength=cue_strength,
        image_size=image_size,
        sft_templates=list(sft_templates),
        cued_color=CUED_COLOR,
        distractors=distractors,
        n_sft=n_sft,
        sft_cue_strength=sft_cue_strength,
    )
    files = {split: out / f"{split}.jsonl" for split in SPLITS}
    stamp = out / "manifest.json"
    if stamp.exists() and json.loads(stamp.read_text()) == manifest and all(f.exists() for f in files.values()):
        return files
    for split in SPLITS:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n_train if split == "train" else n_eval):
            row, category = make_shortcut_row(i, split, seed, cue_strength, image_size, distractors)
            rel = f"images/{split}/{i:06d}.png"
            row.image.save(out / rel)
            solution = f"<answer> {row.answer} </answer>"
            rows.append(
                dict(
                    id=f"{split}-{i}",
                    image=rel,
                    problem=row.problem,
                    solution=solution,
                    problem_type=row.problem_type,
                    task=row.task,
                    category=category,
                )
            )
        _write_jsonl(files[split], rows)
    (out / "images" / COLD_START).mkdir(parents=True, exist_ok=True)
    sft: dict[str, list[dict[str, Any]]] = {t: [] for t in sft_templates}
    for i in range(n_sft):
        row, _ = make_shortcut_row(i, COLD_START, seed, sft_cue_strength, image_size, distractors)
        rel = f"images/{COLD_START}/{i:06d}.png"
        row.image.save(out / rel)
        for template in sft_templates:
            sft[template].append(sharegpt_row(row.problem, row.problem_type, [rel], template, row.target(template)))
    for template, rows in sft.items():
        _write_jsonl(out / f"train_sft_{template}.jsonl", rows)
    stamp.write_text(json.dumps(manifest))
    return files


def main() -> None:
    """``python -m datamodules.shortcut OUT_DIR [--train N] [--eval N] [--cue-strength P] [--seed S]``"""
    import argparse

    parser = argparse.ArgumentParser(description="Write the shortcut-prone synthetic benchmark (all splits).")
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=2048)
    parser.add_argument("--eval", type=int, default=128, help="rows per held-out split")
    parser.add_argument("--cue-strength", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=56)
    parser.add_argument("--distractors", type=int, default=0, choices=[0, 1, 2], help="other shapes beside the asked")
    args = parser.parse_args()
    files = write_shortcut_benchmark(
        args.out_dir, args.train, args.eval, args.seed, args.cue_strength, args.image_size, distractors=args.distractors
    )
    for split, path in files.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
