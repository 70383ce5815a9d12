"""The rollout batch handed from the rollout callback to the GRPO module: each prompt once, its G completions.

Prompt tensors and images are stored once per prompt (``[B, P]``, each prompt's images once), completions once per
row (``[N, C]`` with N = B * G, prompt-major: row ``i * G + g`` is sample ``g`` of prompt ``i``), as the engine
returned them. Two views for the log-prob forwards of a micro-batch of rows ``start:end`` (which may begin and end
inside a group):

- ``groups(start, end)``: the distinct prompts of those rows and their completions, for
  ``lightning_modules.logprobs.grouped_completion_logps`` (each prompt's images through the vision tower once);
- ``rows(start, end)``: each row's prompt in front of its completion, for the one-row-per-completion forward.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from rollout.engine import VISION_TOKENS, Rollout, mask_vision_tokens


@dataclass
class RolloutBatch:
    prompt_ids: torch.Tensor  # [B, P] left-padded
    prompt_mask: torch.Tensor  # [B, P]
    completion_ids: torch.Tensor  # [N, C] right-padded; vision tokens the policy generated replaced by padding
    completion_attention: torch.Tensor  # [N, C] the engine's completion mask (replaced vision tokens stay attended)
    completion_mask: torch.Tensor  # [N, C] loss mask: completion_attention without the replaced vision tokens
    advantages: torch.Tensor  # [N]
    rewards: torch.Tensor  # [N] weighted total
    images_per_prompt: list[int]  # [B] images in each prompt (to slice pixel_values)
    # the processor's outputs for the B prompts: pixel_values [patches of the B prompts' images, D],
    # image_grid_thw [images of the B prompts, 3], mm_token_type_ids [B, P]
    model_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    old_logps: torch.Tensor | None = None  # [N, C], filled by the module when num_iterations > 1
    ref_logps: torch.Tensor | None = None  # [N, C], filled by the module when beta > 0
    engine_logps: torch.Tensor | None = None  # [N, C]
    temperature: float = 1.0  # the sampling temperature; the module's log-probs use the same
    group_size: int = 1  # G: rows i*G .. i*G+G-1 continue prompt i
    truncated_sampling: bool = False  # top-k / top-p on: engine log-probs are renormalised over the kept tokens
    vision_tokens_masked: int = 0  # vision special tokens replaced by padding inside completions

    def __post_init__(self) -> None:
        b, n = self.prompt_ids.shape[0], self.completion_ids.shape[0]
        if n != b * self.group_size or len(self.images_per_prompt) != b:
            raise ValueError(
                f"{b} prompts x group_size {self.group_size} != {n} completions, or images_per_prompt has "
                f"{len(self.images_per_prompt)} entries for {b} prompts"
            )

    @classmethod
    def from_rollout(
        cls,
        out: Rollout,
        *,
        advantages: torch.Tensor,
        rewards: torch.Tensor,
        temperature: float,
        truncated_sampling: bool,
        vision_token_ids: Sequence[int],
        pad_token_id: int,
    ) -> RolloutBatch:
        """The batch of an engine's rollout, with advantages [N] and rewards [N]. Vision special tokens that the
        policy generated inside a completion are replaced by ``pad_token_id`` and left out of the loss mask (fed
        back, an image-pad token would claim image features that do not exist); they stay attended, and their count
        is ``vision_tokens_masked``. ``temperature`` 0 (greedy) is stored as 1: log-probs need a positive one."""
        completion_ids, completion_mask, masked = mask_vision_tokens(
            out.completion_ids, out.completion_mask, vision_token_ids, pad_token_id
        )
        return cls(
            prompt_ids=out.prompt_ids,
            prompt_mask=out.prompt_mask,
            completion_ids=completion_ids,
            completion_attention=out.completion_mask,
            completion_mask=completion_mask,
            advantages=advantages,
            rewards=rewards,
            images_per_prompt=list(out.images_per_prompt),
            model_inputs=dict(out.model_inputs),
            engine_logps=out.engine_logps,
            temperature=temperature if temperature > 0 else 1.0,
            group_size=out.group_size,
            truncated_sampling=truncated_sampling,
            vision_tokens_masked=masked,
        )

    @property
    def num_rows(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def num_groups(self) -> int:
        return self.prompt_ids.shape[0]

    @property
    def prompt_length(self) -> int:
        return self.prompt_ids.shape[1]

    @property
    def completion_length(self) -> int:
        return self.completion_mask.shape[1]

    def to(self, device: torch.device) -> RolloutBatch:
        def move(x):
            return x.to(device) if isinstance(x, torch.Tensor) else x

        return RolloutBatch(
            **{k: move(v) for k, v in vars(self).items() if k != "model_inputs"},
            model_inputs={k: move(v) for k, v in self.model_inputs.items()},
        )

    def _images(self, prompts: Sequence[int]) -> dict[str, torch.Tensor]:
        """pixel_values [patches, D] and image_grid_thw [images, 3] of the images of ``prompts``, in that order (a
        prompt may repeat); empty when the batch has no images."""
        if "pixel_values" not in self.model_inputs:
            return {}
        pixels, grid = self.model_inputs["pixel_values"], self.model_inputs["image_grid_thw"]
        image_start = [0, *itertools.accumulate(self.images_per_prompt)]  # [B + 1]
        patch_start = [0, *itertools.accumulate(grid.prod(1).tolist())]  # [images + 1]
        spans = [(image_start[i], image_start[i + 1]) for i in prompts]
        return {
            "pixel_values": torch.cat([pixels[patch_start[a] : patch_start[b]] for a, b in spans] or [pixels[:0]]),
            "image_grid_thw": torch.cat([grid[a:b] for a, b in spans] or [grid[:0]]),
        }

    def _per_row(self, start: int, end: int) -> dict[str, torch.Tensor | None]:
        """The per-row tensors of rows ``start:end``: loss mask, advantages and log-probs."""
        return {
            "completion_mask": self.completion_mask[start:end],
            "advantages": self.advantages[start:end],
            "old_logps": None if self.old_logps is None else self.old_logps[start:end],
            "ref_logps": None if self.ref_logps is None else self.ref_logps[start:end],
            "engine_logps": None if self.engine_logps is None else self.engine_logps[start:end],
        }

    def _expanded(self, start: int, end: int) -> dict[str, torch.Tensor]:
        """Rows ``start:end`` as the policy's one-row inputs: input_ids / attention_mask / mm_token_type_ids
        [n, P + C], each row's prompt in front of its completion."""
        prompt = torch.arange(start, end, device=self.prompt_ids.device) // self.group_size  # [n]
        out = {
            "input_ids": torch.cat([self.prompt_ids[prompt], self.completion_ids[start:end]], 1),
            "attention_mask": torch.cat([self.prompt_mask[prompt], self.completion_attention[start:end]], 1),
        }
        if "mm_token_type_ids" in self.model_inputs:
            mm = self.model_inputs["mm_token_type_ids"][prompt]  # [n, P]
            out["mm_token_type_ids"] = torch.cat([mm, torch.zeros_like(self.completion_ids[start:end])], 1)
        return out

    def rows(self, start: int, end: int) -> dict[str, torch.Tensor | None]:
        """Rows ``start:end`` for the one-row-per-completion forward: input_ids / attention_mask / mm_token_type_ids
        [n, P + C], each row's pixel_values and image_grid_thw (a prompt's images once per row), and the per-row
        completion_mask / old_logps / ref_logps / engine_logps [n, C] and advantages [n]."""
        end = min(end, self.num_rows)  # the last micro-batch may be short
        out: dict[str, torch.Tensor | None] = {**self._expanded(start, end), **self._per_row(start, end)}
        out.update(self._images([row // self.group_size for row in range(start, end)]))
        return out

    def groups(self, start: int, end: int) -> dict[str, torch.Tensor | None]:
        """Rows ``start:end`` as the distinct prompts they continue and their completions, for
        ``lightning_modules.logprobs.grouped_completion_logps``: prompt_ids / prompt_mask / mm_token_type_ids
        [U, P] and the pixel values of the U prompts (each once), completion_ids / completion_attention [n, C],
        prompt_index [n] (which of the U prompts each row continues), and what ``rows`` returns besides (input_ids /
        attention_mask [n, P + C], the per-row tensors). A slice may begin or end inside a group."""
        end = min(end, self.num_rows)  # the last micro-batch may be short
        first, last = start // self.group_size, (end - 1) // self.group_size + 1  # prompts first..last-1
        device = self.prompt_ids.device
        out: dict[str, torch.Tensor | None] = {**self._expanded(start, end), **self._per_row(start, end)}
        out.update(
            prompt_ids=self.prompt_ids[first:last],
            prompt_mask=self.prompt_mask[first:last],
            prompt_index=torch.arange(start, end, device=device) // self.group_size - first,
            completion_ids=self.completion_ids[start:end],
            completion_attention=self.completion_attention[start:end],
        )
        if "mm_token_type_ids" in self.model_inputs:
            out["mm_token_type_ids"] = self.model_inputs["mm_token_type_ids"][first:last]  # [U, P]
        out.update(self._images(range(first, last)))
        return out

    def select_groups(self, groups: list[int]) -> RolloutBatch:
        """A batch of the groups in ``groups``, in that order (dynamic sampling's kept groups): each prompt with its
        images and its G rows. ``vision_tokens_masked`` stays the whole rollout's count."""
        device = self.prompt_ids.device
        rows = [g * self.group_size + j for g in groups for j in range(self.group_size)]
        rows = torch.tensor(rows, dtype=torch.long, device=device)  # [b * G]
        prompts = torch.tensor(groups, dtype=torch.long, device=device)  # [b]

        def pick(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[rows]

        inputs = {k: v[prompts] for k, v in self.model_inputs.items() if k not in ("pixel_values", "image_grid_thw")}
        return replace(
            self,
            prompt_ids=self.prompt_ids[prompts],
            prompt_mask=self.prompt_mask[prompts],
            completion_ids=pick(self.completion_ids),
            completion_attention=pick(self.completion_attention),
            completion_mask=pick(self.completion_mask),
            advantages=pick(self.advantages),
            rewards=pick(self.rewards),
            images_per_prompt=[self.images_per_prompt[g] for g in groups],
            model_inputs={**inputs, **self._images(groups)},
            old_logps=pick(self.old_logps),
            ref_logps=pick(self.ref_logps),
            engine_logps=pick(self.engine_logps),
        )


def parity_batch(out: Rollout, tokenizer) -> tuple[RolloutBatch, torch.Tensor]:
    """A rollout as the rollout callback hands it to the module (zero advantages and rewards), for comparing the
    policy's log-probs with the engine's, and ``valid`` [N, C]: the completion positions both computed from the same
    text. A vision special token sampled inside a completion is replaced by padding (``from_rollout``), so every
    position from the first replaced one on is left out: the policy then sees other text than the engine did."""
    n = out.completion_ids.shape[0]
    batch = RolloutBatch.from_rollout(
        out,
        advantages=torch.zeros(n),
        rewards=torch.zeros(n),
        temperature=1.0,
        truncated_sampling=False,
        vision_token_ids=tokenizer.convert_tokens_to_ids(list(VISION_TOKENS)),
        pad_token_id=tokenizer.pad_token_id,
    )
    replaced = (batch.completion_mask != out.completion_mask).long().cumsum(1) > 0  # [N, C]: at or after a replaced
    return batch, out.completion_mask.bool() & ~replaced
