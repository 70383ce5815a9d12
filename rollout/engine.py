"""The rollout engine interface: G sampled completions per prompt, as token ids, text and masks.

Engines: ``rollout.hf.HFEngine`` (transformers ``generate`` on the live policy) and ``rollout.vllm.VLLMEngine``
(an in-process vLLM engine synced after every optimizer step). Rows are prompt-major: row ``i * G + g`` is sample
``g`` of prompt ``i``.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class SamplingConfig:
    """Sampling settings for one ``generate`` call.

    Args:
        temperature: sampling temperature; 0 means greedy.
        top_p: nucleus sampling threshold (1: off).
        top_k: keep the k most likely tokens (0 or less: off).
        max_new_tokens: longest completion, in tokens.
        ignore_eos: generate exactly ``max_new_tokens`` (benchmarks with fixed lengths).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    ignore_eos: bool = False


@dataclass
class Rollout:
    """What an engine returns for B prompts and G completions each (N = B * G rows, prompt-major: row ``i * G + g``
    is sample ``g`` of prompt ``i``). Prompt tensors and images are held once per prompt, not once per completion."""

    prompt_ids: torch.Tensor  # [B, P] left-padded
    prompt_mask: torch.Tensor  # [B, P]
    completion_ids: torch.Tensor  # [N, C] right-padded
    completion_mask: torch.Tensor  # [N, C] 1 on tokens up to and including the end-of-turn token
    texts: list[str]  # [N] decoded completions (special tokens skipped)
    truncated: torch.Tensor  # [N] bool: hit max_new_tokens without an end-of-turn token
    group_size: int  # G
    images_per_prompt: list[int]  # [B] images in each prompt (to slice pixel_values and image_grid_thw by prompt)
    # the processor's outputs for the B prompts: pixel_values [patches of the B prompts' images, D],
    # image_grid_thw [images of the B prompts, 3], mm_token_type_ids [B, P]
    model_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    engine_logps: torch.Tensor | None = None  # [N, C] sampling log-probs when the engine reports them

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(1)  # [N]


def empty_rollout(pad_token_id: int, group_size: int = 1) -> Rollout:
    """The rollout of no prompts (a rank with nothing to generate that joins a collective ``generate``)."""
    ids = torch.full((0, 1), pad_token_id, dtype=torch.long)
    empty = torch.zeros_like(ids)
    return Rollout(
        prompt_ids=ids,
        prompt_mask=empty,
        completion_ids=ids,
        completion_mask=empty,
        texts=[],
        truncated=torch.zeros(0, dtype=torch.bool),
        group_size=group_size,
        images_per_prompt=[],
    )


def completion_mask_from_ids(ids: torch.Tensor, eos_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask [N, C] with 1 up to and including the first end token, and truncated [N] (no end token). Pure."""
    is_eos = torch.zeros_like(ids, dtype=torch.bool)
    for eos in eos_ids:
        is_eos |= ids == eos
    has_eos = is_eos.any(1)  # [N]
    first = torch.where(has_eos, is_eos.float().argmax(1), torch.full_like(has_eos, ids.shape[1], dtype=torch.long))
    positions = torch.arange(ids.shape[1], device=ids.device)[None]  # [1, C]
    mask = (positions <= first[:, None]).long()  # [N, C]
    return mask, ~has_eos


def end_token_ids(tokenizer: Any) -> list[int]:
    """Tokens that end a completion: ``<|im_end|>`` (end of turn) and ``<|endoftext|>``."""
    return [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]


PROMPT_MODEL_INPUTS = ("pixel_values", "image_grid_thw", "mm_token_type_ids")  # a Rollout's model_inputs

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


def mask_vision_tokens(
    ids: torch.Tensor, mask: torch.Tensor, vision_ids: Sequence[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Replace vision special tokens that a policy generated inside completions ``ids [N, C]`` with ``pad_id`` and
    take them out of ``mask [N, C]``. Fed back to the model, an image-pad token in a completion would claim image
    features that do not exist and crash the forward. Returns (ids, mask, number replaced). Pure."""
    hit = torch.zeros_like(ids, dtype=torch.bool)
    for token in vision_ids:
        hit |= ids == token
    hit &= mask.bool()
    return ids.masked_fill(hit, pad_id), mask.masked_fill(hit, 0), int(hit.sum())


def pad_right(tensors: list[torch.Tensor], value: int) -> torch.Tensor:
    """Concatenate ``[n_i, L_i]`` tensors into ``[sum n_i, max L_i]``, padding on the right."""
    width = max(t.shape[1] for t in tensors)
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value) for t in tensors])


def encode_prompts(processor: Any, prompts: Sequence[str], images: Sequence[Sequence[Any]]) -> dict[str, torch.Tensor]:
    """The processor's model inputs for chat-formatted prompts and their images, left-padded:
    input_ids/attention_mask [B, P], pixel_values [patches, D], image_grid_thw [images, 3], mm_token_type_ids [B, P]."""
    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        flat_images = [im for row in images for im in row] or None
        return processor(text=list(prompts), images=flat_images, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side


@dataclass(frozen=True)
class StepShape:
    """The largest rollout one training step asks of an engine on one rank: ``prompts`` x ``group_size`` sequences
    of at most ``prompt_tokens + new_tokens`` tokens, with images within ``[min_pixels, max_pixels]`` (the data's
    bounds: images are resized to them before they reach an engine)."""

    prompts: int
    group_size: int
    prompt_tokens: int
    new_tokens: int
    min_pixels: int | None = None
    max_pixels: int | None = None

    def tokens(self, shared_prompt: bool) -> int:
        """KV-cache tokens the step's sequences take at their longest: each prompt once for its G samples when the
        engine shares a prompt's blocks (prefix caching), else once per sample."""
        if shared_prompt:
            return self.prompts * (self.prompt_tokens + self.group_size * self.new_tokens)
        return self.prompts * self.group_size * (self.prompt_tokens + self.new_tokens)


class RolloutEngine(ABC):
    """Generates completions for prompts with images."""

    #: weight syncs so far, for an engine that keeps its own copy of the weights (None: it samples the live policy)
    weight_version: int | None = None

    def setup(self, policy: nn.Module, processor: Any, step: StepShape | None = None) -> None:  # noqa: B027
        """Called once the policy exists (and again after it moves); ``step``: what a training step will ask (None
        outside training), for an engine that sizes itself."""

    @abstractmethod
    def generate(
        self, prompts: Sequence[str], images: Sequence[Sequence[Any]], n: int, sampling: SamplingConfig
    ) -> Rollout:
        """``n`` completions for each prompt."""

    @property
    def collective(self) -> bool:
        """Whether every rank must call ``generate`` together, a rank with no prompts included (an engine that runs
        the FSDP-sharded policy itself). Engines with their own copy of the weights (vLLM) never need it."""
        return False

    def sync_weights(self, policy: nn.Module) -> None:  # noqa: B027 - engines on the live policy need nothing
        """Push the policy's current weights into the engine after an optimizer step (an engine may defer the load to
        its next wake)."""

    def wake_up(self) -> None:  # noqa: B027 - engines on the live policy have nothing to wake
        """Open an ``awake`` block by hand (the rollout callback times the wake apart from the rollout)."""

    def go_to_sleep(self) -> None:  # noqa: B027 - engines on the live policy have nothing to release
        """Close a block opened by ``wake_up``."""

    @contextlib.contextmanager
    def awake(self) -> Iterator[None]:
        """A block during which the engine stays ready to generate with the policy's latest weights; outside such
        blocks an engine with a sleep mode releases its memory to the trainer. Blocks nest (the outermost one wakes
        and sleeps). Every rank enters together under DDP/FSDP: a deferred weight load may gather."""
        self.wake_up()
        try:
            yield
        finally:
            self.go_to_sleep()

    def close(self) -> None:  # noqa: B027 - engines on the live policy hold nothing of their own
        """Release what the engine holds (its own weights and KV cache) when a trainer entry point ends; the next
        ``setup`` starts it again. Runs one after another in one process (a notebook, a study) need this."""
