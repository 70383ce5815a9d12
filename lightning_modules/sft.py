"""Cold-start supervised fine-tuning: Vision-R1's first stage and the "SFT" baseline of Visionary-R1's table.

Batches come from ``datamodules.sft.SFTDataModule`` with assistant-only labels (-100 elsewhere); the loss is the
mean token cross-entropy over labelled tokens. The policy loads exactly as in GRPO (``lightning_modules.policy``):
full fine-tune or LoRA, optionally with the vision tower frozen, built in ``configure_model`` so a sharding
strategy can wrap it.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning import LightningModule

from datamodules.resumable import mark_batch_consumed
from lightning_modules.logprobs import backbone_and_head, selective_logps
from lightning_modules.optim import adamw_with_warmup, lr_factor, warmup_steps_for
from lightning_modules.policy import LoRAConfig, load_policy
from lightning_modules.run_state import capture_rng, restore_rng
from lightning_modules.sharding import is_sharded, mixed_precision_policy, shard_model
from tools.export import export_policy, export_sharded


def labelled_token_loss(policy, inputs: dict[str, Any], labels: torch.Tensor, chunk_size: int = 1024):
    """Mean cross-entropy over labelled tokens, with the LM head applied only where a label exists (the logits of
    the other positions, prompt and images, are never computed). Returns (loss, number of labelled tokens)."""
    backbone, lm_head = backbone_and_head(policy)
    hidden = backbone(**inputs, use_cache=False).last_hidden_state[:, :-1]  # [B, T-1, H]: position t predicts t+1
    targets = labels[:, 1:]  # [B, T-1]
    picked = targets != -100
    logps, _ = selective_logps(hidden[picked][None], lm_head, targets[picked][None], chunk_size, with_entropy=False)
    return -logps.mean(), int(picked.sum())


class SFTModule(LightningModule):
    """Supervised fine-tuning on assistant turns (see the module docstring).

    Args:
        model_name_or_path: a local checkpoint folder or hub id of a Qwen2.5-VL model.
        dtype: the weights' (master weights') dtype: ``float32``, with the trainer's ``precision: bf16-mixed`` for
            bf16 compute. ``bfloat16`` weights round most updates at fine-tuning learning rates away.
        attn_implementation: ``sdpa`` (default), ``flash_attention_2``, or ``auto``.
        lr: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps; the warm-up lasts ``max(warmup_steps, ceil(warmup_ratio x optimizer
            steps))``.
        warmup_ratio: warm-up as a share of the run's optimizer steps (Vision-R1's cold start: 0.05).
        lr_schedule: after warm-up, ``constant`` or ``cosine`` (to 0 at the last step; Vision-R1's cold start: cosine).
        lora: LoRA settings, or None for a full fine-tune.
        freeze_vision_tower: keep the vision encoder fixed.
        freeze_embeddings: keep the token embeddings and LM head fixed (see ``load_policy``).
        gradient_checkpointing: trade compute for activation memory.
        export_dir: where ``save_pretrained`` writes the model (LoRA merged) and processor when training ends.
        export_dtype: the exported weights' dtype (default: the training dtype); ``bfloat16`` as published
            checkpoints.
        trust_remote_code: let transformers run model code shipped with the checkpoint (non-Qwen models).
        logps_chunk_size: labelled positions per LM-head and log-softmax chunk (extra memory is about chunk x vocab
            floats).
    """

    def __init__(
        self,
        model_name_or_path: str,
        dtype: str = "float32",
        attn_implementation: str = "sdpa",
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        warmup_ratio: float = 0.0,
        lr_schedule: str = "constant",
        lora: LoRAConfig | None = None,
        freeze_vision_tower: bool = False,
        freeze_embeddings: bool = False,
        gradient_checkpointing: bool = False,
        export_dir: str | None = None,
        export_dtype: str | None = None,
        trust_remote_code: bool = False,
        logps_chunk_size: int = 1024,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        lr_factor(0, 0, 1, lr_schedule)  # validates the schedule's name now, not after the model has loaded
        warmup_steps_for(1, warmup_steps, warmup_ratio)
        self.policy = None

    def setup(self, stage: str) -> None:
        from lightning_modules.preflight import check_run

        check_run(self.trainer, stage, self.hparams.attn_implementation)  # before the model loads

    def configure_model(self) -> None:
        if self.policy is not None:
            return
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
        if self.device_mesh is not None:  # FSDP2 (configs/strategy/fsdp.yaml)
            shard_model(self.policy, self.device_mesh["data_parallel"], mixed_precision_policy(self.trainer.precision))

    def _loss(self, batch: dict[str, Any], stage: str) -> torch.Tensor | None:
        for reason, count in batch.get("skipped", {}).items():
            self.log(f"{stage}/skipped_{reason}", float(count), reduce_fx="sum", on_step=False, on_epoch=True)
        if batch.get("num_examples", 0) == 0:
            return None  # every row of the batch was skipped (counted above)
        inputs = {
            k: batch[k]
            for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
            if k in batch
        }
        if is_sharded(self.policy):  # the root unit's weights (embeddings, LM head) for the forward and backward:
            self.policy.unshard()  # FSDP frees them at the end of the backward pass (on_train_batch_end otherwise)
        loss, tokens = labelled_token_loss(self.policy, inputs, batch["labels"], self.hparams.logps_chunk_size)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=batch["num_examples"])
        self.log(f"{stage}/label_tokens", float(tokens), reduce_fx="sum", on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        mark_batch_consumed(self.trainer)  # the optimizer step follows before any checkpoint is written
        return self._loss(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._loss(batch, "val")

    def configure_callbacks(self):
        from lightning_modules.callbacks.skipped_rows import SkippedRowsReport

        return [SkippedRowsReport()]

    def configure_optimizers(self):
        h = self.hparams
        needs_total = h.lr_schedule != "constant" or h.warmup_ratio > 0
        total = int(self.trainer.estimated_stepping_batches) if needs_total else None
        return adamw_with_warmup(
            self.policy, h.lr, h.weight_decay, h.warmup_steps, h.lr_schedule, total, h.warmup_ratio
        )

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if is_sharded(self.policy):
            self.policy.reshard()

    def on_validation_batch_end(self, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if is_sharded(self.policy):
            self.policy.reshard()

    def on_train_end(self) -> None:
        h = self.hparams
        if not h.export_dir:
            return
        if is_sharded(self.policy):  # a collective: every rank gathers, rank 0 writes
            export_sharded(self.policy, h, h.export_dir, self.trainer.is_global_zero)
        elif self.trainer.is_global_zero:
            export_policy(self.policy, h.model_name_or_path, h.export_dir, dtype=h.export_dtype)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vlrl_rng"] = capture_rng()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "vlrl_rng" in checkpoint:
            restore_rng(checkpoint["vlrl_rng"])
