"""The rollout batch handed from the rollout callback to the GRPO module, and row slicing for micro-batches."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RolloutBatch:
    input_ids: torch.Tensor  # [N, P + C] left-padded prompt, then right-padded completion
    attention_mask: torch.Tensor  # [N, P + C]
    completion_mask: torch.Tensor  # [N, C]
    advantages: torch.Tensor  # [N]
    rewards: torch.Tensor  # [N] weighted total
    images_per_row: list[int]  # images in each row's prompt (to slice pixel_values)
    model_inputs: dict[str, torch.Tensor] = field(
        default_factory=dict
    )  # pixel_values, image_grid_thw, mm_token_type_ids
    old_logps: torch.Tensor | None = None  # [N, C], filled by the module when num_iterations > 1
    ref_logps: torch.Tensor | None = None  # [N, C], filled by the module when beta > 0
    engine_logps: torch.Tensor | None = None  # [N, C]
    temperature: float = 1.0  # the sampling temperature; the module's log-probs use the same

    @property
    def num_rows(self) -> int:
        return self.input_ids.shape[0]

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

    def rows(self, start: int, end: int) -> dict[str, torch.Tensor | None]:
        """Model inputs and per-row tensors of rows ``start:end``; pixel_values sliced by each image's patches."""
        out: dict[str, torch.Tensor | None] = {
            "input_ids": self.input_ids[start:end],
            "attention_mask": self.attention_mask[start:end],
            "completion_mask": self.completion_mask[start:end],
            "advantages": self.advantages[start:end],
            "old_logps": None if self.old_logps is None else self.old_logps[start:end],
            "ref_logps": None if self.ref_logps is None else self.ref_logps[start:end],
            "engine_logps": None if self.engine_logps is None else self.engine_logps[start:end],
        }
        if "mm_token_type_ids" in self.model_inputs:
            mm = self.model_inputs["mm_token_type_ids"][start:end]  # [n, P]
            pad = torch.zeros(mm.shape[0], self.completion_length, dtype=mm.dtype, device=mm.device)
            out["mm_token_type_ids"] = torch.cat([mm, pad], 1)  # [n, P + C]
        if "pixel_values" in self.model_inputs:
            grid = self.model_inputs["image_grid_thw"]  # [images, 3]
            first_image = sum(self.images_per_row[:start])
            last_image = first_image + sum(self.images_per_row[start:end])
            patches = grid.prod(1)  # [images]
            p0, p1 = int(patches[:first_image].sum()), int(patches[:last_image].sum())
            out["pixel_values"] = self.model_inputs["pixel_values"][p0:p1]
            out["image_grid_thw"] = grid[first_image:last_image]
        return out
