"""Checkpoint files that a crash cannot damage: write aside in the same folder, fsync, then rename over the target.

Lightning's default writer stages the file in the system temp folder and moves it into place; across filesystems
that move is a copy straight onto the checkpoint path, so a kill during the copy leaves a truncated ``last.ckpt``
(and a stray temp file the size of the model in ``/tmp``). Here the partial file sits beside the target as
``.<name>.partial-<pid>`` and ``os.replace`` swaps it in, which POSIX makes atomic within one filesystem: the old
checkpoint stays whole until the new one is complete. Leftover partial files of dead writers are removed the next
time a checkpoint is written to that folder and counted in ``stale_partials_removed``.

``vlrl`` installs this writer by default (``trainer.plugins``); remote URLs (``s3://`` ...) go to Lightning's writer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

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


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` such that ``path`` holds either its old content or all of the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        with tmp.open("wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO with crash-safe local writes (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.stale_partials_removed = 0

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local paths")
        path = Path(str(path).removeprefix("file://"))
        if path.parent.exists():
            self.stale_partials_removed += remove_stale_partials(path.parent)
        atomic_torch_save(checkpoint, path)
