"""A GRPO module that kills its own process (SIGKILL, no cleanup) at a chosen moment, for the resume tests: the moment
is named by ``VLRL_TEST_KILL=<point>[:<step>]`` (the step as ``global_step`` counts it at that point; without it, the
first time the point is reached). Under several processes ``VLRL_TEST_KILL_RANK`` picks the one that dies (default:
every rank), and ``VLRL_TEST_KILL_MARK`` names a file that gets the time of death. Points, in the order a step
reaches them:

- ``fit_start``: the engine attached (the rollout callback's ``on_fit_start`` runs first), nothing trained yet;
- ``rollout``: the step's rollout and rewards done (the rollout callback's ``on_train_batch_start``), before the update;
- ``backward``: after the first backward pass, gradients partly accumulated;
- ``optimizer_step``: just before the optimizer changes the weights;
- ``after_checkpoint``: the step's checkpoint written, its metrics not yet handed to the loggers (Lightning calls
  the module's ``on_train_batch_end`` between the two: the window ``tools.checkpoint_io.CommitAfterLogs`` closes);
- ``validation``: after a validation batch;
- ``checkpoint_write``: in the middle of writing a checkpoint file (pickling an object that kills);
- ``train_end``: after the last step, before the run's teardown.

Used as ``--model.class_path=tests.e2e.kills.KillableGRPOModule`` (its arguments are ``GRPOModule``'s)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch

from lightning_modules.grpo import GRPOModule

POINTS = (
    "fit_start",
    "rollout",
    "backward",
    "optimizer_step",
    "after_checkpoint",
    "validation",
    "checkpoint_write",
    "train_end",
)


def _die() -> None:
    mark = os.environ.get("VLRL_TEST_KILL_MARK")
    if mark:
        Path(mark).write_text(str(time.time()))
    os.kill(os.getpid(), signal.SIGKILL)


def _chosen(point: str, step: int) -> bool:
    name, _, at = os.environ.get("VLRL_TEST_KILL", "").partition(":")
    rank = os.environ.get("VLRL_TEST_KILL_RANK")
    here = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    return name == point and (not at or int(at) == step) and (rank is None or int(rank) == here)


def maybe_die(point: str, step: int) -> None:
    if _chosen(point, step):
        _die()


class _DiesWhenPickled:
    def __reduce__(self):
        _die()


class KillableGRPOModule(GRPOModule):
    def on_fit_start(self) -> None:
        super().on_fit_start()
        maybe_die("fit_start", self.global_step)

    def on_train_batch_start(self, batch, batch_idx: int):
        maybe_die("rollout", self.global_step)
        return super().on_train_batch_start(batch, batch_idx)

    def on_after_backward(self) -> None:
        super().on_after_backward()
        maybe_die("backward", self.global_step)

    def on_before_optimizer_step(self, optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        maybe_die("optimizer_step", self.global_step)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        maybe_die("after_checkpoint", self.global_step)

    def on_validation_batch_end(self, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        super().on_validation_batch_end(outputs, batch, batch_idx, dataloader_idx)
        maybe_die("validation", self.global_step)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if _chosen("checkpoint_write", self.global_step):
            checkpoint["zzz_dies_when_pickled"] = _DiesWhenPickled()  # last key: most of the file is written first

    def on_train_end(self) -> None:
        super().on_train_end()
        maybe_die("train_end", self.global_step)
