"""GRPOModule: its argument groups, the steps of ``training_step`` on the tiny model (an update moves the weights
and logs its metrics; a non-finite loss, an uninformative rollout take no update), and evaluation scoring with its
own reward copies."""

from __future__ import annotations

import pytest
import torch
from lightning import Trainer

from datamodules.config import LoaderConfig, PromptConfig
from datamodules.vqa import VQADataModule
from lightning_modules.config import EvalConfig, OptimConfig, PolicyConfig, RolloutSettings, UpdateConfig
from lightning_modules.grpo import GRPOModule
from rewards import AccuracyReward, FormatReward, Reward
from tests.probes import TextChecksumReward, moved_fraction


class NaNReward(Reward):
    name = "nan"

    def score(self, completions, **batch):
        return [float("nan")] * len(completions)


class ZeroReward(Reward):
    name = "zero"

    def score(self, completions, **batch):
        return [0.0] * len(completions)


def grpo(checkpoint, rewards: list[Reward], dynamic_sampling: bool = False, **groups) -> GRPOModule:
    return GRPOModule(
        policy=PolicyConfig(str(checkpoint)),
        rewards=rewards,
        rollout=RolloutSettings(
            group_size=2, max_new_tokens=4, log_samples_every_n_steps=0, dynamic_sampling=dynamic_sampling
        ),
        optim=OptimConfig(lr=1e-3),
        update=UpdateConfig(micro_batch_size=2),
        **groups,
    )


def fit(module: GRPOModule, checkpoint, synthetic_dir, tmp_path, steps: int = 1) -> Trainer:
    data = VQADataModule(
        train_data=str(synthetic_dir / "train.jsonl"),
        val_data=str(synthetic_dir / "train.jsonl"),
        model_name_or_path=str(checkpoint),
        loader=LoaderConfig(batch_size=2, limit_val=2, shuffle=False),
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        max_epochs=1,  # a step without an update does not count towards max_steps
        limit_train_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    module.configure_model()
    trainer.fit(module, datamodule=data)
    return trainer


def weights(module: GRPOModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.policy.named_parameters() if v.requires_grad}


def test_arguments_come_in_groups_and_checkpoints_hold_plain_values(tmp_path):
    module = GRPOModule(
        policy=PolicyConfig("no/such/model", reference_dtype="bfloat16"),
        rewards=[AccuracyReward(), FormatReward(template="caption")],
        update=UpdateConfig(micro_batch_size=4, beta_schedule="cosine"),
        evaluation=EvalConfig(max_new_tokens=12),
    )
    assert module.policy_config.reference_dtype == "bfloat16" and module.update_config.micro_batch_size == 4
    assert module.optim_config == OptimConfig() and module.eval_config.sampling.temperature == 0.0  # greedy
    assert module.hparams["update"] == {**vars(UpdateConfig()), "micro_batch_size": 4, "beta_schedule": "cosine"}
    torch.save(dict(module.hparams), tmp_path / "h.pt")
    assert torch.load(tmp_path / "h.pt", weights_only=True)["policy"]["model_name_or_path"] == "no/such/model"
    # evaluation scores with copies: same settings, not the training instances
    accuracy, fmt = module.rewards.rewards
    assert module.scorers.accuracy is not accuracy and type(module.scorers.accuracy) is AccuracyReward
    assert module.scorers.format is not fmt and module.scorers.format.template == "caption"
    assert module.scorers.caption is None


def test_a_typo_in_a_group_stops_before_a_model_loads():
    with pytest.raises(ValueError, match="dtype"):
        PolicyConfig("no/such/model", dtype="bf16")
    with pytest.raises(ValueError, match="logps_forward"):
        UpdateConfig(logps_forward="shared")


def test_one_update_moves_the_weights_and_logs_its_metrics(tiny_checkpoint, synthetic_dir, tmp_path):
    module = grpo(tiny_checkpoint, [TextChecksumReward()])
    module.configure_model()
    before = weights(module)
    trainer = fit(module, tiny_checkpoint, synthetic_dir, tmp_path)
    assert trainer.global_step == 1 and moved_fraction(before, module.policy) > 0 and module.skipped_steps == 0
    logged = trainer.callback_metrics
    for key in ("train/loss", "train/grad_norm", "train/entropy", "train/beta", "train/lr", "reward/total"):
        assert key in logged, key
    assert float(logged["train/nonfinite_skipped"]) == 0.0
    assert float(logged["train/lr"]) == pytest.approx(1e-3)


def test_a_non_finite_loss_skips_the_update(tiny_checkpoint, synthetic_dir, tmp_path):
    module = grpo(tiny_checkpoint, [NaNReward()])  # NaN rewards -> NaN advantages -> NaN loss
    module.configure_model()
    before = weights(module)
    trainer = fit(module, tiny_checkpoint, synthetic_dir, tmp_path)
    assert moved_fraction(before, module.policy) == 0 and module.skipped_steps == 2  # both batches of the epoch
    assert float(trainer.callback_metrics["train/nonfinite_skipped"]) == 2.0
    assert "train/loss" not in trainer.callback_metrics  # no update: no update metrics


def test_an_uninformative_rollout_takes_no_update(tiny_checkpoint, synthetic_dir, tmp_path):
    module = grpo(tiny_checkpoint, [ZeroReward()], dynamic_sampling=True)  # every group's rewards are equal
    module.configure_model()
    before = weights(module)
    trainer = fit(module, tiny_checkpoint, synthetic_dir, tmp_path)
    assert trainer.global_step == 0 and moved_fraction(before, module.policy) == 0
    assert float(trainer.callback_metrics["rollout/uninformative_steps"]) == 2.0
    assert "train/loss" not in trainer.callback_metrics


def test_evaluation_leaves_the_training_rewards_counters_alone(tiny_checkpoint, synthetic_dir, tmp_path):
    module = grpo(
        tiny_checkpoint,
        [AccuracyReward(), FormatReward(template="caption")],
        evaluation=EvalConfig(shortcut_diagnostics=True),
    )
    data = VQADataModule(
        val_data=str(synthetic_dir / "train.jsonl"),
        model_name_or_path=str(tiny_checkpoint),
        loader=LoaderConfig(batch_size=2, limit_val=2),
    )
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.validate(module, datamodule=data, verbose=False)
    assert "val/accuracy" in trainer.callback_metrics and "val/blind_accuracy" in trainer.callback_metrics
    # a random model writes no <answer> block: the evaluation copy counts it, the training reward does not
    assert float(trainer.callback_metrics["val/counts/accuracy/no_answer"]) > 0  # the copy counted, and logged it
    assert all(not reward.stats for reward in module.rewards.rewards)


def test_a_format_reward_checking_another_template_than_the_prompts_stops_the_run(tiny_checkpoint, synthetic_dir):
    module = grpo(tiny_checkpoint, [AccuracyReward(), FormatReward(template="caption")])
    data = VQADataModule(
        val_data=str(synthetic_dir / "train.jsonl"),
        model_name_or_path=str(tiny_checkpoint),
        prompts=PromptConfig(template="think"),
    )
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="template is 'think' but the format reward checks template 'caption'"):
        trainer.validate(module, datamodule=data, verbose=False)
    assert module.policy is None  # stopped in setup, before the model loaded


def one_step(checkpoint, synthetic_dir, tmp_path, **update) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The weights after one update, and the update's loss and gradient norm (before clipping)."""
    torch.manual_seed(0)  # the same rollouts for every setting: sampling does not depend on the update's settings
    module = grpo(checkpoint, [TextChecksumReward()])
    module.update_config = UpdateConfig(**update)
    trainer = fit(module, checkpoint, synthetic_dir, tmp_path)
    logged = {key: float(trainer.callback_metrics[f"train/{key}"]) for key in ("loss", "grad_norm")}
    return weights(module), logged


@pytest.mark.slow
def test_micro_batches_and_log_prob_forwards_take_the_same_step(tiny_checkpoint, synthetic_dir, tmp_path):
    """4 rows (2 prompts x G 2) in one micro-batch, or in micro-batches that begin inside groups, through the
    shared-prefix forward or the model's own per-row forward: each micro-batch's loss is weighted by its share of
    rows, so the loss and the gradient (its norm: Adam's step alone would not show a wrong scale) are the same."""
    whole, whole_logged = one_step(tiny_checkpoint, synthetic_dir, tmp_path / "a", micro_batch_size=4)
    settings = (
        {"micro_batch_size": 1},
        {"micro_batch_size": 3},
        {"micro_batch_size": 1, "logps_forward": "per_row"},
        {"micro_batch_size": 2, "logps_forward": "grouped"},
    )
    for i, setting in enumerate(settings):
        got, logged = one_step(tiny_checkpoint, synthetic_dir, tmp_path / str(i), **setting)
        assert logged == pytest.approx(whole_logged, rel=1e-4, abs=1e-6), setting  # the loss is ~0 at ratio 1
        for key, value in whole.items():  # Adam's step is ~lr (1e-3) per weight; float sums differ far below
            torch.testing.assert_close(got[key], value, rtol=0, atol=2e-5, msg=f"{setting}: {key}")


def test_mu_iterations_take_mu_optimizer_steps_per_rollout(tiny_checkpoint, synthetic_dir, tmp_path):
    module = grpo(tiny_checkpoint, [TextChecksumReward()])
    module.update_config = UpdateConfig(micro_batch_size=2, num_iterations=2)
    trainer = fit(module, tiny_checkpoint, synthetic_dir, tmp_path, steps=2)
    assert trainer.global_step == 2 and trainer.fit_loop.epoch_loop.batch_progress.total.completed == 1
    assert "train/loss" in trainer.callback_metrics  # the second iteration's ratio is against the frozen old log-probs
    assert module._total_steps() == 2


def test_tis_needs_an_engine_that_reports_sampling_log_probs(tiny_checkpoint, synthetic_dir, tmp_path):
    module = grpo(tiny_checkpoint, [TextChecksumReward()])
    module.update_config = UpdateConfig(micro_batch_size=2, tis_cap=2.0)
    with pytest.raises(RuntimeError, match="tis_cap needs an engine that reports sampling log-probs"):
        fit(module, tiny_checkpoint, synthetic_dir, tmp_path)
