"""``vlrl fit`` with GRPO on the tiny model: two real steps through the CLI, rollout callback and HF engine."""

import csv
from pathlib import Path

import pytest
import torch

from rewards import Reward
from tests.e2e import HF_ENGINE
from vlrl_cli import main


class TextLengthReward(Reward):
    """Varies from sample to sample even for a random-init model, so groups have non-zero advantages."""

    name = "text_length"

    def score(self, completions, **batch):
        return [len(c) / 100 for c in completions]


REWARDS = (
    '[{"class_path": "rewards.AccuracyReward"}, '
    '{"class_path": "rewards.FormatReward", "init_args": {"template": "caption"}}, '
    '{"class_path": "tests.e2e.test_grpo_cli.TextLengthReward"}]'
)
DEMO = Path(__file__).parents[2] / "configs" / "demo_grpo.yaml"


@pytest.mark.slow
def test_grpo_fit_two_steps(tiny_checkpoint, tmp_path):
    cli = main(
        [
            "fit",
            "-c",
            str(DEMO),
            HF_ENGINE,
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
            f"--model.init_args.rewards={REWARDS}",
            "--model.init_args.reward_weights=[1.0, 1.0, 1.0]",
            "--model.init_args.optim.lr=1e-3",
            "--model.init_args.rollout.group_size=2",
            "--model.init_args.rollout.max_new_tokens=6",
            "--model.init_args.update.micro_batch_size=2",
            f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.train_size=8",
            "--data.init_args.val_size=4",
            "--data.init_args.image_size=56",
            "--data.init_args.loader.batch_size=2",
            "--data.init_args.loader.limit_val=2",
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
    )
    module = cli.model
    from transformers import AutoModelForImageTextToText

    start = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint)
    changed = [
        n
        for (n, a), (_, b) in zip(module.policy.named_parameters(), start.named_parameters())
        if not torch.equal(a.detach(), b)
    ]
    assert changed, "two GRPO steps must change the policy"
    ref_equal = all(torch.equal(a, b) for a, b in zip(module.reference.model.parameters(), start.parameters()))
    assert ref_equal, "the reference stays frozen"
    state = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=False)["state_dict"]
    assert state and not any(k.startswith("reference") for k in state)
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    keys = set().union(*[{k for k, v in r.items() if v} for r in rows])
    for key in (
        "reward/total",
        "reward/text_length",
        "reward/accuracy",
        "reward/format",
        "train/loss",
        "train/kl",
        "train/entropy",
        "rollout/completion_length_mean",
        "rollout/truncated_rate",
        "rollout/zero_variance_groups",
        "train/beta",
        "val/accuracy",
        "val/format_rate",
    ):
        assert key in keys, key
    import json

    samples = [json.loads(line) for line in (Path(cli.trainer.log_dir) / "samples.jsonl").open()]
    assert samples and {"id", "images", "problem", "solution", "completion", "rewards"} <= set(samples[0])
    assert all(Path(path).is_file() for s in samples for path in s["images"])  # the image files themselves

    # the export command rebuilds the module from the run's config and writes a folder transformers loads
    import subprocess
    import sys

    ckpt = next(tmp_path.rglob("*.ckpt"))
    out = tmp_path / "exported"
    subprocess.run(
        [sys.executable, "-m", "tools.export", str(ckpt), str(out)], check=True, cwd=Path(__file__).parents[2]
    )
    exported = AutoModelForImageTextToText.from_pretrained(out)
    for (name, a), (_, b) in zip(exported.named_parameters(), module.policy.named_parameters()):
        assert torch.equal(a, b.detach()), name


@pytest.mark.slow
def test_grpo_lora_changes_only_adapter_weights(tiny_checkpoint, tmp_path):
    from transformers import AutoModelForImageTextToText

    cli = main(
        [
            "fit",
            "-c",
            str(DEMO),
            "-c",
            str(DEMO.parent / "lora.yaml"),
            HF_ENGINE,
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
            "--model.init_args.policy.lora.r=4",
            f"--model.init_args.rewards={REWARDS}",
            "--model.init_args.reward_weights=[1.0, 1.0, 1.0]",
            "--model.init_args.optim.lr=1e-2",
            "--model.init_args.rollout.group_size=2",
            "--model.init_args.rollout.max_new_tokens=6",
            "--model.init_args.update.micro_batch_size=4",
            f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.train_size=4",
            "--data.init_args.val_size=2",
            "--data.init_args.image_size=56",
            "--data.init_args.loader.batch_size=2",
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
            f"--trainer.default_root_dir={tmp_path}",
        ],
    )
    policy = cli.model.policy
    start = dict(AutoModelForImageTextToText.from_pretrained(tiny_checkpoint).named_parameters())
    base = policy.get_base_model()
    checked = 0
    for name, param in base.named_parameters():
        if "lora_" in name:
            continue
        key = name.replace(".base_layer", "")
        assert torch.equal(param.detach(), start[key]), f"base weight {key} changed"
        checked += 1
    assert checked == len(start)
    lora_b = [p for n, p in policy.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b), "peft starts B at 0; one step must move it"
    assert cli.model.reference is None


def test_validate_and_test_subcommands(tiny_checkpoint, tmp_path):
    common = [
        "-c",
        str(DEMO),
        HF_ENGINE,
        f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
        "--model.init_args.evaluation.max_new_tokens=4",
        f"--data.init_args.data_dir={tmp_path / 'data'}",
        "--data.init_args.train_size=2",
        "--data.init_args.val_size=3",
        "--data.init_args.image_size=56",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    for command in ("validate", "test"):
        metrics = main([command, *common]).trainer.callback_metrics
        prefix = "val" if command == "validate" else "test"
        assert metrics[f"{prefix}/accuracy"].item() == 0.0  # a random-init model answers nothing right
        assert 0 < metrics[f"{prefix}/completion_length"].item() <= 4


class SomeGroupsReward(Reward):
    """Constant for prompts whose answer is A (a zero-variance group), the completion's length for the others."""

    name = "some_groups"
    columns = ("solution",)

    def score(self, completions, solution, **batch):
        return [0.0 if "A" in s else len(c) / 100 for c, s in zip(completions, solution)]


@pytest.mark.slow
def test_dynamic_sampling_trains_on_informative_groups_only(tiny_checkpoint, tmp_path):
    from lightning_modules.config import RolloutSettings

    with pytest.raises(ValueError, match="prompts_per_step must be >= 1"):
        RolloutSettings(dynamic_sampling=True, prompts_per_step=0)
    cli = main(
        [
            "fit",
            "-c",
            str(DEMO),
            HF_ENGINE,
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
            '--model.init_args.rewards=[{"class_path": "tests.e2e.test_grpo_cli.SomeGroupsReward"}]',
            "--model.init_args.reward_weights=[1.0]",
            "--model.init_args.rollout.group_size=3",
            "--model.init_args.rollout.max_new_tokens=6",
            "--model.init_args.rollout.dynamic_sampling=true",
            "--model.init_args.rollout.prompts_per_step=1",
            f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.train_size=16",
            "--data.init_args.image_size=56",
            "--data.init_args.loader.batch_size=4",
            "--trainer.max_steps=3",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
    )
    seen: list[int] = []
    original = cli.model.loss_fn.forward

    def counting(logps, *args, **kwargs):
        seen.append(logps.shape[0])
        return original(logps, *args, **kwargs)

    rows = [r for r in csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))) if r.get("rollout/groups")]
    assert len(rows) >= 3
    for r in rows:
        informative = float(r["rollout/groups"]) - float(r["rollout/zero_variance_groups"])
        assert float(r["rollout/groups"]) == 4.0
        assert float(r["rollout/groups_kept"]) == min(1.0, informative)
    assert any(float(r["rollout/zero_variance_groups"]) > 0 for r in rows)  # the filter had something to drop
    # one more step, watching what reaches the loss: one group of 3 rows
    cli.model.loss_fn.forward = counting
    cli.trainer.fit_loop.epoch_loop.max_steps = 4
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert seen and set(seen) == {3}


@pytest.mark.slow
def test_dynamic_sampling_stops_when_no_group_ever_differs(tiny_checkpoint, tmp_path):
    # a random-init model never writes the caption format: every completion scores 0, no pool is informative
    with pytest.raises(RuntimeError, match="3 pools in a row"):
        main(
            [
                "fit",
                "-c",
                str(DEMO),
                HF_ENGINE,
                f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
                "--model.init_args.rewards="
                '[{"class_path": "rewards.FormatReward", "init_args": {"template": "caption"}}]',
                "--model.init_args.reward_weights=[1.0]",
                "--model.init_args.rollout.group_size=2",
                "--model.init_args.rollout.max_new_tokens=4",
                "--model.init_args.rollout.max_uninformative_in_a_row=2",
                f"--data.init_args.data_dir={tmp_path / 'data'}",
                "--data.init_args.train_size=8",
                "--data.init_args.image_size=56",
                "--data.init_args.loader.batch_size=2",
                "--trainer.max_steps=2",
                "--trainer.limit_val_batches=0",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={tmp_path}",
                f"--trainer.logger.init_args.save_dir={tmp_path}",
            ],
        )


@pytest.mark.slow
def test_a_step_without_an_informative_group_after_an_update_logs_like_the_others(tiny_checkpoint, tmp_path):
    # pool 1 updates and logs reward/total on the progress bar; pool 2 has no informative group and logs the
    # rollout's metrics alone (the same key logged with other options used to stop the run); pool 3 updates
    cli = main(
        [
            "fit",
            "-c",
            str(DEMO),
            HF_ENGINE,
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
            '--model.init_args.rewards=[{"class_path": "tests.probes.AlternatingReward"}]',
            "--model.init_args.reward_weights=[1.0]",
            "--model.init_args.rollout.group_size=2",
            "--model.init_args.rollout.max_new_tokens=4",
            "--model.init_args.rollout.max_uninformative_in_a_row=5",
            f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.train_size=8",
            "--data.init_args.image_size=56",
            "--data.init_args.loader.batch_size=2",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
    )
    assert cli.trainer.global_step == 2 and cli.model.rewards.rewards[0].calls == 3
    rows = list(csv.DictReader((Path(cli.trainer.logger.log_dir) / "metrics.csv").open()))
    uninformative = [float(r["rollout/uninformative_steps"]) for r in rows if r.get("rollout/uninformative_steps")]
    assert uninformative and max(uninformative) == 1.0


def test_plain_template_evaluation_reads_the_whole_reply(tiny_checkpoint, tmp_path):
    """``plain`` prompts ask for a bare answer: a configured accuracy reward that reads only ``<answer>`` blocks is an
    error before any model loads; the default evaluation scorer reads the whole reply."""
    args = [
        "-c",
        str(DEMO),
        HF_ENGINE,
        f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
        f"--data.init_args.data_dir={tmp_path / 'data'}",
        "--data.init_args.train_size=4",
        "--data.init_args.val_size=2",
        "--data.init_args.image_size=56",
        "--data.init_args.prompts.template=plain",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        "--trainer.limit_val_batches=1",
        "--model.init_args.reward_weights=[1.0]",
    ]
    cli = main([*args, '--model.init_args.rewards=[{"class_path": "rewards.AccuracyReward"}]'], run=False)
    with pytest.raises(ValueError, match="answer_fallbacks"):
        cli.trainer.validate(cli.model, datamodule=cli.datamodule)
    assert cli.model.policy is None  # failed before loading the model
    cli = main(
        [*args, '--model.init_args.rewards=[{"class_path": "tests.e2e.test_grpo_cli.TextLengthReward"}]'], run=False
    )
    cli.trainer.validate(cli.model, datamodule=cli.datamodule)
    assert cli.model.scorers.accuracy.answer_fallbacks == ("text",)
