"""Test-side helpers that observe a real run: a reward that tells completions apart, and weight snapshots."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn

from rewards.base import Reward


class TextChecksumReward(Reward):
    """A deterministic score in [0, 1) from each completion's text (CRC32). A random-weight model scores 0 on every
    real reward, so its groups carry no advantage and GRPO's step would move nothing; this reward gives different
    completions different scores, so the policy gradient is non-zero and the optimizer step can be observed."""

    name = "checksum"

    def score(self, completions: Sequence[str], **batch: Sequence[Any]) -> list[float]:
        return [(zlib.crc32(text.encode()) % 1000) / 1000.0 for text in completions]


class AlternatingReward(TextChecksumReward):
    """``TextChecksumReward`` on odd calls, 0 for every completion on even ones: under dynamic sampling, a pool with
    informative groups (an update) then one with none (no update, what a policy that solves its prompts meets)."""

    name = "alternating"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def score(self, completions: Sequence[str], **batch: Sequence[Any]) -> list[float]:
        self.calls += 1
        return super().score(completions, **batch) if self.calls % 2 else [0.0] * len(completions)


def transformer_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trainable weights of the decoder layers and vision blocks (the embedding matrix is left out:
    the rows of tokens a batch never uses get no gradient whatever the precision)."""
    return {
        name: p.detach().clone()
        for name, p in model.named_parameters()
        if p.requires_grad and (".layers." in name or ".blocks." in name)
    }


def moved_fraction(before: dict[str, torch.Tensor], model: nn.Module) -> float:
    """Share of the elements in ``before`` whose value differs in ``model`` now."""
    params = dict(model.named_parameters())
    changed = sum(int((params[name].detach() != value).sum()) for name, value in before.items())
    total = sum(value.numel() for value in before.values())
    return changed / max(1, total)


def image_question_inputs(processor: Any) -> tuple[dict[str, torch.Tensor], int]:
    """One chat-formatted question about a red 56x56 image, answered "red circle": the processor's model inputs and
    the completion's length in tokens."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[prompt + "red circle"], images=[Image.new("RGB", (56, 56), "red")], return_tensors="pt")
    return enc, len(processor.tokenizer("red circle", add_special_tokens=False)["input_ids"])
