"""A weighted sum of reward modules that reports every component.

Visionary-R1: ``accuracy + format + 0.1 * caption``. Weights are explicit init args here, never constants inside a
reward. ``__call__`` returns the total and each component's raw (unweighted) scores so all of them can be logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rewards.base import Reward


class CombinedReward:
    """Args:
    rewards: the reward modules.
    weights: one weight per reward (default 1.0 each).
    names: log keys (default each reward's ``name``; must be unique).
    """

    def __init__(
        self, rewards: Sequence[Reward], weights: Sequence[float] | None = None, names: Sequence[str] | None = None
    ) -> None:
        if not rewards:
            raise ValueError("CombinedReward needs at least one reward")
        self.rewards = list(rewards)
        self.weights = [1.0] * len(self.rewards) if weights is None else [float(w) for w in weights]
        self.names = list(names) if names is not None else [r.name for r in self.rewards]
        if len(self.weights) != len(self.rewards) or len(self.names) != len(self.rewards):
            raise ValueError(f"{len(self.rewards)} rewards but {len(self.weights)} weights and {len(self.names)} names")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"reward names must be unique, got {self.names}; pass names=[...]")

    def __call__(self, completions: Sequence[str], **batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        components = {name: reward(completions, **batch) for name, reward in zip(self.names, self.rewards)}  # [N] each
        total = torch.zeros(len(completions))  # [N]
        for name, weight in zip(self.names, self.weights):
            total += weight * components[name]
        return total, components

    def metrics(self, reset: bool = True) -> dict[str, float]:
        """Counters of every component (judge failures, rejections ...)."""
        out: dict[str, float] = {}
        for reward in self.rewards:
            out.update(reward.metrics(reset))
        return out
