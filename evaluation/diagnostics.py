"""Shortcut diagnostics: does the model look at the image? (Visionary-R1's concern, measured during validation.)

1. image-blind accuracy: the same prompts with every image replaced by a uniform grey image of the same size (so
   the prompt keeps its image tokens and length); visual dependency = accuracy - image-blind accuracy. A model
   that answers from the question's wording alone has dependency near 0. With a format reward, the blind replies'
   format rate too: a model that breaks on the grey image (replies out of format) scores 0 image-blind and shows a
   high dependency without reading the image; a low blind format rate tells the two apart.
2. caption sufficiency: the share of the model's own captions from which the caption judge answers correctly
   (the caption reward's score), when a caption reward is configured.
3. reasoning length against correctness: mean ``<think>`` length (words) of right and wrong answers, and the share
   of right answers reached with less than ``short_words`` words of reasoning (a shortcut proxy).
Pure functions here; ``GRPOModule`` logs them as ``val/blind_accuracy``, ``val/visual_dependency``,
``val/blind_format_rate``, ``val/caption_sufficiency``, ``val/reasoning_words_correct``, ``val/reasoning_words_wrong``
and ``val/short_correct_share`` when ``shortcut_diagnostics`` is on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from rewards.parsing import extract_tag

BLANK = (128, 128, 128)


def blank_like(images: Sequence[Sequence[Any]]) -> list[list[Image.Image]]:
    """Each prompt's images replaced by uniform grey images of the same sizes (same image-token counts)."""
    return [[Image.new("RGB", image.size, BLANK) for image in row] for row in images]


def reasoning_words(text: str) -> int:
    """Words of reasoning: the ``<think>`` block when there is one, else the text before ``<answer>``."""
    think = extract_tag(text, "think")
    if think is None:
        think = text.split("<answer>")[0]
    return len(think.split())


def length_vs_correctness(
    texts: Sequence[str], correct: torch.Tensor, short_words: int
) -> dict[str, tuple[float, int]]:
    """``name -> (value, count)`` for reasoning length of right and wrong answers and the short-correct share;
    names with no rows to average are left out (count lets the caller weight batches)."""
    words = torch.tensor([reasoning_words(t) for t in texts], dtype=torch.float32)  # [n]
    right = correct >= 1.0  # [n] bool: fully correct
    out: dict[str, tuple[float, int]] = {}
    if right.any():
        out["reasoning_words_correct"] = (float(words[right].mean()), int(right.sum()))
        out["short_correct_share"] = (float((words[right] < short_words).float().mean()), int(right.sum()))
    if (~right).any():
        out["reasoning_words_wrong"] = (float(words[~right].mean()), int((~right).sum()))
    return out


def gather_tallies(tally: dict[str, list]) -> dict[str, list]:
    """``category -> [score sum, rows]`` summed over all ranks (every rank gets the merged tally); the local tally
    when not distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return tally
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, tally)
    merged: dict[str, list] = {}
    for part in parts:
        for key, (score, count) in part.items():
            total = merged.setdefault(key, [0.0, 0])
            total[0], total[1] = total[0] + score, total[1] + count
    return merged
