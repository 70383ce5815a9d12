"""What the GRPO module measures besides its loss: the scorers of validation, test and predict (evaluation copies of
the configured rewards), and the parity of the policy's log-probs with the engine's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rewards import AccuracyReward, CombinedReward, Reward


@dataclass
class EvalScorers:
    """What scores validation, test and predict: evaluation copies of the configured accuracy, format (or
    hard-format) and caption rewards, built once. Their counters are their own, never the training rewards'."""

    accuracy: Reward
    format: Reward | None = None
    caption: Reward | None = None

    @classmethod
    def of(cls, rewards: CombinedReward) -> EvalScorers:
        by_name = dict(zip(rewards.names, rewards.rewards))

        def copy(*names: str) -> Reward | None:
            return next((by_name[name].evaluation_copy() for name in names if name in by_name), None)

        return cls(copy("accuracy") or AccuracyReward(), copy("format", "hard_format_result"), copy("caption"))

    def all(self) -> list[Reward]:
        return [s for s in (self.accuracy, self.format, self.caption) if s is not None]

    def columns(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch's columns that the scorers declare."""
        return {key: batch[key] for scorer in self.all() for key in scorer.columns if key in batch}

    def metrics(self) -> dict[str, float]:
        """The scorers' counters since the last call (answers missing, judge failures ...), ``{name}/{counter}``."""
        return {key: value for scorer in self.all() for key, value in scorer.metrics().items()}


class EngineParity:
    """Mean and max |policy log-prob - engine log-prob| over a rollout's sampled tokens, summed over the micro-batches
    of the first iteration (the policy as the engine saw it)."""

    def __init__(self, tokens: float) -> None:
        self.tokens, self.mean, self.max = max(1.0, tokens), 0.0, 0.0

    def add(self, logps: torch.Tensor, engine_logps: torch.Tensor, mask: torch.Tensor) -> None:
        diff = (logps.detach() - engine_logps).abs() * mask  # [n, C]
        self.mean += float(diff.sum()) / self.tokens
        self.max = max(self.max, float(diff.max()))

    def metrics(self) -> dict[str, float]:
        return {"rollout/engine_logp_diff_mean": self.mean, "rollout/engine_logp_diff_max": self.max}
