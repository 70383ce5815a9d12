"""A weighted sum of reward modules that reports every component.

Visionary-R1: ``accuracy + format + 0.1 * caption``. Weights are explicit init args here, never constants inside a
reward. ``__call__`` returns the total and each component's raw (unweighted) scores so all of them can be logged.

A reward that raises does not stop a run: its batch is scored again row by row, the rows that still raise score 0
for that component and are counted (``{name}/errors``, logged with the other reward counters), and the first error
of each reward is logged as a warning naming the row. Input errors (``RewardInputError``: a missing column, an
unknown problem type) are the data's or the config's fault and would fail every row, so they are raised.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from rewards.base import Reward, RewardInputError
from rewards.judges import Judge

log = logging.getLogger(__name__)


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
        self.errors: dict[str, int] = {}  # rows whose reward raised, per reward name, since the last metrics()
        self.warned: set[str] = set()

    @property
    def columns(self) -> tuple[str, ...]:
        """The dataset columns to pass: ``id`` (read here, to name a row whose reward raised), then those any of the
        rewards reads, each once, in the rewards' order. Each reward receives only its own."""
        return tuple(dict.fromkeys(["id", *(column for reward in self.rewards for column in reward.columns)]))

    @property
    def judges(self) -> list[Judge]:
        """Every reward's judges, each once (two rewards may share one)."""
        out: list[Judge] = []
        for reward in self.rewards:
            out += [judge for judge in reward.judges if not any(judge is seen for seen in out)]
        return out

    def evaluation_copy(self) -> CombinedReward:
        """The same combination over each reward's ``evaluation_copy`` (same settings, empty counters, shared
        judges), for scoring held-out rows apart from the training counters."""
        return CombinedReward([reward.evaluation_copy() for reward in self.rewards], self.weights, self.names)

    def __call__(self, completions: Sequence[str], **batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        components = {
            name: self._score(name, reward, completions, batch) for name, reward in zip(self.names, self.rewards)
        }  # [N] each
        total = torch.zeros(len(completions))  # [N]
        for name, weight in zip(self.names, self.weights):
            total += weight * components[name]
        return total, components

    def _score(self, name: str, reward: Reward, completions: Sequence[str], batch: dict[str, Any]) -> torch.Tensor:
        ids = batch.get("id")
        batch = {key: batch[key] for key in reward.columns if key in batch}  # the columns this reward declares
        try:
            return reward(completions, **batch)
        except RewardInputError:
            raise
        except Exception:  # noqa: BLE001 - isolate the failing rows below
            pass
        n = len(completions)
        out = torch.zeros(n)  # [N]
        for i in range(n):
            row = {k: v[i : i + 1] if isinstance(v, (list, tuple)) and len(v) == n else v for k, v in batch.items()}
            try:
                out[i] = reward(completions[i : i + 1], **row)[0]
            except RewardInputError:
                raise
            except Exception as e:  # noqa: BLE001 - a reward bug or a crashing scorer must not end a long run
                self.errors[name] = self.errors.get(name, 0) + 1
                if name not in self.warned:
                    self.warned.add(name)
                    ident = ids[i] if isinstance(ids, (list, tuple)) and len(ids) == n else None
                    log.warning(
                        "reward %r raised on row index %s (id %s) and scores 0 there; further errors are only "
                        "counted in %s/errors: %s: %s",
                        name,
                        i,
                        ident,
                        name,
                        type(e).__name__,
                        e,
                    )
        return out

    def judge_seconds(self) -> float:
        """Wall seconds the rewards spent waiting for their judges since the last call (then reset)."""
        total = 0.0
        for reward in self.rewards:
            total += getattr(reward, "judge_seconds", 0.0)
            reward.judge_seconds = 0.0
        return total

    def metrics(self, reset: bool = True) -> dict[str, float]:
        """Counters of every component (judge failures, rejections ...) and rows whose reward raised."""
        out: dict[str, float] = {f"{name}/errors": float(self.errors.get(name, 0)) for name in self.names}
        if reset:
            self.errors.clear()
        for reward in self.rewards:
            out.update(reward.metrics(reset))
        return out
