"""A real rollout of the tiny model for tests that need one (log-prob forwards, rollout-batch slicing)."""

from __future__ import annotations

import torch
from PIL import Image

from lightning_modules.policy import load_policy
from rollout.engine import Rollout, SamplingConfig
from rollout.hf import HFEngine


def tiny_rollout(checkpoint, processor, questions: list[str], images: list[Image.Image], group_size: int,
                 max_new_tokens: int) -> tuple[torch.nn.Module, Rollout]:  # fmt: skip
    """The tiny model (float32) and ``group_size`` completions sampled at T 1 (seed 0) by the HF engine for each
    one-image prompt ``questions[i]`` about ``images[i]``."""
    model = load_policy(str(checkpoint), dtype="float32")
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
            add_generation_prompt=True,
            tokenize=False,
        )  # fmt: skip
        for question in questions
    ]
    engine = HFEngine()
    engine.setup(model, processor)
    torch.manual_seed(0)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=max_new_tokens)
    return model, engine.generate(prompts, [[image] for image in images], group_size, sampling)
