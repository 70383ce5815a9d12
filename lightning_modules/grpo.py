"""GRPOModule: the policy (a family of models.families), its frozen reference, rewards and one policy-gradient loss.

The rollout callback (``lightning_modules.callback.RolloutCallback``, added by ``configure_callbacks``)
puts a ``RolloutStep`` into each training batch; ``training_step`` then computes the frozen log-probs (reference,
and old when mu > 1) in micro-batches and steps the optimizer ``num_iterations`` (mu) times on the batch, each step
a forward and backward per micro-batch. Optimisation is manual so that mu and micro-batching are explicit. A step
whose loss or gradient is not finite is skipped, counted and logged; weights stay untouched.

Arguments come in groups (``lightning_modules.config``): ``policy``, ``optim``, ``update``, ``rollout``,
``evaluation``, beside the rewards, the loss and the engine. The module trains; validation, test and predict hand
their batches to one ``Evaluator`` (``lightning_modules.evaluator``), which generates, scores with evaluation copies
of the configured rewards (their counters never mix with training's), tallies and writes the results files. The
rollout callback is given the engine, the rewards and the settings when the module makes it, and the policy once it
is built (``configure_model``).

Departures from the papers: the KL coefficient can follow a cosine schedule to 0 (Visionary-R1 anneals it; the
paper gives no exact shape, cosine is our choice); micro-batches are weighted by their share of rows, which is exact
for GRPO/Dr.GRPO/GSPO and makes DAPO's token mean a per-micro-batch token mean.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from lightning import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from transformers import AutoProcessor

from datamodules.config import plain_hparams
from datamodules.resumable import mark_batch_consumed
from lightning_modules.callback import RolloutCallback, RolloutStep
from lightning_modules.config import (
    EvalConfig,
    OptimConfig,
    PolicyConfig,
    RolloutSettings,
    RolloutStage,
    UpdateConfig,
    from_plain,
)
from lightning_modules.evaluator import Evaluator, val_stages
from lightning_modules.logprobs import completion_logps, grouped_completion_logps, supports_grouped_forward
from lightning_modules.losses import GRPOLoss, PolicyLoss, masked_mean
from lightning_modules.metrics import EngineParity, EvalScorers
from lightning_modules.optim import beta_at, finite_everywhere
from lightning_modules.outputs import JSONLPredictionWriter, SkippedRowsReport, dropped_rows
from lightning_modules.phases import PhaseClock
from lightning_modules.policy import FrozenReference, export_at_end, reference_context
from lightning_modules.preflight import check_run, check_templates, evaluation_fallbacks
from lightning_modules.run_state import capture_rng, resolve_log_dir, restore_rng
from lightning_modules.sharding import gathered_root, mixed_precision_policy, shard_model
from models.families import family_of
from rewards import AccuracyReward, CombinedReward, Reward
from rollout.batch import RolloutBatch
from rollout.engine import RolloutEngine
from rollout.hf import HFEngine
from rollout.vllm import VLLMEngine  # noqa: F401 - lists it among --model.engine's choices; vllm loads on first use
from rollout.weights import full_tensor, is_peft


class GRPOModule(LightningModule):
    """GRPO-family post-training of a vision-language policy (see the module docstring).

    Args:
        policy: the policy's checkpoint, dtypes, attention kernel, what is frozen, LoRA.
        rewards: reward modules, summed with ``reward_weights`` (Visionary-R1: accuracy, format, caption).
        reward_weights: one weight per reward (default: 1 each; Visionary-R1 uses 1, 1, 0.1).
        loss: a ``lightning_modules.losses`` class (GRPOLoss, DAPOLoss, DrGRPOLoss, GSPOLoss); its beta is the
            initial KL coefficient (default: ``GRPOLoss()``).
        engine: the rollout engine: ``rollout.hf.HFEngine`` (default) or ``rollout.vllm.VLLMEngine``.
        rollout: group size, sampling and advantage settings (``lightning_modules.config.RolloutSettings``).
        rollout_stages: a staged schedule of (steps, max_new_tokens, group_size) overriding ``rollout``, e.g.
            Vision-R1's PTST.
        optim: AdamW's learning rate, weight decay, warm-up and schedule.
        update: micro-batching, mu, clipping, the KL schedule, how log-probs are computed, TIS, the engine parity
            check.
        evaluation: generation length and sampling in validation, test and predict; where predictions go; the
            shortcut diagnostics.
        export_dir: where ``save_pretrained`` writes the trained model (LoRA merged) and processor when training
            ends, for transformers and vLLM to load. Default ``"auto"``: ``export`` in the run's log folder; null: no
            export (``vlrl export`` writes one from any checkpoint).
        export_dtype: the exported weights' dtype (default: the training dtype); ``bfloat16`` as published
            checkpoints.
    """

    def __init__(
        self,
        policy: PolicyConfig,
        rewards: list[Reward],
        reward_weights: list[float] | None = None,
        loss: PolicyLoss | None = None,
        engine: RolloutEngine | None = None,
        rollout: RolloutSettings | None = None,
        rollout_stages: list[RolloutStage] | None = None,
        optim: OptimConfig = OptimConfig(),
        update: UpdateConfig = UpdateConfig(),
        evaluation: EvalConfig = EvalConfig(),
        export_dir: str | None = "auto",
        export_dtype: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["rewards", "loss", "engine"])
        plain_hparams(self.hparams)  # checkpoints hold plain values: they load with torch.load(weights_only=True)
        # a checkpoint's hyperparameters hold the groups as dicts (load_from_checkpoint): rebuilt here
        self.policy_config, self.optim_config = from_plain(PolicyConfig, policy), from_plain(OptimConfig, optim)
        self.update_config = from_plain(UpdateConfig, update)
        self.automatic_optimization = False
        self.rewards = CombinedReward(rewards, reward_weights)
        self.loss_fn = loss if loss is not None else GRPOLoss()
        self.beta0 = self.loss_fn.beta
        self.engine = engine if engine is not None else HFEngine()
        self.rollout_settings = from_plain(RolloutSettings, rollout) or RolloutSettings()
        self.rollout_stages = [from_plain(RolloutStage, stage) for stage in rollout_stages or []] or None
        scorers, max_new_tokens = EvalScorers.of(self.rewards), self.rollout_settings.max_new_tokens
        self.evaluator = Evaluator(from_plain(EvalConfig, evaluation), scorers, self.engine, max_new_tokens, self.log)
        self.rollout_callback: RolloutCallback | None = None  # made by configure_callbacks
        self.policy, self.processor = None, None  # built in configure_model
        self.exported_to = None  # the export folder, once training ended
        self.reference: FrozenReference | None = None
        self.skipped_steps = 0
        self.clock = PhaseClock()  # each step's time and memory by phase (the rollout callback's phases too)

    @property
    def eval_config(self) -> EvalConfig:
        return self.evaluator.config

    @property
    def scorers(self) -> EvalScorers:
        return self.evaluator.scorers

    # -- model -----------------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.policy is None:
            self._load_policy()
        if self.rollout_callback is not None:  # the callbacks of this trainer entry are configured by now
            self.rollout_callback.attach(self.policy, self.processor)

    def _load_policy(self) -> None:
        p = self.policy_config
        self.policy = p.load()
        self.processor = AutoProcessor.from_pretrained(p.model_name_or_path, trust_remote_code=p.trust_remote_code)
        if self.beta0 > 0 and not is_peft(self.policy):
            self.reference = FrozenReference(self.policy, p.reference_dtype)
        if self.device_mesh is not None:  # FSDP2 (configs/strategy/fsdp.yaml): the reference is sharded alike
            mesh, mp_policy = self.device_mesh["data_parallel"], mixed_precision_policy(self.trainer.precision)
            for model in [self.policy] + ([self.reference.model] if self.reference is not None else []):
                shard_model(model, mesh, mp_policy)

    def setup(self, stage: str) -> None:
        self.log_dir = resolve_log_dir(self.trainer)  # a collective under DDP/FSDP: every rank, here
        check_run(self.trainer, stage, self.policy_config.attn_implementation, self.engine)  # before model and engine
        check_templates(self.trainer.datamodule, self.rewards)
        self._check_answer_location()

    def _check_answer_location(self) -> None:
        """See ``preflight.evaluation_fallbacks``: a ``plain``-template run scores evaluation on the whole reply."""
        fallbacks = evaluation_fallbacks(self.trainer.datamodule, self.rewards, self.scorers.accuracy)
        if fallbacks is not None:
            self.scorers.accuracy = AccuracyReward(answer_fallbacks=fallbacks)

    def configure_callbacks(self):
        self.rollout_callback = RolloutCallback(
            self.engine, self.rewards, self.rollout_settings, self.rollout_stages, self.clock
        )
        return [self.rollout_callback, JSONLPredictionWriter(self.eval_config.predictions_path), SkippedRowsReport()]

    def on_fit_start(self) -> None:
        if self.reference is not None:
            self.reference.to(self.device)
        family = family_of(self.policy)
        if self.update_config.logps_forward != "per_row" and not family.grouped_forward:
            rank_zero_info(f"update.logps_forward: per_row for {family.name} ({family.per_row_reason})")

    def _total_steps(self) -> int:
        """Optimizer steps in the run (what ``global_step`` counts under manual optimisation): ``max_steps``, or
        ``num_iterations`` per batch of the epochs."""
        if self.trainer.max_steps > 0:
            return self.trainer.max_steps
        return int(self.trainer.estimated_stepping_batches) * self.update_config.num_iterations

    def configure_optimizers(self):
        return self.optim_config.build(self.policy, self._total_steps)

    # -- log-probs -------------------------------------------------------------------------------------------------
    def _rows(self, batch: RolloutBatch, start: int, end: int) -> dict[str, Any]:
        grouped = self.update_config.logps_forward != "per_row" and supports_grouped_forward(self.policy)
        return batch.groups(start, end) if grouped else batch.rows(start, end)

    def _logps(self, model, rows: dict[str, Any], batch: RolloutBatch, with_entropy: bool = False):
        """Log-probs [n, C] (and entropy [n, C]) at the temperature the batch was sampled at (old, reference and
        current alike), by the forward ``update.logps_forward`` names."""
        common = dict(
            pixel_values=rows.get("pixel_values"),
            image_grid_thw=rows.get("image_grid_thw"),
            chunk_size=self.update_config.logps_chunk_size,
            with_entropy=with_entropy,
            temperature=batch.temperature,
            completion_mask=rows["completion_mask"],
        )
        if "prompt_index" in rows:
            return grouped_completion_logps(
                model,
                prompt_ids=rows["prompt_ids"],
                prompt_mask=rows["prompt_mask"],
                completion_ids=rows["completion_ids"],
                completion_attention=rows["completion_attention"],
                prompt_index=rows["prompt_index"],
                mm_token_type_ids=rows.get("mm_token_type_ids"),
                shared_prefix=self.update_config.logps_forward == "shared_prefix",
                **common,
            )
        extra = {"mm_token_type_ids": rows["mm_token_type_ids"]} if "mm_token_type_ids" in rows else {}
        return completion_logps(
            model, rows["input_ids"], rows["attention_mask"], batch.completion_length, **common, **extra
        )

    @torch.no_grad()
    def _logps_without_grad(self, batch: RolloutBatch, model) -> torch.Tensor:
        out, mb = [], self.update_config.micro_batch_size
        for start in range(0, batch.num_rows, mb):
            with gathered_root(model):
                out.append(self._logps(model, self._rows(batch, start, start + mb), batch)[0])
        return torch.cat(out)  # [N, C]

    def _frozen_logps(self, batch: RolloutBatch, beta: float) -> None:
        """Old log-probs (mu > 1: the policy before this batch's first update) and reference log-probs (beta > 0)."""
        if self.update_config.num_iterations > 1:
            batch.old_logps = self._logps_without_grad(batch, self.policy)
        if beta > 0:
            with reference_context(self.policy, self.reference) as ref_model:
                batch.ref_logps = self._logps_without_grad(batch, ref_model)

    # -- training --------------------------------------------------------------------------------------------------
    def current_beta(self) -> float:
        return beta_at(self.global_step, self._total_steps(), self.beta0, self.update_config.beta_schedule)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._log_skips(batch.get("skipped", {}))
        mark_batch_consumed(self.trainer)  # a checkpoint after this step resumes at the next batch
        step: RolloutStep = batch["rollout"]
        if step.status == "empty":  # every row of the batch was skipped
            self.log("data/empty_batches", 1.0, reduce_fx="sum", on_step=False, on_epoch=True)
            return
        if step.status == "uninformative":  # no group to learn from: the rollout's metrics, no update
            self._log_step({**step.metrics, **self.clock.metrics()})
            return
        beta = self.loss_fn.beta = self.current_beta()
        with self.clock.phase("ref_logps"):
            self._frozen_logps(step.batch, beta)
        parity = self._parity_check(step.batch)
        update: dict[str, float] = {}
        with self.clock.phase("update"):
            for iteration in range(self.update_config.num_iterations):
                totals = self._accumulate_gradients(step.batch, parity if iteration == 0 else None)
                if self._optimizer_step(totals):
                    update = totals
        metrics = {
            **step.metrics,
            **(parity.metrics() if parity else {}),
            **{f"train/{k}": v for k, v in update.items()},
            **self.clock.metrics(),
        }
        self._log_step(metrics)
        self.log("train/nonfinite_skipped", float(self.skipped_steps))
        self.log("train/beta", beta)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0])

    def _log_skips(self, skipped: dict[str, int]) -> None:
        """Rows the datamodule dropped from this batch (unreadable, too long), by reason."""
        for reason, count in skipped.items():
            self.log(f"data/skipped_{reason}", float(count), reduce_fx="sum", on_step=False, on_epoch=True)

    def on_train_end(self) -> None:
        self.exported_to = export_at_end(self, self.hparams.export_dir, self.hparams.export_dtype)

    def on_train_epoch_start(self) -> None:
        """The rows the data scan left out at setup (``datamodules.scan``), by reason, in each epoch's skip counts:
        like the rows skipped from batches, they are rows the epoch did not use."""
        self._log_skips(Counter(row.reason for row in dropped_rows(self.trainer, "train")))

    def _parity_check(self, batch: RolloutBatch) -> EngineParity | None:
        """An accumulator of the policy's distance to the engine's log-probs, on the steps the check runs. Under
        top-k / top-p the engine's log-probs are over the kept tokens, not the policy's full vocabulary: their gap
        is the truncated mass, not a sync error, so it is not checked."""
        every = self.update_config.parity_check_every_n_steps
        if batch.engine_logps is None or every <= 0 or self.global_step % every or batch.truncated_sampling:
            return None
        return EngineParity(float(batch.completion_mask.sum()))

    def _accumulate_gradients(self, batch: RolloutBatch, parity: EngineParity | None) -> dict[str, float]:
        """Forward and backward over the batch in micro-batches, each weighted by its share of the rows; returns the
        weighted metrics (their sums are the batch's)."""
        totals: dict[str, float] = {}
        for start in range(0, batch.num_rows, self.update_config.micro_batch_size):
            for key, value in self._micro_batch_loss(batch, start, parity).items():
                totals[key] = totals.get(key, 0.0) + value
        return totals

    def _micro_batch_loss(self, batch: RolloutBatch, start: int, parity: EngineParity | None) -> dict[str, float]:
        rows = self._rows(batch, start, start + self.update_config.micro_batch_size)
        mask = rows["completion_mask"]  # [n, C]
        weight = mask.shape[0] / batch.num_rows
        with gathered_root(self.policy):  # FSDP: the root unit's weights for this forward and backward
            logps, entropy = self._logps(self.policy, rows, batch, with_entropy=True)  # [n, C] each
            is_weights = self._tis_weights(logps, rows)
            loss, metrics = self.loss_fn(
                logps, rows["old_logps"], rows["ref_logps"], rows["advantages"], mask, is_weights=is_weights
            )
            self.manual_backward(loss * weight)
        metrics = {**metrics, "loss": loss.detach(), "entropy": masked_mean(entropy, mask)}
        if is_weights is not None:
            metrics["tis_weight_mean"] = masked_mean(is_weights, mask)
        if parity is not None:
            parity.add(logps, rows["engine_logps"], mask)
        return {key: float(value) * weight for key, value in metrics.items()}

    def _tis_weights(self, logps: torch.Tensor, rows: dict[str, Any]) -> torch.Tensor | None:
        """Truncated importance sampling: ``min(exp(old - engine), tis_cap)`` per token [n, C] (None when off)."""
        cap = self.update_config.tis_cap
        if cap is None:
            return None
        if rows["engine_logps"] is None:
            raise RuntimeError("tis_cap needs an engine that reports sampling log-probs (VLLMEngine)")
        old = rows["old_logps"] if rows["old_logps"] is not None else logps.detach()  # [n, C]
        return torch.exp(old - rows["engine_logps"]).clamp(max=cap) * rows["completion_mask"]

    def _optimizer_step(self, totals: dict[str, float]) -> bool:
        """Clip the gradients and step, unless the loss or the gradient norm is not finite on some rank: then the
        gradients are dropped, weights and optimizer state stay as they were, and the skip is counted. The learning
        rate schedule follows the optimizer steps taken. Adds ``grad_norm`` to ``totals``; returns whether it
        stepped."""
        opt = self.optimizers()
        params = [p for p in self.policy.parameters() if p.requires_grad]
        grad_norm = full_tensor(torch.nn.utils.clip_grad_norm_(params, self.update_config.max_grad_norm))
        totals["grad_norm"] = float(grad_norm)
        stepped = finite_everywhere(totals["loss"], grad_norm)
        if stepped:
            opt.step()
            self.lr_schedulers().step()
        else:
            self.skipped_steps += 1
        opt.zero_grad(set_to_none=True)
        return stepped

    def _log_step(self, metrics: dict[str, float]) -> None:
        """One step's metrics, with the same options on every step (Lightning refuses a key logged two ways)."""
        for key, value in metrics.items():
            self.log(key, value, prog_bar=key in ("reward/total", "train/loss"))

    # -- evaluation (``lightning_modules.evaluator``) -------------------------------------------------------------
    def _val_stages(self) -> list[str]:
        return val_stages(self.trainer.datamodule)

    # Validation during fit leaves the global random state as it found it: the checkpoint written just before a
    # validation holds that state, and a run resumed from it (which does not validate again) must draw what the
    # uninterrupted run drew after its validation (tests/e2e/test_resume.py kills a run during validation).
    def on_validation_start(self) -> None:
        self._rng_before_validation = capture_rng() if self.trainer.state.fn == "fit" else None

    def on_validation_end(self) -> None:
        if getattr(self, "_rng_before_validation", None) is not None:
            restore_rng(self._rng_before_validation)
            self._rng_before_validation = None

    def on_validation_epoch_start(self) -> None:
        self.evaluator.start(self._val_stages())

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            for stage in self._val_stages():  # the same names on every rank: the tallies' gathers pair up
                self.evaluator.report(stage, self.trainer.datamodule, self.log_dir, self.trainer.is_global_zero)
        self.evaluator.log_counts("val")

    def on_test_epoch_start(self) -> None:
        self.evaluator.start(["test"])

    def on_test_epoch_end(self) -> None:
        self.evaluator.report("test", self.trainer.datamodule, self.log_dir, self.trainer.is_global_zero)
        self.evaluator.log_counts("test")

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.evaluator.evaluate(batch, self._val_stages()[dataloader_idx])

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.evaluator.evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        return self.evaluator.predict(batch)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # saved during a validation (ModelCheckpoint at validation end): the state the run continues from after it
        before = getattr(self, "_rng_before_validation", None)
        checkpoint["vlrl_rng"] = before if before is not None else capture_rng()
        checkpoint["vlrl_nonfinite_skipped"] = self.skipped_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "vlrl_rng" in checkpoint:
            restore_rng(checkpoint["vlrl_rng"])
        self.skipped_steps = int(checkpoint.get("vlrl_nonfinite_skipped", 0))
