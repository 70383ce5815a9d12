"""A real rollout of the tiny model for tests that need one (log-prob forwards, rollout-batch slicing)."""

from __future__ import annotations

import functools

import torch
from PIL import Image

from lightning_modules.logprobs import completion_logps
from lightning_modules.policy import load_policy
from rollout.batch import RolloutBatch, parity_batch
from rollout.engine import Rollout, SamplingConfig
from rollout.hf import HFEngine


def tiny_rollout(
    checkpoint, processor, questions: list[str], images: list[Image.Image], group_size: int, max_new_tokens: int
) -> tuple[torch.nn.Module, Rollout]:
    """The tiny model (float32) and ``group_size`` completions sampled at T 1 (seed 0) by the HF engine for each
    one-image prompt ``questions[i]`` about ``images[i]``."""
    model = load_policy(str(checkpoint), dtype="float32")
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for question in questions
    ]
    engine = HFEngine()
    engine.setup(model, processor)
    torch.manual_seed(0)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=max_new_tokens)
    return model, engine.generate(prompts, [[image] for image in images], group_size, sampling)


def policy_inputs(out: Rollout, tokenizer) -> tuple[RolloutBatch, torch.Tensor]:
    """``rollout.batch.parity_batch``, checked to leave positions to compare: a random policy over the small task
    vocabulary samples a vision special token now and then (4 of 768 entries)."""
    batch, valid = parity_batch(out, tokenizer)
    assert valid.any(), "every sampled row starts with a vision token: sample more rows"
    return batch, valid


def policy_logps(policy, out: Rollout, tokenizer, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's log-probs [N, C] of a rollout's completion tokens (the one-row-per-completion forward of
    ``RolloutBatch.rows``), and ``valid`` [N, C] (see ``policy_inputs``)."""
    batch, valid = policy_inputs(out, tokenizer)
    rows = batch.rows(0, batch.num_rows)
    with torch.no_grad():
        logps, _ = completion_logps(
            policy,
            rows["input_ids"],
            rows["attention_mask"],
            batch.completion_length,
            rows.get("pixel_values"),
            rows.get("image_grid_thw"),
            temperature=temperature,
            mm_token_type_ids=rows["mm_token_type_ids"],
        )
    return logps, valid


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def policy_tokenizer(policy) -> object:
    """The tokenizer saved beside the checkpoint ``policy`` was loaded from (LoRA-wrapped or sharded alike)."""
    return _tokenizer(policy.config._name_or_path)
