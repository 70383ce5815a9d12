"""Rollouts with transformers ``generate`` on the live policy: no second copy, no weight sync.

Batched with left padding; stops at ``<|im_end|>`` / ``<|endoftext|>``; temperature, top-p, top-k and
max_new_tokens as configured. Slower than vLLM, but it runs anywhere the policy runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from rollout.engine import (
    Rollout,
    RolloutEngine,
    SamplingConfig,
    completion_mask_from_ids,
    empty_rollout,
    encode_prompts,
    end_token_ids,
    pad_left,
    pad_right,
)
from rollout.weights import is_sharded, unshard_root


class _Done(StoppingCriteria):
    """Marks the rows from ``first`` on as finished at once: filler rows of a collective call, whose completions are
    dropped, would otherwise keep every rank stepping to ``max_new_tokens`` (ranks step until all rows are done)."""

    def __init__(self, first: int) -> None:
        self.first = first

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # [b]
        done[self.first :] = True
        return done


class HFEngine(RolloutEngine):
    """Sampling with transformers ``generate`` on the live policy (see the module docstring).

    Under FSDP on several ranks every forward all-gathers parameters with the other ranks, so the ranks must run the
    same forwards in step (``collective``): generation is synced across ranks (transformers' ``synced_gpus``: a
    rank that has finished keeps stepping until every rank has), every rank makes as many ``generate`` calls as the
    rank with the most rows (a rank short of rows generates for a filler prompt and drops it), and a call that has
    images on any rank has an image on every rank (so every rank runs the vision tower).

    Args:
        generation_batch_size: rows generated per ``generate`` call (bounds memory; rows = prompts x G).
    """

    def __init__(self, generation_batch_size: int = 64) -> None:
        self.generation_batch_size = generation_batch_size
        self.policy: nn.Module | None = None
        self.processor: Any = None

    def setup(self, policy: nn.Module, processor: Any) -> None:
        self.policy, self.processor = policy, processor

    @property
    def collective(self) -> bool:
        """Whether every rank must call ``generate`` together (an FSDP-sharded policy on several ranks), including a
        rank with nothing to generate (it calls with no prompts)."""
        return (
            self.policy is not None
            and is_sharded(self.policy)
            and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1
        )

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
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, eos_token_id=eos_ids, pad_token_id=tok.pad_token_id)
        if sampling.ignore_eos:
            kwargs["min_new_tokens"] = sampling.max_new_tokens
        if sampling.temperature > 0:
            kwargs.update(
                do_sample=True,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k if sampling.top_k > 0 else None,
            )
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        size = self.generation_batch_size
        calls = [
            (rows_prompts[s : s + size], rows_images[s : s + size], len(rows_prompts[s : s + size]))
            for s in range(0, len(rows_prompts), size)
        ]  # (prompts, images, real rows)
        if self.collective:
            kwargs["synced_gpus"] = True
            calls = self._aligned_calls(calls, device)
        was_training = self.policy.training
        self.policy.eval()
        sharded = is_sharded(self.policy)
        if sharded:  # FSDP: the root unit's weights (generate reaches the vision tower and embeddings directly)
            unshard_root(self.policy)
        parts: dict[str, list[torch.Tensor]] = {"prompt_ids": [], "prompt_mask": [], "completion": [], "mm": []}
        pixel_values, grids = [], []
        try:
            for call_prompts, call_images, real in calls:
                enc = encode_prompts(self.processor, call_prompts, call_images)
                stop = {"stopping_criteria": StoppingCriteriaList([_Done(real)])} if real < len(call_prompts) else {}
                out = self.policy.generate(**{k: v.to(device) for k, v in enc.items()}, **kwargs, **stop)  # [b, P+C]
                if real == 0:
                    continue  # a filler call, run only to keep in step with the other ranks
                if real < len(call_prompts):  # filler rows appended: encode the real rows alone
                    out, enc = (
                        out[:real, enc["input_ids"].shape[1] :],
                        encode_prompts(self.processor, call_prompts[:real], call_images[:real]),
                    )
                else:
                    out = out[:, enc["input_ids"].shape[1] :]
                parts["prompt_ids"].append(enc["input_ids"])
                parts["prompt_mask"].append(enc["attention_mask"])
                parts["completion"].append(out.cpu())
                if "mm_token_type_ids" in enc:
                    parts["mm"].append(enc["mm_token_type_ids"])
                if "pixel_values" in enc:
                    pixel_values.append(enc["pixel_values"])
                    grids.append(enc["image_grid_thw"])
        finally:
            self.policy.train(was_training)
            if sharded:
                self.policy.reshard()
        if not rows_prompts:
            return empty_rollout(tok.pad_token_id)
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
            prompt_ids=pad_left(parts["prompt_ids"], tok.pad_token_id),
            prompt_mask=pad_left(parts["prompt_mask"], 0),
            completion_ids=completion_ids,
            completion_mask=mask,
            texts=texts,
            truncated=truncated,
            model_inputs=model_inputs,
        )

    def _aligned_calls(self, calls: list[tuple[list, list, int]], device: torch.device) -> list[tuple[list, list, int]]:
        """``(prompts, images, real rows)`` per call, the same number of calls on every rank, and an image in a call
        wherever any rank's call has one: a rank short of calls adds filler calls (0 real rows), and a text-only call
        gets a filler row with an image appended. A collective (every rank)."""
        dist = torch.distributed
        count = torch.tensor([len(calls)], device=device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        has_image = torch.zeros(int(count), dtype=torch.long, device=device)  # [calls]
        for i, (_, call_images, _) in enumerate(calls):
            has_image[i] = int(any(len(row) for row in call_images))
        dist.all_reduce(has_image, op=dist.ReduceOp.MAX)
        aligned = []
        for i, needs_image in enumerate(has_image.tolist()):
            call_prompts, call_images, real = calls[i] if i < len(calls) else ([], [], 0)
            if real == 0 or (needs_image and not any(len(row) for row in call_images)):
                filler_prompt, filler_images = self._filler(bool(needs_image))
                call_prompts, call_images = [*call_prompts, filler_prompt], [*call_images, filler_images]
            aligned.append((call_prompts, call_images, real))
        return aligned

    def _filler(self, with_image: bool) -> tuple[str, list[Any]]:
        """A one-row prompt (with a blank image when ``with_image``) whose completion is dropped."""
        from PIL import Image

        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": "."}]
        text = self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        return text, [Image.new("RGB", (28, 28))] if with_image else []
