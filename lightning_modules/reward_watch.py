"""Rewards that stopped teaching: a reward that gives every rollout the same value, step after step, has no
variance within any group, so it adds nothing to any advantage. A run can train for hours on such a reward (a format
reward whose template the model never writes, a judge that always refuses) and show a flat curve no one reads.

``DeadRewardWatch`` counts, per reward, the steps in a row at which every rollout of the step scored one and the
same value, that value unchanged from the step before. At ``patience`` steps it says so once (the caller warns), and
``dead`` lists the rewards flat for at least that long (logged as ``rollout/dead_rewards``). Its state travels in
the rollout callback's checkpoint state, so a resumed run counts as the uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch


class DeadRewardWatch:
    """Per reward: how many steps in a row every rollout got the same value (see the module docstring)."""

    def __init__(self, patience: int = 20) -> None:
        self.patience = patience  # 0: off
        self.flat: dict[str, tuple[float, int]] = {}  # reward -> (its constant value, steps in a row)

    def update(self, components: dict[str, torch.Tensor]) -> list[str]:
        """Take one step's per-rollout values (``{reward: [N]}``); return the warnings this step newly triggers."""
        if self.patience <= 0:
            return []
        warnings = []
        for name, values in components.items():
            value = _constant(values)
            before, steps = self.flat.get(name, (None, 0))
            steps = steps + 1 if value is not None and value == before else (1 if value is not None else 0)
            self.flat[name] = (value, steps)
            if steps == self.patience:
                warnings.append(
                    f"reward {name!r} has given every rollout {value:g} for {steps} steps in a row: it adds nothing "
                    "to the advantages. Check that the completions can earn it (samples.jsonl): the template the "
                    "data asks for against the one the reward checks, the judge's replies, the answer column."
                )
        return warnings

    @property
    def dead(self) -> list[str]:
        """The rewards flat for at least ``patience`` steps now."""
        return [name for name, (_, steps) in self.flat.items() if self.patience > 0 and steps >= self.patience]

    def state_dict(self) -> dict[str, Any]:
        return {name: [value, steps] for name, (value, steps) in self.flat.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.flat = {name: (value, int(steps)) for name, (value, steps) in state.items()}


def _constant(values: torch.Tensor) -> float | None:
    """The one value every entry of ``values`` has (NaNs ignored), or None when they differ or there is none."""
    finite = values[~torch.isnan(values)].double()  # [n]
    if finite.numel() == 0 or finite.max() - finite.min() > 1e-9:
        return None
    return round(finite[0].item(), 9)
