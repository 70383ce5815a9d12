"""Long-run guards. A step whose loss is not finite leaves weights and optimizer untouched and is counted; a
200-step run on data with malformed rows injected at random, a reward that crashes on some rows and one that
returns NaN on others finishes, and every count matches what was injected."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from rewards import Reward
from tests.datamodules.fuzzing import fuzzed_rows, write_odd_images
from vlrl_cli import main

pytestmark = pytest.mark.slow

DEMO = Path(__file__).parents[2] / "configs" / "demo_grpo.yaml"
G = 2


def _number(row_id: str) -> int:
    return int(row_id.split("-")[1])


class CrashesOnSevens(Reward):
    """A buggy user reward: raises on rows whose number is a multiple of 7."""

    name = "crashy"
    columns = ("id",)

    def score(self, completions, **batch):
        return [1 / 0 if _number(i) % 7 == 0 else len(c) / 50 for c, i in zip(completions, batch["id"])]


class NaNOnElevens(Reward):
    """Returns NaN on rows whose number is a multiple of 11 (every row when ``all_rows``)."""

    name = "nan"
    columns = ("id",)

    def __init__(self, all_rows: bool = False):
        super().__init__()
        self.all_rows = all_rows

    def score(self, completions, **batch):
        return [float("nan") if self.all_rows or _number(i) % 11 == 0 else 0.0 for i in batch["id"]]


def _config(tmp_path: Path, train_data: Path, rewards: list[dict], steps: int) -> Path:
    config = yaml.safe_load(DEMO.read_text())
    config["model"]["init_args"].update(
        engine={"class_path": "rollout.hf.HFEngine"},
        rewards=rewards,
        reward_weights=[1.0] * len(rewards),
        optim={**config["model"]["init_args"]["optim"], "lr": 1e-4},
        update={**config["model"]["init_args"]["update"], "micro_batch_size": 4},
        rollout={"group_size": G, "max_new_tokens": 4, "temperature": 1.0, "log_samples_every_n_steps": 0},
    )
    config["data"] = {
        "class_path": "datamodules.vqa.VQADataModule",
        "init_args": {
            "train_data": str(train_data),
            "prompts": {"min_pixels": 56 * 56, "max_pixels": 56 * 56, "skip_bad_rows": True},
            "loader": {"batch_size": 2, "shuffle": False},
        },
    }
    config["trainer"].update(
        max_steps=steps,
        max_epochs=1,
        limit_val_batches=0,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path)
    path = tmp_path / "soak.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _metrics(cli) -> list[dict]:
    return list(csv.DictReader(open(Path(cli.trainer.log_dir) / "metrics.csv")))


def test_nonfinite_loss_skips_the_step_and_leaves_weights_untouched(tiny_checkpoint, tmp_path):
    images = write_odd_images(tmp_path / "images")
    rows, _, _ = fuzzed_rows(6, 0.0, images)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rewards = [{"class_path": "tests.e2e.test_soak.NaNOnElevens", "init_args": {"all_rows": True}}]
    cli = main(
        [
            "fit",
            "-c",
            str(_config(tmp_path, data, rewards, steps=-1)),
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
        ]
    )
    from transformers import AutoModelForImageTextToText

    start = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(cli.model.policy.parameters(), start.parameters()))
    assert cli.trainer.global_step == 0 and not cli.trainer.optimizers[0].state  # no Adam moments either
    assert cli.model.skipped_steps == 3  # 6 rows, 2 per batch
    logged = [float(r["train/nonfinite_skipped"]) for r in _metrics(cli) if r.get("train/nonfinite_skipped")]
    assert logged == [1.0, 2.0, 3.0]


def test_soak_200_steps_with_bad_rows_crashing_and_nan_rewards(tiny_checkpoint, tmp_path):
    images = write_odd_images(tmp_path / "images")
    rows, injected, bad = fuzzed_rows(560, 0.12, images, seed=3)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rewards = [
        {"class_path": "rewards.AccuracyReward"},
        {"class_path": "rewards.FormatReward", "init_args": {"template": "caption"}},
        {"class_path": "tests.e2e.test_soak.CrashesOnSevens"},
        {"class_path": "tests.e2e.test_soak.NaNOnElevens"},
    ]
    cli = main(
        [
            "fit",
            "-c",
            str(_config(tmp_path, data, rewards, steps=-1)),
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
        ]
    )

    truncated = {r["id"] for r in rows if r["image"] == images["truncated"]}  # bad bodies: seen only when read
    used = [r for r in rows if r["id"] not in bad or r["id"] in truncated]  # the scan at setup left the rest out
    batches = [used[i : i + 2] for i in range(0, len(used), 2)]  # shuffle off: the sampler's order
    kept = [[r for r in b if r["id"] not in bad] for b in batches]
    nan_batches = sum(any(_number(r["id"]) % 11 == 0 for r in b) for b in kept if b)
    steps = sum(1 for b in kept if b) - nan_batches
    assert steps >= 200 and cli.trainer.global_step == steps
    assert cli.model.skipped_steps == nan_batches

    assert len(bad) == sum(injected.values())
    report = [json.loads(line) for line in (Path(cli.trainer.log_dir) / "skipped_rows.jsonl").read_text().splitlines()]
    assert len(report) == len(bad) and all(r["stage"] == "train" for r in report)
    assert [r["reason"] for r in report].count("bad_row") == len(truncated) > 0  # the others: the scan's reasons
    named = {int(r["message"].split(" row index ")[1].split(":")[0].split(",")[0]) for r in report}
    assert named == {_number(i) for i in bad}  # each skip names its row
    metrics = _metrics(cli)
    skipped_logged = sum(float(v) for r in metrics for k, v in r.items() if k.startswith("data/skipped_") and v)
    assert skipped_logged == len(bad)
    crashes = sum(_number(r["id"]) % 7 == 0 for b in kept for r in b)
    assert sum(float(r["crashy/errors"]) for r in metrics if r.get("crashy/errors")) == G * crashes
    assert crashes > 0 and nan_batches > 0
