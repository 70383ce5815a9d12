"""The rollout batch handed from the rollout callback to the GRPO module, and row slicing for micro-batches."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
    group_size: int = 1  # G: rows i*G .. i*G+G-1 continue the same prompt
    truncated_sampling: bool = False  # top-k / top-p on: engine log-probs are renormalised over the kept tokens

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

    def select_groups(self, groups: list[int]) -> RolloutBatch:
        """A batch of the G rows of each group in ``groups``, in that order (dynamic sampling's kept groups); every
        per-row tensor and each row's images follow their rows."""
        rows = [group * self.group_size + j for group in groups for j in range(self.group_size)]
        index = torch.tensor(rows, dtype=torch.long, device=self.input_ids.device)  # [n]

        def pick(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[index]

        inputs = {k: v[index] for k, v in self.model_inputs.items() if k not in ("pixel_values", "image_grid_thw")}
        if "pixel_values" in self.model_inputs:
            parts = [self.rows(row, row + 1) for row in rows]
            inputs["pixel_values"] = torch.cat([part["pixel_values"] for part in parts])  # [patches of n rows, D]
            inputs["image_grid_thw"] = torch.cat([part["image_grid_thw"] for part in parts])  # [images of n rows, 3]
        return replace(
            self,
            input_ids=pick(self.input_ids),
            attention_mask=pick(self.attention_mask),
            completion_mask=pick(self.completion_mask),
            advantages=pick(self.advantages),
            rewards=pick(self.rewards),
            images_per_row=[self.images_per_row[row] for row in rows],
            model_inputs=inputs,
            old_logps=pick(self.old_logps),
            ref_logps=pick(self.ref_logps),
            engine_logps=pick(self.engine_logps),
        )

    def groups(self, start: int, end: int) -> dict[str, torch.Tensor | None]:
        """Rows ``start:end`` as distinct prompts and the completions continuing them, for
        ``lightning_modules.logprobs.grouped_completion_logps``: prompt_ids / prompt_mask / mm_token_type_ids [U, P] and
        the pixel values of the U prompts (each once), completion_ids / completion_attention [N, C], prompt_index [N].
        Raises if rows of one group do not carry the same prompt (an engine that broke the prompt-major layout)."""
        p = self.input_ids.shape[1] - self.completion_length
        end = min(end, self.num_rows)  # the last micro-batch may be short
        group = torch.arange(start, end) // self.group_size  # [n]
        first_rows = torch.unique(group) * self.group_size  # [U] first row of each group
        first_rows = first_rows.clamp(min=start).to(self.input_ids.device)  # a slice may begin inside a group
        prompt_index = (group - group[0]).to(self.input_ids.device)  # [n]
        prompt_ids = self.input_ids[first_rows, :p]  # [U, P]
        if not torch.equal(prompt_ids[prompt_index], self.input_ids[start:end, :p]):
            raise ValueError(f"rows {start}..{end - 1}: completions of one group carry different prompts")
        out = self.rows(start, end)
        out.update(
            prompt_ids=prompt_ids,
            prompt_mask=self.attention_mask[first_rows, :p],
            prompt_index=prompt_index,
            completion_ids=self.input_ids[start:end, p:],
            completion_attention=self.attention_mask[start:end, p:],
        )
        if "mm_token_type_ids" in self.model_inputs:
            out["mm_token_type_ids"] = self.model_inputs["mm_token_type_ids"][first_rows]  # [U, P]
        if "pixel_values" in self.model_inputs:
            pixels, grids = [], []
            for row in first_rows.tolist():
                one = self.rows(row, row + 1)
                pixels.append(one["pixel_values"])
                grids.append(one["image_grid_thw"])
            out["pixel_values"], out["image_grid_thw"] = torch.cat(pixels), torch.cat(grids)
        return out
