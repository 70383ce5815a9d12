"""Checkpoint files that a crash cannot damage: write aside in the same folder, fsync, then rename over the target.

Lightning's default writer stages the file in the system temp folder and moves it into place; across filesystems
that move is a copy straight onto the checkpoint path, so a kill during the copy leaves a truncated ``last.ckpt``
(and a stray temp file the size of the model in ``/tmp``). Here the partial file sits beside the target as
``.<name>.partial-<pid>`` and ``os.replace`` swaps it in, which POSIX makes atomic within one filesystem: the old
checkpoint stays whole until the new one is complete. Leftover partial files of dead writers are removed the next
time a checkpoint is written to that folder and counted in ``stale_partials_removed``.

Nothing is lost when the process dies between a checkpoint and the logs of the steps it covers. Lightning writes a
step's checkpoint (``ModelCheckpoint.on_train_batch_end``) before it hands that step's metrics to the loggers, and
TensorBoard's writer thread flushes on its own clock: a kill in between left a checkpoint on disk whose last step's
metrics never reached ``metrics.csv`` or the event file, and the resumed run, which keeps the rows before its
checkpoint, never logged them again. With ``CommitAfterLogs`` (installed by ``vlrl`` with this writer) a checkpoint is
written and fsynced aside at once but renamed into place (committed) only once the loggers have received every step
it covers and have been flushed to disk (CSV, TensorBoard; ``samples.jsonl`` is closed after each write). A kill in
between leaves the previous checkpoint, and the resumed run logs the step again. Not covered: W&B (its own process
streams the files), and sharded checkpoints (``save_distributed_checkpoint=True``: torch.distributed.checkpoint
writes those folders itself).

``vlrl`` installs this writer by default; remote URLs (``s3://`` ...) go to Lightning's writer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

log = logging.getLogger(__name__)

PARTIAL = ".partial-"


def _is_local(path: str | Path) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before the rename."""
    return path.with_name(f".{path.name}{PARTIAL}{os.getpid()}")


def remove_stale_partials(folder: Path) -> int:
    """Delete partial checkpoint files in ``folder`` left by processes that no longer run; returns how many."""
    removed = 0
    for leftover in folder.glob(f".*{PARTIAL}*"):
        pid = leftover.name.rsplit(PARTIAL, 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def write_aside(obj: Any, path: Path) -> Path:
    """``torch.save`` ``obj`` to ``path``'s partial file, fsynced; returns that file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        with tmp.open("wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit(tmp: Path, path: Path) -> None:
    """Rename a partial file over ``path`` (atomic within one filesystem) and make the rename durable."""
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` such that ``path`` holds either its old content or all of the new one."""
    path = Path(path)
    commit(write_aside(obj, path), path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO with crash-safe local writes (see the module docstring). With ``logs`` set (by
    ``CommitAfterLogs``) a checkpoint waits, written aside, until the logs of every batch it covers are on disk, and
    a file ``ModelCheckpoint`` rotates out meanwhile is deleted only once the waiting ones are committed."""

    def __init__(self) -> None:
        super().__init__()
        self.stale_partials_removed = 0
        self.logs: CommitAfterLogs | None = None
        self.pending: dict[Path, tuple[Path, int]] = {}  # target -> (its partial file, batches it covers)
        self.deletions: list[Any] = []  # files to remove once nothing is pending

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local paths")
        path = Path(str(path).removeprefix("file://"))
        if path.parent.exists():
            self.stale_partials_removed += remove_stale_partials(path.parent)
        if self.logs is None:
            return atomic_torch_save(checkpoint, path)
        self.pending[path] = (write_aside(checkpoint, path), self.logs.processed())
        self.commit_ready(self.logs.logged())

    def remove_checkpoint(self, path: Any) -> None:
        pending = self.pending.pop(Path(str(path).removeprefix("file://")), None)
        if pending:
            pending[0].unlink(missing_ok=True)
        if self.pending and not pending:  # the older file stays until the newer one is committed
            self.deletions.append(path)
        else:
            super().remove_checkpoint(path)

    def commit_ready(self, logged: int) -> int:
        """Commit the pending checkpoints that cover at most ``logged`` batches, the logs flushed first; then, once
        nothing is pending, remove the rotated-out files. Returns how many were committed."""
        ready = [(path, tmp) for path, (tmp, covers) in list(self.pending.items()) if covers <= logged]
        if ready and self.logs is not None:
            self.logs.flush()
        for path, tmp in ready:
            commit(tmp, path)
            self.pending.pop(path, None)
        if not self.pending:
            for path in self.deletions:
                super().remove_checkpoint(path)
            self.deletions = []
        return len(ready)

    def abandon(self) -> list[Path]:
        """Delete the partial files of checkpoints that can no longer be committed (the files they would have
        replaced or rotated out stay); returns their targets."""
        for tmp, _ in self.pending.values():
            tmp.unlink(missing_ok=True)
        targets, self.pending, self.deletions = list(self.pending), {}, []
        return targets


class CommitAfterLogs(Callback):
    """Commits ``AtomicCheckpointIO``'s checkpoints once the logs of the batches they cover are written (see the module
    docstring). Lightning logs a batch's metrics after its ``on_train_batch_end`` hooks, where ``ModelCheckpoint``
    saves, and an epoch's metrics after its ``on_train_epoch_end`` hooks. The hooks below run after both: each marks
    the batches processed so far as logged. Not ``on_validation_start``: a run resumed from the checkpoint of the step
    before a validation does not validate again, so that checkpoint covers the validation's metrics too; not the
    ``on_validation_end`` of an epoch's last batch, whose epoch metrics are still to come."""

    def __init__(self) -> None:
        self.trainer = None
        self.logged_through = 0  # batches whose logs (and any validation after them) are written

    def setup(self, trainer, pl_module, stage: str) -> None:
        io = trainer.strategy.checkpoint_io
        if stage != "fit" or not isinstance(io, AtomicCheckpointIO):
            return
        if any(getattr(c, "save_last", None) == "link" for c in trainer.checkpoint_callbacks):
            log.warning("save_last='link': checkpoints are committed as soon as written (a link needs its target)")
            return
        self.trainer, io.logs, self.logged_through = trainer, self, 0

    def processed(self) -> int:
        return self.trainer.fit_loop.epoch_loop.batch_progress.total.processed

    def logged(self) -> int:
        return self.logged_through

    def flush(self) -> None:
        """Every logger's buffered metrics and events to its files, and the files to disk."""
        for logger in self.trainer.loggers:
            logger.save()
            flush = getattr(getattr(logger, "experiment", None), "flush", None)
            if isinstance(logger, TensorBoardLogger) and callable(flush):
                flush()
            log_dir = getattr(logger, "log_dir", None)
            for path in Path(log_dir).glob("*") if log_dir and Path(log_dir).is_dir() else []:
                if path.is_file():
                    with path.open("rb") as f:
                        os.fsync(f.fileno())

    def _logged(self, trainer, *args: Any) -> None:
        io = trainer.strategy.checkpoint_io
        if self.trainer is not None and isinstance(io, AtomicCheckpointIO):
            self.logged_through = self.processed()
            io.commit_ready(self.logged_through)

    on_train_batch_start = on_train_epoch_start = on_train_end = _logged

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._logged(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Commit what the logged batches cover (a batch is completed just before its metrics are logged), then drop
        the rest: Lightning calls no ``teardown`` after an exception."""
        io = trainer.strategy.checkpoint_io
        if self.trainer is not None and isinstance(io, AtomicCheckpointIO):
            io.commit_ready(trainer.fit_loop.epoch_loop.batch_progress.total.completed)
            self.teardown(trainer, pl_module, "fit")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        io = trainer.strategy.checkpoint_io
        if self.trainer is None or not isinstance(io, AtomicCheckpointIO):
            return
        io.commit_ready(self.logged_through)
        for target in io.abandon():
            log.warning("%s was not committed: the run stopped before the logs of its last step were written", target)
        io.logs, self.trainer = None, None
