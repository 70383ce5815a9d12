"""A real rollout of the tiny model for tests that need one (log-prob forwards, rollout-batch slicing)."""

from __future__ import annotations

import functools

import torch
from PIL import Image

from lightning_modules.policy import load_policy
from rollout.engine import VISION_TOKENS, Rollout, SamplingConfig, mask_vision_tokens
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


def policy_inputs(out: Rollout, tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A rollout's prompt + completion as the policy's inputs: ids [N, P+C], attention [N, P+C], mm_token_type_ids
    [N, P+C], and ``valid`` [N, C], the completion positions whose log-probs both sides computed from the same text.

    A random policy over the small task vocabulary samples a vision special token now and then (4 of 768 entries);
    fed back, an image-pad token claims image features that do not exist. As the rollout callback does, such tokens
    are replaced by padding; every position from the first one on is left out of ``valid``, since the policy then
    sees other text than the engine did."""
    vision_ids = tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
    completion_ids, kept, _ = mask_vision_tokens(
        out.completion_ids, out.completion_mask, vision_ids, tokenizer.pad_token_id
    )
    replaced = (kept != out.completion_mask).long().cumsum(1) > 0  # [N, C]: at or after a replaced token
    valid = out.completion_mask.bool() & ~replaced
    ids = torch.cat([out.prompt_ids, completion_ids], 1)
    attention = torch.cat([out.prompt_mask, out.completion_mask], 1)
    mm = torch.cat([out.model_inputs["mm_token_type_ids"], torch.zeros_like(completion_ids)], 1)
    assert valid.any(), "every sampled row starts with a vision token: sample more rows"
    return ids, attention, mm, valid


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def policy_tokenizer(policy) -> object:
    """The tokenizer saved beside the checkpoint ``policy`` was loaded from (LoRA-wrapped or sharded alike)."""
    return _tokenizer(policy.config._name_or_path)
