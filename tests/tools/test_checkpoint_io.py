"""The checkpoint writer: a process killed while writing never damages the checkpoint already on disk."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tools.checkpoint_io import AtomicCheckpointIO, remove_stale_partials

ROOT = Path(__file__).parents[2]
WRITER = """
import sys, torch
from tools.checkpoint_io import AtomicCheckpointIO
io = AtomicCheckpointIO()
step = 1
while True:  # rewrite the checkpoint forever, each version ~64 MB: the test kills it mid-write
    step += 1
    io.save_checkpoint({"step": step, "w": torch.full((16_000_000,), float(step))}, sys.argv[1])
"""


def _consistent(path: Path) -> int:
    ckpt = torch.load(path, weights_only=True)
    assert bool((ckpt["w"] == float(ckpt["step"])).all()), "a checkpoint mixes two versions"
    return ckpt["step"]


@pytest.mark.slow
def test_kill_during_write_leaves_the_last_good_checkpoint(tmp_path):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "w": torch.full((4,), 1.0)}, target)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    partials = []
    deadline = time.monotonic() + 120
    while not partials:  # wait until a partial file is being written, then kill the writer
        partials = [p for p in tmp_path.glob(".last.ckpt.partial-*") if p.stat().st_size > 1_000_000]
        assert proc.poll() is None and time.monotonic() < deadline
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _consistent(target) >= 1  # whole: either the first version or a complete later one
    left = list(tmp_path.glob(".last.ckpt.partial-*"))
    assert left and left[0].name.endswith(str(proc.pid))  # killed mid-write: its partial file is still there
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 99, "w": torch.full((4,), 99.0)}, target)
    assert _consistent(target) == 99
    assert io.stale_partials_removed == 1 and not list(tmp_path.glob(".*partial*"))


def test_partials_of_live_writers_are_kept(tmp_path):
    mine = tmp_path / f".a.ckpt.partial-{os.getpid()}"
    mine.write_bytes(b"in progress")
    assert remove_stale_partials(tmp_path) == 0 and mine.exists()
