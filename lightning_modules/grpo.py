"""GRPOModule: the Qwen2.5-VL policy, its frozen reference, rewards and one policy-gradient loss.

The rollout callback (``lightning_modules.callbacks.rollout.RolloutCallback``, added by ``configure_callbacks``)
puts a rollout batch into each training batch; ``training_step`` then computes policy (and reference, and old) log-
probs in micro-batches and steps the optimizer ``num_iterations`` (mu) times on it. Optimisation is manual so that
mu and micro-batching are explicit. A step whose loss or gradient is not finite is skipped, counted and logged;
weights stay untouched.

Departures from the papers: the KL coefficient can follow a cosine schedule to 0 (Visionary-R1 anneals it; the
paper gives no exact shape, cosine is our choice); micro-batches are weighted by their share of rows, which is exact
for GRPO/Dr.GRPO/GSPO and makes DAPO's token mean a per-micro-batch token mean.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from lightning import LightningModule

from datamodules.resumable import mark_batch_consumed
from evaluation.diagnostics import blank_like, gather_tallies, length_vs_correctness
from evaluation.records import (
    completion_record,
    question_rows,
    write_benchmark_results,
    write_question_rows,
    write_results,
)
from lightning_modules.callbacks.prediction_writer import JSONLPredictionWriter, gather_rows
from lightning_modules.callbacks.rollout import RolloutCallback, RolloutSettings, RolloutStage
from lightning_modules.callbacks.skipped_rows import SkippedRowsReport
from lightning_modules.logprobs import completion_logps, grouped_completion_logps, supports_grouped_forward
from lightning_modules.losses import GRPOLoss, PolicyLoss, masked_mean
from lightning_modules.optim import adamw_with_warmup, beta_at, finite_everywhere
from lightning_modules.policy import FrozenReference, LoRAConfig, is_peft, load_policy, reference_context
from lightning_modules.preflight import check_run
from lightning_modules.run_state import capture_rng, resolve_log_dir, restore_rng
from lightning_modules.sharding import gathered_root, mixed_precision_policy, shard_model
from rewards import AccuracyReward, CombinedReward, Reward
from rollout.batch import RolloutBatch
from rollout.engine import RolloutEngine, SamplingConfig
from rollout.hf import HFEngine
from rollout.vllm import VLLMEngine  # noqa: F401 - lists it among --model.engine's choices; vllm loads on first use
from rollout.weights import full_tensor


class GRPOModule(LightningModule):
    """GRPO-family post-training of a vision-language policy (see the module docstring).

    Args:
        model_name_or_path: Qwen2.5-VL checkpoint folder or hub id.
        rewards: reward modules, summed with ``reward_weights`` (Visionary-R1: accuracy, format, caption).
        reward_weights: one weight per reward (default: 1 each; Visionary-R1 uses 1, 1, 0.1).
        loss: a ``lightning_modules.losses`` class (GRPOLoss, DAPOLoss, DrGRPOLoss, GSPOLoss); its beta is the
            initial KL coefficient (default: ``GRPOLoss()``).
        engine: the rollout engine: ``rollout.hf.HFEngine`` (default) or ``rollout.vllm.VLLMEngine``.
        rollout: group size, sampling and advantage settings (``lightning_modules.callbacks.rollout.RolloutSettings``).
        rollout_stages: a staged schedule of (steps, max_new_tokens, group_size) overriding ``rollout``, e.g.
            Vision-R1's PTST.
        dtype: the policy's weights (the optimizer's master weights): ``float32``. Compute in bf16 with the trainer's
            ``precision: bf16-mixed``. ``bfloat16`` weights cannot take a fine-tuning step: bf16 keeps ~3 significant
            digits and an Adam update is about lr (5e-7), so almost every update rounds away.
        reference_dtype: the frozen reference's weights (default: the policy's); ``bfloat16`` halves its memory.
        attn_implementation: transformers attention kernel (``sdpa``, ``flash_attention_2``, ``eager``).
        gradient_checkpointing: recompute activations in the backward pass: less memory, more compute.
        freeze_vision_tower: keep the vision encoder fixed.
        freeze_embeddings: keep the token embeddings and LM head fixed (see ``load_policy``).
        lora: LoRA settings, or None for a full fine-tune.
        lr: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps from 0 to ``lr`` (then constant).
        max_grad_norm: gradient clipping norm per optimizer step.
        num_iterations: mu, optimizer steps per rollout batch (old log-probs frozen at rollout time).
        micro_batch_size: rows (completions) per forward/backward.
        beta_schedule: ``constant`` or ``cosine`` (to 0 over the run's steps).
        logps_chunk_size: positions per LM-head and log-softmax chunk (extra memory is about chunk x vocab floats).
        val_max_new_tokens: generation length in validation, test and predict (default: the rollout's).
        eval_sampling: sampling for validation, test and predict (default greedy); Vision-R1's inference preset is
            ``{temperature: 0.6, top_p: 0.95}``.
        predictions_path: where ``vlrl predict`` writes JSONL (default ``<log dir>/predictions.jsonl``).
        parity_check_every_n_steps: with an engine that reports sampling log-probs (vLLM), log the mean and max
            |policy log-prob - engine log-prob| over the sampled tokens every N steps (0: never; not logged when
            top-k or top-p truncates sampling, where the engine's log-probs are renormalised over the kept tokens).
            It costs nothing: the policy's log-probs of the first iteration are the ones the loss needs anyway.
        tis_cap: truncated importance sampling (off when None): each token's policy-gradient term is weighted by
            ``min(exp(old_logps - engine_logps), tis_cap)``, correcting for the engine's sampling distribution
            differing from the trained policy's (precision, kernels). Needs engine log-probs.
        trust_remote_code: let transformers run model code shipped with the checkpoint (non-Qwen models).
        shortcut_diagnostics: in validation and test, also image-blind accuracy, visual dependency, caption
            sufficiency and reasoning length against correctness (``evaluation.diagnostics``); costs one more
            generation per held-out row (and judge calls with a caption reward).
        short_reasoning_words: reasoning shorter than this counts as short in ``short_correct_share``.
        logps_forward: how policy, reference and old log-probs are computed. ``shared_prefix`` (default): each
            prompt's images through the vision tower once and its tokens through the language model once, the G
            completions attending to the shared keys and values; ``grouped``: images once, prompt and completion
            together per row (what ``shared_prefix`` falls back to under gradient checkpointing); ``per_row``: the
            model's own forward on every (prompt, completion) row. The three give the same log-probs; models outside
            the Qwen2-VL family always use ``per_row``. Measured in ``bench/grpo_update.py``.
    """

    def __init__(
        self,
        model_name_or_path: str,
        rewards: list[Reward],
        reward_weights: list[float] | None = None,
        loss: PolicyLoss | None = None,
        engine: RolloutEngine | None = None,
        rollout: RolloutSettings | None = None,
        rollout_stages: list[RolloutStage] | None = None,
        dtype: str = "float32",
        reference_dtype: str | None = None,
        attn_implementation: str = "sdpa",
        gradient_checkpointing: bool = False,
        freeze_vision_tower: bool = False,
        freeze_embeddings: bool = False,
        lora: LoRAConfig | None = None,
        lr: float = 1e-6,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        max_grad_norm: float = 1.0,
        num_iterations: int = 1,
        micro_batch_size: int = 8,
        beta_schedule: str = "constant",
        logps_chunk_size: int = 1024,
        val_max_new_tokens: int | None = None,
        eval_sampling: SamplingConfig | None = None,
        predictions_path: str | None = None,
        parity_check_every_n_steps: int = 1,
        tis_cap: float | None = None,
        trust_remote_code: bool = False,
        shortcut_diagnostics: bool = False,
        short_reasoning_words: int = 10,
        logps_forward: str = "shared_prefix",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["rewards", "loss", "engine", "eval_sampling"])
        self.eval_sampling = eval_sampling or SamplingConfig(temperature=0.0)
        self.automatic_optimization = False
        self.rewards = CombinedReward(rewards, reward_weights)
        self.loss_fn = loss if loss is not None else GRPOLoss()
        self.beta0 = self.loss_fn.beta
        beta_at(0, 1, self.beta0, beta_schedule)  # validates the schedule name now, not mid-run
        self.engine = engine if engine is not None else HFEngine()
        self.rollout_settings = rollout or RolloutSettings()
        self.rollout_stages = rollout_stages
        self.policy = None
        self.processor = None
        self.reference: FrozenReference | None = None
        self.val_accuracy = self._find_reward("accuracy") or AccuracyReward()
        self.skipped_steps = 0
        self._eval_tally: dict[str, dict[str, list]] = {}  # stage -> category -> [score sum, rows]
        self._eval_rows: dict[str, list[dict[str, Any]]] = {}  # stage -> one record per question (this rank's)
        if tis_cap is not None and tis_cap <= 0:
            raise ValueError(f"tis_cap must be positive, got {tis_cap}")
        if logps_forward not in ("shared_prefix", "grouped", "per_row"):
            raise ValueError(f"logps_forward must be 'shared_prefix', 'grouped' or 'per_row', got {logps_forward!r}")

    def _find_reward(self, name: str) -> Reward | None:
        return next((r for n, r in zip(self.rewards.names, self.rewards.rewards) if n == name), None)

    # -- model -----------------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.policy is not None:
            return
        from transformers import AutoProcessor

        h = self.hparams
        self.policy = load_policy(
            h.model_name_or_path,
            h.dtype,
            h.attn_implementation,
            h.gradient_checkpointing,
            h.freeze_vision_tower,
            h.lora,
            h.trust_remote_code,
            h.freeze_embeddings,
        )
        self.processor = AutoProcessor.from_pretrained(h.model_name_or_path, trust_remote_code=h.trust_remote_code)
        if self.beta0 > 0 and not is_peft(self.policy):
            self.reference = FrozenReference(self.policy, h.reference_dtype)
        if self.device_mesh is not None:  # FSDP2 (configs/strategy/fsdp.yaml): the reference is sharded alike
            mesh, mp_policy = self.device_mesh["data_parallel"], mixed_precision_policy(self.trainer.precision)
            for model in [self.policy] + ([self.reference.model] if self.reference is not None else []):
                shard_model(model, mesh, mp_policy)

    def setup(self, stage: str) -> None:
        self.log_dir = resolve_log_dir(self.trainer)  # a collective under DDP/FSDP: every rank, here
        check_run(self.trainer, stage, self.hparams.attn_implementation, self.engine)  # before the model and engine
        self._check_answer_location()

    def _check_answer_location(self) -> None:
        """The accuracy reward reads the ``<answer>`` block only (as the published rewards do). Prompts of the
        ``plain`` template ask for a bare answer, which that would score 0 on every row: evaluation then reads the
        whole reply, and a configured accuracy reward must say so itself (``answer_fallbacks: [text]``)."""
        data = self.trainer.datamodule if self.trainer is not None else None
        if getattr(getattr(data, "hparams", None), "template", None) != "plain" or self.val_accuracy.answer_fallbacks:
            return
        if self._find_reward("accuracy") is not None:
            raise ValueError(
                "data.init_args.template is 'plain' (no <answer> tags) but rewards.AccuracyReward reads "
                "the <answer> block only: set its init_args.answer_fallbacks: [text]"
            )
        self.val_accuracy = AccuracyReward(answer_fallbacks=("text",))

    def configure_callbacks(self):
        return [
            RolloutCallback(self.engine, self.rollout_settings, self.rollout_stages),
            JSONLPredictionWriter(self.hparams.predictions_path),
            SkippedRowsReport(),
        ]

    def on_fit_start(self) -> None:
        if self.reference is not None:
            self.reference.to(self.device)

    def configure_optimizers(self):
        h = self.hparams
        return adamw_with_warmup(self.policy, h.lr, h.weight_decay, h.warmup_steps)

    # -- log-probs -------------------------------------------------------------------------------------------------
    def _rows(self, batch: RolloutBatch, start: int, end: int) -> dict[str, Any]:
        grouped = self.hparams.logps_forward != "per_row" and supports_grouped_forward(self.policy)
        return batch.groups(start, end) if grouped else batch.rows(start, end)

    def _logps(self, model, rows: dict[str, Any], batch: RolloutBatch, with_entropy: bool = False):
        """Log-probs [n, C] at the temperature the batch was sampled at (old, reference and current alike)."""
        h = self.hparams
        if "prompt_index" in rows:
            return grouped_completion_logps(
                model,
                rows["prompt_ids"],
                rows["prompt_mask"],
                rows["completion_ids"],
                rows["completion_attention"],
                rows["prompt_index"],
                rows.get("pixel_values"),
                rows.get("image_grid_thw"),
                rows.get("mm_token_type_ids"),
                h.logps_chunk_size,
                with_entropy,
                batch.temperature,
                rows["completion_mask"],
                shared_prefix=h.logps_forward == "shared_prefix",
            )
        extra = {"mm_token_type_ids": rows["mm_token_type_ids"]} if "mm_token_type_ids" in rows else {}
        return completion_logps(
            model,
            rows["input_ids"],
            rows["attention_mask"],
            batch.completion_length,
            rows.get("pixel_values"),
            rows.get("image_grid_thw"),
            self.hparams.logps_chunk_size,
            with_entropy,
            batch.temperature,
            rows["completion_mask"],
            **extra,
        )

    @torch.no_grad()
    def _frozen_logps(self, batch: RolloutBatch, model) -> torch.Tensor:
        out = []
        for start in range(0, batch.num_rows, self.hparams.micro_batch_size):
            rows = self._rows(batch, start, start + self.hparams.micro_batch_size)
            with gathered_root(model):
                out.append(self._logps(model, rows, batch)[0])
        return torch.cat(out)  # [N, C]

    # -- training --------------------------------------------------------------------------------------------------
    def current_beta(self) -> float:
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else int(self.trainer.estimated_stepping_batches)
        return beta_at(self.global_step, total, self.beta0, self.hparams.beta_schedule)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        for reason, count in batch.get("skipped", {}).items():
            self.log(f"data/skipped_{reason}", float(count), reduce_fx="sum", on_step=False, on_epoch=True)
        mark_batch_consumed(self.trainer)  # a checkpoint after this step resumes at the next batch
        rollout: RolloutBatch | None = batch.get("rollout")
        if rollout is None:
            if "rollout_metrics" in batch:  # dynamic sampling found no informative group: no update
                self._log_step(batch["rollout_metrics"])
            else:  # every row of the batch was skipped
                self.log("data/empty_batches", 1.0, reduce_fx="sum", on_step=False, on_epoch=True)
            return
        beta = self.loss_fn.beta = self.current_beta()
        if self.hparams.num_iterations > 1:
            rollout.old_logps = self._frozen_logps(rollout, self.policy)
        if beta > 0:
            with reference_context(self.policy, self.reference) as ref_model:
                rollout.ref_logps = self._frozen_logps(rollout, ref_model)
        opt, sched = self.optimizers(), self.lr_schedulers()
        n, mb = rollout.num_rows, self.hparams.micro_batch_size
        step_metrics: dict[str, float] = {}
        engine_logps = rollout.engine_logps is not None
        if self.hparams.tis_cap is not None and not engine_logps:
            raise RuntimeError("tis_cap needs an engine that reports sampling log-probs (VLLMEngine)")
        every = self.hparams.parity_check_every_n_steps
        rollout_tokens = rollout.completion_mask.sum()
        # under top-k / top-p the engine's log-probs are over the kept tokens, not the policy's full vocabulary:
        # their gap is the truncated mass, not a sync error, so the parity metric is not logged
        check_parity = engine_logps and every > 0 and self.global_step % every == 0 and not rollout.truncated_sampling
        parity = {"rollout/engine_logp_diff_mean": 0.0, "rollout/engine_logp_diff_max": 0.0}
        for iteration in range(self.hparams.num_iterations):
            totals: dict[str, float] = {}
            for start in range(0, n, mb):
                rows = self._rows(rollout, start, start + mb)
                mask = rows["completion_mask"]
                with gathered_root(self.policy):  # FSDP: the root unit's weights for this forward and backward
                    logps, entropy = self._logps(self.policy, rows, rollout, with_entropy=True)
                    is_weights = None
                    if self.hparams.tis_cap is not None:
                        old = rows["old_logps"] if rows["old_logps"] is not None else logps.detach()  # [n, C]
                        is_weights = torch.exp(old - rows["engine_logps"]).clamp(max=self.hparams.tis_cap) * mask
                    loss, metrics = self.loss_fn(
                        logps, rows["old_logps"], rows["ref_logps"], rows["advantages"], mask, is_weights=is_weights
                    )
                    weight = rows["input_ids"].shape[0] / n
                    self.manual_backward(loss * weight)
                metrics = {**metrics, "loss": loss.detach(), "entropy": masked_mean(entropy, mask)}
                if is_weights is not None:
                    metrics["tis_weight_mean"] = masked_mean(is_weights, mask)
                if check_parity and iteration == 0:  # the policy before this step's update, as the engine saw it
                    diff = (logps.detach() - rows["engine_logps"]).abs() * mask  # [n, C]
                    parity["rollout/engine_logp_diff_mean"] += float(diff.sum()) / max(1.0, float(rollout_tokens))
                    parity["rollout/engine_logp_diff_max"] = max(
                        parity["rollout/engine_logp_diff_max"], float(diff.max())
                    )
                for key, value in metrics.items():
                    totals[key] = totals.get(key, 0.0) + float(value) * weight
            grad_norm = full_tensor(
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.policy.parameters() if p.requires_grad], self.hparams.max_grad_norm
                )
            )
            if not finite_everywhere(totals["loss"], grad_norm):
                opt.zero_grad(set_to_none=True)  # weights and optimizer state stay as they were
                self.skipped_steps += 1
                continue
            opt.step()
            opt.zero_grad(set_to_none=True)
            step_metrics = {**totals, "grad_norm": float(grad_norm)}
        if step_metrics:  # the schedule follows optimizer steps, which a skipped update did not take
            sched.step()
        self.log("train/nonfinite_skipped", float(self.skipped_steps))
        self._log_step(
            {
                **batch.get("rollout_metrics", {}),
                **(parity if check_parity else {}),
                **{f"train/{k}": v for k, v in step_metrics.items()},
            }
        )
        self.log("train/beta", beta)
        self.log("train/lr", sched.get_last_lr()[0])

    def _log_step(self, metrics: dict[str, float]) -> None:
        """One step's metrics, with the same options on every step (Lightning refuses a key logged two ways)."""
        for key, value in metrics.items():
            self.log(key, value, prog_bar=key in ("reward/total", "train/loss"))

    # -- evaluation ------------------------------------------------------------------------------------------------
    def _eval_generate(self, batch: dict[str, Any]):
        max_new = self.hparams.val_max_new_tokens or self.rollout_settings.max_new_tokens
        sampling = replace(self.eval_sampling, max_new_tokens=max_new)
        return self.engine.generate(batch["prompt"], batch["images"], 1, sampling)

    def _log_eval(self, key: str, value, **kwargs) -> None:
        """Evaluation keys already name their validation set (``val/<name>/...``): no ``/dataloader_idx_N`` suffix."""
        self.log(key, value, add_dataloader_idx=False, **kwargs)

    def _val_stages(self) -> list[str]:
        """``val``, or ``val/<name>`` per named validation set (``VQADataModule(val_data={name: source})``)."""
        names = getattr(self.trainer.datamodule, "val_names", None) if self.trainer.datamodule is not None else None
        return [f"val/{name}" for name in names] if names else ["val"]

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        """Completions for held-out rows (greedy unless ``eval_sampling`` says otherwise): accuracy, format rate (if
        a format reward is configured), length, and the shortcut diagnostics when they are on."""
        if not batch["prompt"]:
            return
        out = self._eval_generate(batch)
        columns = {k: batch[k] for k in ("problem", "solution", "problem_type", "choices", "precision") if k in batch}
        size = len(out.texts)
        correct = self.val_accuracy(out.texts, **columns)  # [n]
        self._log_eval(f"{stage}/accuracy", correct.mean(), batch_size=size, prog_bar=True)
        rows = question_rows(batch, out.texts, correct.tolist(), self.val_accuracy.answer_fallbacks)
        self._eval_rows.setdefault(stage, []).extend(rows)
        tally = self._eval_tally.setdefault(stage, {})
        for category, score in zip(batch.get("category") or ["all"] * size, correct.tolist()):
            for key in {"all", str(category)}:
                total = tally.setdefault(key, [0.0, 0])
                total[0], total[1] = total[0] + score, total[1] + 1
        if self.hparams.shortcut_diagnostics:
            self._shortcut_diagnostics(batch, out.texts, correct, columns, stage)
        fmt = self._find_reward("format") or self._find_reward("hard_format_result")
        if fmt is not None:
            key = "format_rate" if fmt.name == "format" else fmt.name
            self._log_eval(f"{stage}/{key}", fmt(out.texts, **columns).mean(), batch_size=size)
        self._log_eval(f"{stage}/completion_length", out.lengths.float().mean(), batch_size=size)

    def _shortcut_diagnostics(
        self, batch: dict[str, Any], texts: list[str], correct: torch.Tensor, columns: dict[str, Any], stage: str
    ) -> None:
        """See ``evaluation.diagnostics``: image-blind accuracy and visual dependency, caption sufficiency,
        reasoning length against correctness."""
        size = len(texts)
        blind = self._eval_generate({**batch, "images": blank_like(batch["images"])})
        blind_correct = self.val_accuracy(blind.texts, **columns)  # [n]
        self._log_eval(f"{stage}/blind_accuracy", blind_correct.mean(), batch_size=size)
        self._log_eval(f"{stage}/visual_dependency", (correct - blind_correct).mean(), batch_size=size)
        caption = self._find_reward("caption")
        if caption is not None:
            counters = caption.stats.copy()  # evaluation does not count towards the training-time judge counters
            self._log_eval(f"{stage}/caption_sufficiency", caption(texts, **columns).mean(), batch_size=size)
            caption.stats = counters
        for name, (value, count) in length_vs_correctness(texts, correct, self.hparams.short_reasoning_words).items():
            self._log_eval(f"{stage}/{name}", value, batch_size=count)

    def _report_categories(self, stage: str) -> None:
        """Per-question records of the epoch, merged across ranks, as ``results_{stage}_questions.jsonl``; on a
        benchmark its official score as ``results_{stage}.json``, otherwise per-category accuracy (logged as
        ``{stage}/accuracy/<category>``, written as ``results_{stage}.json`` / ``.csv``) when there are categories."""

        tally = gather_tallies(self._eval_tally.pop(stage, {}))
        rows = gather_rows(self._eval_rows.pop(stage, []))  # a collective, like the tallies' gather
        if self.trainer.is_global_zero:
            write_question_rows(rows, self.log_dir, stage.replace("/", "_"))
            official = write_benchmark_results(self.trainer.datamodule, rows, self.log_dir, stage.replace("/", "_"))
            if official is not None:  # a benchmark: its official accuracy replaces the reward's per category
                self.log(f"{stage}/benchmark_accuracy", official["accuracy"], rank_zero_only=True)
        if len(tally) <= 1 or getattr(self.trainer.datamodule, "benchmark", None) is not None:
            return
        results = {key: {"accuracy": score / count, "count": count} for key, (score, count) in sorted(tally.items())}
        for key, value in results.items():
            if key != "all":
                self.log(f"{stage}/accuracy/{key}", value["accuracy"], rank_zero_only=True)
        if self.trainer.is_global_zero:
            write_results(results, self.log_dir, stage.replace("/", "_"))

    def on_validation_epoch_start(self) -> None:
        for stage in self._val_stages():
            self._eval_tally.pop(stage, None)
            self._eval_rows.pop(stage, None)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            for stage in self._val_stages():  # the same names on every rank: the tallies' gathers pair up
                self._report_categories(stage)

    def on_test_epoch_start(self) -> None:
        self._eval_tally.pop("test", None)
        self._eval_rows.pop("test", None)

    def on_test_epoch_end(self) -> None:
        self._report_categories("test")

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self._val_stages()[dataloader_idx])

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """One record per prompt (see ``evaluation.records``); rows with a solution are also scored."""
        if not batch["prompt"]:
            return []
        out = self._eval_generate(batch)
        records = []
        for i, text in enumerate(out.texts):
            record = {
                "id": batch["id"][i],
                "problem": batch["problem"][i],
                **completion_record(out, i, self.val_accuracy.answer_fallbacks),
            }
            if batch["solution"][i] and batch["problem_type"][i]:
                record["solution"] = batch["solution"][i]
                record["score"] = float(
                    self.val_accuracy([text], solution=[batch["solution"][i]], problem_type=[batch["problem_type"][i]])[
                        0
                    ]
                )
            records.append(record)
        return records

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vlrl_rng"] = capture_rng()
        checkpoint["vlrl_nonfinite_skipped"] = self.skipped_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "vlrl_rng" in checkpoint:
            restore_rng(checkpoint["vlrl_rng"])
        self.skipped_steps = int(checkpoint.get("vlrl_nonfinite_skipped", 0))
