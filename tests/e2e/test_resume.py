"""A run resumed from its step-2 checkpoint takes the same third step as the uninterrupted run: same batch, same
sampled completions, same rewards, same loss (data position, RNG, optimizer, scheduler and beta all restored)."""

import csv
from pathlib import Path

import pytest

from tests.e2e import HF_ENGINE
from vlrl_cli import main

DEMO = Path(__file__).parents[2] / "configs" / "demo_grpo.yaml"
REWARDS = '[{"class_path": "tests.e2e.test_grpo_cli.TextLengthReward"}]'


def run(tiny_checkpoint, data_dir, root, steps, ckpt=None):
    args = [
        "fit", "-c", str(DEMO), HF_ENGINE, f"--model.init_args.model_name_or_path={tiny_checkpoint}",
        f"--model.init_args.rewards={REWARDS}", "--model.init_args.reward_weights=[1.0]",
        "--model.init_args.lr=1e-3", "--model.init_args.beta_schedule=cosine",
        "--model.init_args.rollout.group_size=2", "--model.init_args.rollout.max_new_tokens=5",
        "--model.init_args.rollout.log_samples_every_n_steps=1", "--model.init_args.rollout.num_logged_samples=2",
        "--model.init_args.micro_batch_size=4", f"--data.init_args.data_dir={data_dir}",
        "--data.init_args.train_size=10", "--data.init_args.val_size=2", "--data.init_args.image_size=56",
        "--data.init_args.batch_size=2", "--trainer.max_steps=" + str(steps), "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        '--trainer.callbacks=[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", '
        '"init_args": {"every_n_train_steps": 1, "save_top_k": -1, "dirpath": "' + str(root / "ckpt") + '"}}]',
    ]  # fmt: skip
    if ckpt:
        args.append(f"--ckpt_path={ckpt}")
    main(args)
    rows = [r for r in csv.DictReader(open(next(root.rglob("metrics.csv")))) if r.get("train/loss")]
    samples = [line for line in (next(root.rglob("samples.jsonl"))).read_text().splitlines()]
    return {int(r["step"]): r for r in rows}, samples


def test_resume_reproduces_the_next_step(tiny_checkpoint, tmp_path):
    full, full_samples = run(tiny_checkpoint, tmp_path / "data", tmp_path / "full", steps=6)
    ckpt = next((tmp_path / "full" / "ckpt").glob("*step=4.ckpt"))
    resumed, resumed_samples = run(tiny_checkpoint, tmp_path / "data", tmp_path / "resumed", steps=6, ckpt=ckpt)
    assert sorted(resumed) == [4, 5]  # 5 batches an epoch: the last batch of epoch 0, then the first of epoch 1
    for step in (4, 5):
        for key in ("train/loss", "reward/total", "train/beta", "train/lr", "rollout/completion_length_mean"):
            assert float(resumed[step][key]) == pytest.approx(float(full[step][key]), abs=1e-6), (step, key)
    assert resumed_samples == full_samples[-len(resumed_samples) :]  # same prompts, completions and rewards
