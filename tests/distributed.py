"""Test code on several CPU processes over gloo: a free port, and the process group set up and torn down around the
function each rank runs."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp


def _rank_main(rank: int, world: int, port: int, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, *args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_on_ranks(fn: Callable[..., None], *args: Any, world: int = 2) -> None:
    """``fn(rank, *args)`` on ``world`` processes in one gloo process group; an exception on any rank fails the
    call. ``fn`` is any function of the test module (the ranks are forked from the test process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # forked, not spawned: the ranks start with the test process's imports (torch, transformers, Lightning) instead of
    # importing them again, about 8 s of CPU a process on the CI machine
    mp.start_processes(_rank_main, args=(world, port, fn, args), nprocs=world, join=True, start_method="fork")
