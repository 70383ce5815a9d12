"""A DataLoader that resumes mid-epoch at the exact next batch: same order, nothing repeated or skipped.

The order of epoch ``e`` is a permutation drawn from ``seed + e`` (or the identity without shuffling), so it can be
rebuilt after a restart. ``state_dict()`` (saved by Lightning with the checkpoint, because the loader is
"stateful") records the epoch and how many batches the training loop has consumed; ``load_state_dict`` makes the
next iteration start after them.

Under several processes each rank iterates its own slice of the epoch's order (``DistributedSampler``'s split:
rank r takes every world-size-th index from r, the order padded by wrapping so that ranks get equal counts). The
sampler is a ``DistributedSampler``, so Lightning keeps it instead of wrapping it in one of its own. A resumed run
must keep the world size for the exact next batch.

Lightning fetches one batch ahead of the one being trained on, and saves step checkpoints before the module's
``on_train_batch_end``, so the loader cannot count consumed batches by what it has yielded: the modules report each
batch once its optimizer step is done, from ``training_step`` (``mark_batch_consumed``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class EpochOrderSampler(DistributedSampler):
    """This rank's share of epoch ``epoch``'s order, from position ``start`` of that share."""

    def __init__(self, size: int, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.size = size
        self.start = 0  # index into this rank's share of the epoch's order where iteration begins

    def order(self, epoch: int) -> list[int]:
        """This rank's indices for ``epoch``, in order. Pure in (size, shuffle, seed, epoch, world size, rank)."""
        if self.shuffle:
            full = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
        else:
            full = list(range(self.size))
        full += (full * self.total_size)[: self.total_size - len(full)]  # pad by wrapping to equal shares
        return full[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        yield from self.order(self.epoch)[self.start :]

    def set_epoch(self, epoch: int) -> None:
        """Ignored: ``ResumableDataLoader`` sets the epoch it iterates. Lightning calls this with its own epoch count,
        which a run resumed from the checkpoint of an epoch's last batch sets one too high (it counts the empty rest
        of that epoch as an epoch); the order, drawn lazily at the first batch, would then be the wrong epoch's."""

    def __len__(self) -> int:
        return self.num_samples - self.start


class ResumableDataLoader(DataLoader):
    """Args: as DataLoader's, plus ``seed`` for the epoch orders. ``num_replicas`` and ``rank`` default to the
    initialised process group's (one process when there is none)."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        seed: int,
        num_replicas: int | None = None,
        rank: int | None = None,
        **kwargs: Any,
    ) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if distributed else 1
        if rank is None:
            rank = torch.distributed.get_rank() if distributed else 0
        self.order_sampler = EpochOrderSampler(len(dataset), shuffle, seed, num_replicas, rank)
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
        return (self.order_sampler.num_samples + self.batch_size - 1) // self.batch_size

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
