"""Rollouts with transformers ``generate`` on the live policy: no second copy, no weight sync.

Batched with left padding; stops at ``<|im_end|>`` / ``<|endoftext|>``; temperature, top-p, top-k and
max_new_tokens as configured. Slower than vLLM, but it runs anywhere the policy runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from rollout.engine import (
    PROMPT_MODEL_INPUTS,
    Rollout,
    RolloutEngine,
    SamplingConfig,
    StepShape,
    completion_mask_from_ids,
    empty_rollout,
    encode_prompts,
    end_token_ids,
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


def _generate_kwargs(sampling: SamplingConfig, eos_ids: list[int], pad_token_id: int) -> dict[str, Any]:
    """transformers ``generate`` arguments for ``sampling``: stop at the end tokens, sample or decode greedily."""
    kwargs: dict[str, Any] = dict(
        max_new_tokens=sampling.max_new_tokens, eos_token_id=eos_ids, pad_token_id=pad_token_id
    )
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
    return kwargs


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

    def setup(self, policy: nn.Module, processor: Any, step: StepShape | None = None) -> None:
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
        kwargs = _generate_kwargs(sampling, eos_ids, tok.pad_token_id)
        size = self.generation_batch_size
        calls = [
            (rows_prompts[s : s + size], rows_images[s : s + size], len(rows_prompts[s : s + size]))
            for s in range(0, len(rows_prompts), size)
        ]  # (prompts, images, real rows)
        if self.collective:
            kwargs["synced_gpus"] = True
            calls = self._aligned_calls(calls, device)
        completions = self._run_calls(calls, kwargs, device)
        if not prompts:
            return empty_rollout(tok.pad_token_id, n)
        return self._rollout(prompts, images, n, completions, eos_ids)

    def _run_calls(
        self, calls: list[tuple[list, list, int]], kwargs: dict[str, Any], device: torch.device
    ) -> list[torch.Tensor]:
        """The sampled ids [real rows, C_call] of each ``(prompts, images, real rows)`` call (filler rows and calls
        dropped), with the policy in eval mode and an FSDP root's own weights gathered meanwhile."""
        was_training = self.policy.training
        self.policy.eval()
        sharded = is_sharded(self.policy)
        if sharded:  # FSDP: the root unit's weights (generate reaches the vision tower and embeddings directly)
            unshard_root(self.policy)
        completions = []
        try:
            for call_prompts, call_images, real in calls:
                enc = encode_prompts(self.processor, call_prompts, call_images)
                stop = {"stopping_criteria": StoppingCriteriaList([_Done(real)])} if real < len(call_prompts) else {}
                out = self.policy.generate(**{k: v.to(device) for k, v in enc.items()}, **kwargs, **stop)  # [b, P+C]
                if real > 0:  # a filler call (0 real rows) runs only to keep in step with the other ranks
                    completions.append(out[:real, enc["input_ids"].shape[1] :].cpu())
        finally:
            self.policy.train(was_training)
            if sharded:
                self.policy.reshard()
        return completions

    def _rollout(
        self,
        prompts: Sequence[str],
        images: Sequence[Sequence[Any]],
        n: int,
        completions: list[torch.Tensor],
        eos_ids: list[int],
    ) -> Rollout:
        """The rollout of the sampled ids of every call: completions cut after their end token, and each prompt
        encoded once (its tokens, mask and images)."""
        tok = self.processor.tokenizer
        completion_ids = pad_right(completions, tok.pad_token_id)  # [N, C]
        if completion_ids.shape[1] == 0:  # max_new_tokens 0: keep shapes valid
            completion_ids = torch.full((len(prompts) * n, 1), tok.pad_token_id)
        mask, truncated = completion_mask_from_ids(completion_ids, eos_ids)  # [N, C], [N]
        completion_ids = torch.where(mask.bool(), completion_ids, torch.full_like(completion_ids, tok.pad_token_id))
        enc = encode_prompts(self.processor, prompts, images)  # [B, P]: each prompt once
        return Rollout(
            prompt_ids=enc["input_ids"],
            prompt_mask=enc["attention_mask"],
            completion_ids=completion_ids,
            completion_mask=mask,
            texts=tok.batch_decode(completion_ids, skip_special_tokens=True),  # ids past the end are pad already
            truncated=truncated,
            group_size=n,
            images_per_prompt=[len(row) for row in images],
            model_inputs={k: enc[k] for k in PROMPT_MODEL_INPUTS if k in enc},
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
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": "."}]
        text = self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        return text, [Image.new("RGB", (28, 28))] if with_image else []
