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


class _Tiny:
    """A one-layer LightningModule whose ``on_train_batch_end`` (between Lightning's checkpoint and the step's logs)
    records what the checkpoint folder holds."""

    @staticmethod
    def make(folder: Path, seen: dict):
        import lightning as L

        class Tiny(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(2, 1)

            def training_step(self, batch, batch_idx):
                loss = self.layer(batch[0]).square().mean()
                self.log("loss", loss)
                return loss

            def on_train_batch_end(self, outputs, batch, batch_idx):
                seen[self.global_step] = sorted(p.name for p in folder.iterdir()) if folder.exists() else []

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return Tiny()


def test_a_rotated_out_checkpoint_stays_until_the_new_one_is_committed(tmp_path):
    """Under ``CommitAfterLogs``, between a step's checkpoint and its logs, the new checkpoint is only written aside
    and the one it rotates out (``save_top_k=1``) is still on disk: a kill there leaves a loadable top-k file. After
    the fit, everything is committed, nothing partial is left."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from tools.checkpoint_io import CommitAfterLogs

    folder, seen = tmp_path / "ckpt", {}
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(6, 2)), batch_size=1)
    trainer = L.Trainer(
        max_steps=6,
        logger=CSVLogger(tmp_path),
        callbacks=[ModelCheckpoint(folder, every_n_train_steps=2, save_last=True), CommitAfterLogs()],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_Tiny.make(folder, seen), data)
    window = seen[4]  # step=4.ckpt written, step 3's metrics not yet logged
    assert "epoch=0-step=2.ckpt" in window and "epoch=0-step=4.ckpt" not in window, window
    assert any(name.startswith(".epoch=0-step=4.ckpt.partial-") for name in window), window
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=0-step=6.ckpt", "last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 6


def test_save_last_link_commits_at_once(tmp_path):
    """A ``last.ckpt`` link needs its target on disk: with ``save_last='link'`` checkpoints are not held back."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from tools.checkpoint_io import CommitAfterLogs

    folder, seen = tmp_path / "ckpt", {}
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 2)), batch_size=1)
    trainer = L.Trainer(
        max_steps=4,
        logger=False,
        callbacks=[ModelCheckpoint(folder, every_n_train_steps=2, save_last="link"), CommitAfterLogs()],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_Tiny.make(folder, seen), data)
    assert "epoch=0-step=2.ckpt" in seen[2] and (folder / "last.ckpt").resolve().is_file()
