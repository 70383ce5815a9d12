"""``vlrl fit`` on two CPU processes (DDP over gloo): each rank rolls out its own share of the prompts, and the
ranks' gradients are averaged, so both hold the same weights after every step although they trained on different
prompts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning import Callback

from tests.e2e import HF_ENGINE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
DEMO = ROOT / "configs" / "demo_grpo.yaml"
REWARDS = '[{"class_path": "tests.e2e.test_grpo_cli.TextLengthReward"}]'


class RecordSteps(Callback):
    """Writes, per rank and step, the prompt ids the rank rolled out and a checksum of its trainable weights."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        weights = [p.detach().double() for p in pl_module.policy.parameters() if p.requires_grad]
        record = {
            "rank": trainer.global_rank,
            "step": trainer.global_step,
            "ids": list(batch["id"]),
            "checksum": float(
                sum((w * torch.linspace(-1, 1, w.numel(), dtype=w.dtype).view_as(w)).sum() for w in weights)
            ),
        }
        with (self.out_dir / f"rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")


def test_two_process_ddp_splits_rollouts_and_agrees_on_gradients(tiny_checkpoint, tmp_path):
    args = [
        sys.executable,
        "-m",
        "vlrl_cli",
        "fit",
        "-c",
        str(DEMO),
        HF_ENGINE,
        f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
        f"--model.init_args.rewards={REWARDS}",
        "--model.init_args.reward_weights=[1.0]",
        "--model.init_args.optim.lr=1e-3",
        "--model.init_args.update.micro_batch_size=2",
        "--model.init_args.rollout.group_size=2",
        "--model.init_args.rollout.max_new_tokens=5",
        f"--data.init_args.data_dir={tmp_path / 'data'}",
        "--data.init_args.train_size=8",
        "--data.init_args.val_size=2",
        "--data.init_args.image_size=56",
        "--data.init_args.loader.batch_size=2",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.callbacks+=tests.e2e.test_ddp.RecordSteps",
        f"--trainer.callbacks.init_args.out_dir={tmp_path}",
    ]
    run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [[json.loads(line) for line in (tmp_path / f"rank{r}.jsonl").open()] for r in (0, 1)]
    assert [len(steps) for steps in ranks] == [2, 2]
    seen = []
    for step0, step1 in zip(*ranks):
        assert step0["step"] == step1["step"]
        assert len(step0["ids"]) == len(step1["ids"]) == 2
        assert not set(step0["ids"]) & set(step1["ids"]), "each rank rolls out its own prompts"
        assert abs(step0["checksum"] - step1["checksum"]) <= 1e-9 * abs(step0["checksum"]), "weights diverged"
        seen += step0["ids"] + step1["ids"]
    assert len(set(seen)) == 8  # two steps x two ranks x two prompts: every training prompt once
    assert ranks[0][0]["checksum"] != ranks[0][1]["checksum"]  # the second step moved the weights
