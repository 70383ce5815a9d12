"""Rollouts with transformers ``generate`` on the live policy: no second copy, no weight sync.

Batched with left padding; stops at ``<|im_end|>`` / ``<|endoftext|>``; temperature, top-p, top-k and
max_new_tokens as configured. Slower than vLLM, but it runs anywhere the policy runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rollout.engine import (
    Rollout,
    RolloutEngine,
    SamplingConfig,
    completion_mask_from_ids,
    encode_prompts,
    end_token_ids,
    pad_left,
    pad_right,
)


class HFEngine(RolloutEngine):
    """Sampling with transformers ``generate`` on the live policy (see the module docstring).

    Args:
        generation_batch_size: rows generated per ``generate`` call (bounds memory; rows = prompts x G).
    """

    def __init__(self, generation_batch_size: int = 64) -> None:
        self.generation_batch_size = generation_batch_size
        self.policy: nn.Module | None = None
        self.processor: Any = None

    def setup(self, policy: nn.Module, processor: Any) -> None:
        self.policy, self.processor = policy, processor

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[str], images: Sequence[Sequence[Any]], n: int, sampling: SamplingConfig
    ) -> Rollout:
        if self.policy is None:
            raise RuntimeError("HFEngine.setup(policy, processor) must run before generate")
        tok = self.processor.tokenizer
        eos_ids = end_token_ids(tok)
        rows_prompts = [p for p in prompts for _ in range(n)]  # prompt-major
        rows_images = [im for im in images for _ in range(n)]
        device = next(self.policy.parameters()).device
        was_training = self.policy.training
        self.policy.eval()
        parts: dict[str, list[torch.Tensor]] = {"prompt_ids": [], "prompt_mask": [], "completion": [], "mm": []}
        pixel_values, grids = [], []
        try:
            for start in range(0, len(rows_prompts), self.generation_batch_size):
                enc = encode_prompts(self.processor, rows_prompts[start : start + self.generation_batch_size],
                                   rows_images[start : start + self.generation_batch_size])  # fmt: skip
                kwargs = dict(
                    max_new_tokens=sampling.max_new_tokens, eos_token_id=eos_ids, pad_token_id=tok.pad_token_id
                )
                if sampling.ignore_eos:
                    kwargs["min_new_tokens"] = sampling.max_new_tokens
                if sampling.temperature > 0:
                    kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                                  top_k=sampling.top_k if sampling.top_k > 0 else None)  # fmt: skip
                else:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                out = self.policy.generate(**{k: v.to(device) for k, v in enc.items()}, **kwargs)  # [b, P + C]
                width = enc["input_ids"].shape[1]
                parts["prompt_ids"].append(enc["input_ids"])
                parts["prompt_mask"].append(enc["attention_mask"])
                parts["completion"].append(out[:, width:].cpu())
                if "mm_token_type_ids" in enc:
                    parts["mm"].append(enc["mm_token_type_ids"])
                if "pixel_values" in enc:
                    pixel_values.append(enc["pixel_values"])
                    grids.append(enc["image_grid_thw"])
        finally:
            self.policy.train(was_training)
        completion_ids = pad_right(parts["completion"], tok.pad_token_id)  # [N, C]
        if completion_ids.shape[1] == 0:  # max_new_tokens 0: keep shapes valid
            completion_ids = torch.full((len(rows_prompts), 1), tok.pad_token_id)
        mask, truncated = completion_mask_from_ids(completion_ids, eos_ids)
        completion_ids = torch.where(mask.bool(), completion_ids, torch.full_like(completion_ids, tok.pad_token_id))
        texts = tok.batch_decode(completion_ids, skip_special_tokens=True)  # ids past the end are pad already
        model_inputs: dict[str, torch.Tensor] = {}
        if pixel_values:
            model_inputs["pixel_values"] = torch.cat(pixel_values)  # [patches of all rows, D]
            model_inputs["image_grid_thw"] = torch.cat(grids)  # [images of all rows, 3]
        if parts["mm"]:
            model_inputs["mm_token_type_ids"] = pad_left(parts["mm"], 0)  # [N, P]
        return Rollout(
            prompt_ids=pad_left(parts["prompt_ids"], tok.pad_token_id), prompt_mask=pad_left(parts["prompt_mask"], 0),
            completion_ids=completion_ids, completion_mask=mask, texts=texts, truncated=truncated,
            model_inputs=model_inputs,
        )  # fmt: skip
