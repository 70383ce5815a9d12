"""Format reward: 1 when a completion is exactly the template's blocks in order, else 0.

``template="caption"``: ``<info>..</info> <think>..</think> <answer>..</answer>`` (Visionary-R1).
``template="think"``: ``<think>..</think> <answer>..</answer>`` (R1 style, Vision-R1).
The blocks come from the template registry (``rewards.templates``), as the prompts' do; ``plain`` (a bare answer) has
no format to check and is refused.
Whitespace between and around blocks is free, content may span lines, and a block may be neither empty nor contain
the template's own tags (``rewards.parsing.parse_template``).

Visionary-R1's released format reward is ``re.fullmatch`` with ``re.DOTALL``, so multi-line blocks pass there as
here. It departs in the separators and the block contents: exactly one whitespace character between ``</info>``
and ``<think>`` and none around the whole text (a ``"\\n\\n"`` between blocks scores 0 there), while empty blocks
and extra or nested tags pass (``...<answer>1</answer><answer>2</answer>`` scores 1 there). Free separators carry no
meaning worth training; empty and repeated blocks leave the answer ambiguous, so they score 0 here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.base import Reward
from rewards.parsing import parse_template
from rewards.templates import get_tagged_template


class FormatReward(Reward):
    name = "format"

    def __init__(self, template: str = "caption") -> None:
        super().__init__()
        self.template = get_tagged_template(template).name

    def score(self, completions: Sequence[str], **batch: Sequence[Any]) -> list[float]:
        return [float(parse_template(text, self.template) is not None) for text in completions]
