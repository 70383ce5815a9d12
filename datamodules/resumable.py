"""A DataLoader that resumes mid-epoch at the exact next batch: same order, nothing repeated or skipped.

The order of epoch ``e`` is a permutation drawn from ``seed + e`` (or the identity without shuffling), so it can be
rebuilt after a restart. ``state_dict()`` (saved by Lightning with the checkpoint, because the loader is
"stateful") records the epoch and how many batches the training loop has consumed; ``load_state_dict`` makes the
next iteration start after them.

Lightning fetches one batch ahead of the one being trained on, and saves step checkpoints before the module's
``on_train_batch_end``, so the loader cannot count consumed batches by what it has yielded: the modules report each
batch once its optimizer step is done, from ``training_step`` (``mark_batch_consumed``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochOrderSampler(Sampler[int]):
    def __init__(self, size: int, shuffle: bool, seed: int) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.epoch = 0
        self.start = 0  # index into this epoch's order where iteration begins

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()

    def __iter__(self) -> Iterator[int]:
        yield from self.order(self.epoch)[self.start :]

    def __len__(self) -> int:
        return self.size - self.start


class ResumableDataLoader(DataLoader):
    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool, seed: int, **kwargs: Any) -> None:
        self.order_sampler = EpochOrderSampler(len(dataset), shuffle, seed)
        # Its own generator: without one, each new iterator draws a seed from the global RNG, and a resumed run
        # (which creates its iterator after restoring that RNG) would sample differently from the original.
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
        super().__init__(dataset, batch_size=batch_size, sampler=self.order_sampler, **kwargs)
        self.epoch = -1  # the epoch being iterated; the first __iter__ starts epoch 0
        self.consumed = 0  # batches of the current epoch the training loop has finished
        self._resume: tuple[int, int] | None = None

    def __iter__(self):
        # Lightning stops by length and may not exhaust the iterator, so the epoch advances here, per pass.
        epoch, skip = self._resume if self._resume is not None else (self.epoch + 1, 0)
        self._resume = None
        self.epoch, self.consumed = epoch, skip
        self.order_sampler.epoch, self.order_sampler.start = epoch, skip * self.batch_size
        return super().__iter__()

    def __len__(self) -> int:
        return (self.order_sampler.size + self.batch_size - 1) // self.batch_size

    def mark_consumed(self) -> None:
        self.consumed += 1

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["consumed"]))


def mark_batch_consumed(trainer: Any) -> None:
    """Tell a resumable train loader that the current batch's optimizer step is done (no-op for other loaders)."""
    loader = getattr(trainer, "train_dataloader", None)
    if hasattr(loader, "mark_consumed"):
        loader.mark_consumed()
