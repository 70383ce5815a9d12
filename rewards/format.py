"""Format reward: 1 when a completion is exactly the template's blocks in order, else 0.

``template="caption"``: ``<info>..</info> <think>..</think> <answer>..</answer>`` (Visionary-R1).
``template="think"``: ``<think>..</think> <answer>..</answer>`` (R1 style, Vision-R1).
Whitespace between blocks is free, content may span lines, nothing may come before or after, and a block may not
contain the template's own tags. The released Visionary-R1 regex matched without DOTALL, so a caption that ran
over two lines scored 0; here it scores 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.base import Reward
from rewards.parsing import TEMPLATES, parse_template


class FormatReward(Reward):
    name = "format"

    def __init__(self, template: str = "caption") -> None:
        super().__init__()
        if template not in TEMPLATES:
            raise ValueError(f"unknown template {template!r}; choose from {sorted(TEMPLATES)}")
        self.template = template

    def score(self, completions: Sequence[str], **batch: Sequence[Any]) -> list[float]:
        return [float(parse_template(text, self.template) is not None) for text in completions]
