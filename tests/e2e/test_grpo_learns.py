"""GRPO raises mean reward on an easily learnable task: seeded, tiny model, real rollouts and updates.

The reward is the share of ASCII letters in the completion. Sampling is restricted to each position's 5 most likely
tokens, so the share varies within each group and the policy only has to reorder a few candidates: a task GRPO should
solve in a few steps, where a sign error or a broken gradient path would show as a flat or falling curve."""

import csv
from pathlib import Path

import pytest

from rewards import Reward
from tests.e2e import HF_ENGINE
from vlrl_cli import main

pytestmark = pytest.mark.slow

DEMO = Path(__file__).parents[2] / "configs" / "demo_grpo.yaml"


class AsciiLetterShare(Reward):
    name = "ascii_letters"

    def score(self, completions, **batch):
        return [sum(ch.isascii() and ch.isalpha() for ch in c) / max(1, len(c)) for c in completions]


def test_grpo_raises_mean_reward(tiny_checkpoint, tmp_path):
    rewards = '[{"class_path": "tests.e2e.test_grpo_learns.AsciiLetterShare"}]'
    main(
        [
            "fit",
            "-c",
            str(DEMO),
            HF_ENGINE,
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
            f"--model.init_args.rewards={rewards}",
            "--model.init_args.reward_weights=[1.0]",
            "--model.init_args.optim.lr=3e-3",
            "--model.init_args.loss.init_args.beta=0.0",
            "--model.init_args.rollout.group_size=8",
            "--model.init_args.rollout.max_new_tokens=8",
            "--model.init_args.rollout.temperature=1.0",
            "--model.init_args.rollout.top_k=5",
            "--model.init_args.update.micro_batch_size=16",
            "--model.init_args.policy.freeze_embeddings=false",
            "--model.init_args.rollout.dynamic_sampling=false",
            f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.train_size=64",
            "--data.init_args.val_size=2",
            "--data.init_args.image_size=56",
            "--data.init_args.loader.batch_size=2",
            "--trainer.max_steps=12",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_checkpointing=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
    )
    rows = [r for r in csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))) if r.get("reward/total")]
    curve = [float(r["reward/total"]) for r in rows]
    assert len(curve) == 12
    first, last = sum(curve[:3]) / 3, sum(curve[-3:]) / 3
    assert last > first + 0.1, f"mean reward did not rise: first 3 steps {first:.3f}, last 3 steps {last:.3f}"
