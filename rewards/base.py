"""The reward contract shared by every reward module.

A reward scores each completion independently of the others:
``reward(completions=[...], **batch) -> FloatTensor[N]``. Dataset columns arrive as keyword lists aligned with
``completions`` (``solution=[...]``, ``problem_type=[...]``, ``problem=[...]``); in training each reward receives
the columns it declares in ``columns`` and no others (``rewards.combined``); each sample is scored with its own row's
values. A reward never raises on model output: any string (empty, huge, odd unicode, unbalanced tags) gets a
score. Problems that are not the model's fault (a judge that times out) score 0 and are counted in ``stats``, which
the training loop logs through ``metrics()``.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from rewards.judges import Judge


class RewardInputError(ValueError):
    """The data or configuration cannot be scored (a missing column, columns of the wrong length, an unknown problem
    type): raised to the user instead of being scored 0, since every row would fail the same way."""


class MissingColumnError(RewardInputError, KeyError):
    """A reward needs a dataset column the batch does not have."""


class Reward(ABC):
    """Base class: subclasses implement ``score`` and set ``name`` (the key used in logs and weights)."""

    name: str = "reward"
    #: every dataset column this reward reads, optional ones included (callers pass exactly these); a column given
    #: as a list must have one value per completion
    template: str | None = None  # the output template (``rewards.templates``) this reward checks, if it checks one
    columns: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()
        self.judge_seconds = 0.0  # wall time spent waiting for judges since the last ``CombinedReward.judge_seconds``

    @abstractmethod
    def score(self, completions: Sequence[str], **batch: Sequence[Any]) -> list[float]:
        """One float per completion."""

    def __call__(self, completions: Sequence[str], **batch: Sequence[Any]) -> torch.Tensor:
        completions = [c if isinstance(c, str) else "" for c in completions]
        for key in self.columns:
            column = batch.get(key)
            if isinstance(column, (list, tuple)) and len(column) != len(completions):
                raise RewardInputError(
                    f"{type(self).__name__}: column {key!r} has {len(column)} values for {len(completions)} completions"
                )
        scores = self.score(completions, **batch)
        out = torch.tensor(scores, dtype=torch.float32)  # [N]
        if out.shape != (len(completions),):
            raise RuntimeError(f"{type(self).__name__} returned shape {tuple(out.shape)} for {len(completions)} inputs")
        return out

    @property
    def judges(self) -> list[Judge]:
        """The judges this reward calls (the rollout callback binds each to the policy's engine)."""
        return []

    def evaluation_copy(self) -> Reward:
        """A reward with the same settings and empty ``stats``, for scoring held-out rows: its counters stay apart
        from the training ones. Heavy members (a judge and its model) are shared, not copied; a member that is itself
        a reward (a caption reward's accuracy rules) gets its own evaluation copy, so no counter is shared."""
        out = copy.copy(self)
        out.stats = Counter()
        for key, value in vars(self).items():
            if isinstance(value, Reward):
                setattr(out, key, value.evaluation_copy())
        return out

    def metrics(self, reset: bool = True) -> dict[str, float]:
        """Counters accumulated since the last call (judge failures, rejections ...), keyed ``{name}/{counter}``."""
        out = {f"{self.name}/{k}": float(v) for k, v in self.stats.items()}
        if reset:
            self.stats.clear()
        return out


def require_column(batch: dict[str, Any], key: str, reward: str) -> Sequence[Any]:
    """A missing dataset column is a configuration error, reported with the reward's and the column's name."""
    if key not in batch or batch[key] is None:
        have = ", ".join(sorted(batch)) or "none"
        raise MissingColumnError(f"{reward} needs the dataset column {key!r}; the batch has: {have}")
    return batch[key]
