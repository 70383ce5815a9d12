"""Test code on several CPU processes over gloo: a free port, and the process group set up and torn down around the
function each rank runs."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp

from tests.forked import fork_server


def _rank_main(
    rank: int, world: int, port: int, fn: Callable[..., None], args: tuple[Any, ...], env: dict[str, str], cwd: str
) -> None:
    os.environ.update(env, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # the test's, over the fork server's
    os.chdir(cwd)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, *args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_on_ranks(fn: Callable[..., None], *args: Any, world: int = 2) -> None:
    """``fn(rank, *args)`` on ``world`` processes in one gloo process group; an exception on any rank fails the
    call. ``fn`` must be a module-level function (it is pickled into each process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # forked from the fork server (tests.forked), not spawned: the ranks start with vlrl's stack imported instead of
    # importing it again (about 8 s of CPU a process on the CI machine), and nothing of this test process (an earlier
    # test's process group, autograd's threads) comes with them
    fork_server()
    context = (world, port, fn, args, dict(os.environ), os.getcwd())
    mp.start_processes(_rank_main, args=context, nprocs=world, join=True, start_method="forkserver")
