"""Cold-start supervised fine-tuning: Vision-R1's first stage and the "SFT" baseline of Visionary-R1's table.

Batches come from ``datamodules.sft.SFTDataModule`` with assistant-only labels (-100 elsewhere); the loss is the
mean token cross-entropy over labelled tokens. The policy loads exactly as in GRPO (``lightning_modules.policy``):
full fine-tune or LoRA, optionally with the vision tower frozen, built in ``configure_model`` so a sharding
strategy can wrap it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from lightning import LightningModule

from datamodules.config import plain_hparams
from datamodules.resumable import mark_batch_consumed
from lightning_modules.config import OptimConfig, PolicyConfig, from_plain
from lightning_modules.logprobs import backbone_and_head, selective_logps
from lightning_modules.outputs import SkippedRowsReport, dropped_rows
from lightning_modules.policy import export_at_end
from lightning_modules.preflight import check_run
from lightning_modules.run_state import capture_rng, restore_rng
from lightning_modules.sharding import is_sharded, mixed_precision_policy, shard_model


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
        policy: the policy's checkpoint, dtype, attention kernel, what is frozen, LoRA (``reference_dtype`` is
            unused: SFT has no reference model).
        optim: AdamW's learning rate, weight decay, warm-up and schedule.
        logps_chunk_size: labelled positions per LM-head and log-softmax chunk (extra memory is about chunk x vocab
            floats).
        export_dir: where ``save_pretrained`` writes the model (LoRA merged) and processor when training ends, for
            transformers and vLLM to load. Default ``"auto"``: ``export`` in the run's log folder; null: no export.
        export_dtype: the exported weights' dtype (default: the training dtype); ``bfloat16`` as published
            checkpoints.
    """

    def __init__(
        self,
        policy: PolicyConfig,
        optim: OptimConfig = OptimConfig(lr=1e-5),
        logps_chunk_size: int = 1024,
        export_dir: str | None = "auto",
        export_dtype: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        plain_hparams(self.hparams)  # checkpoints hold plain values: they load with torch.load(weights_only=True)
        self.policy_config, self.optim_config = from_plain(PolicyConfig, policy), from_plain(OptimConfig, optim)
        self.policy = None
        self.exported_to = None  # the export folder, once training ended

    def setup(self, stage: str) -> None:
        check_run(self.trainer, stage, self.policy_config.attn_implementation)  # before the model loads

    def configure_model(self) -> None:
        if self.policy is not None:
            return
        self.policy = self.policy_config.load()
        if self.device_mesh is not None:  # FSDP2 (configs/strategy/fsdp.yaml)
            shard_model(self.policy, self.device_mesh["data_parallel"], mixed_precision_policy(self.trainer.precision))

    def _log_skips(self, skipped: dict[str, int], stage: str) -> None:
        for reason, count in skipped.items():
            self.log(f"{stage}/skipped_{reason}", float(count), reduce_fx="sum", on_step=False, on_epoch=True)

    def on_train_epoch_start(self) -> None:
        """The rows the data scan left out at setup (``datamodules.scan``), in each epoch's skip counts."""
        self._log_skips(Counter(row.reason for row in dropped_rows(self.trainer, "train")), "train")

    def _loss(self, batch: dict[str, Any], stage: str) -> torch.Tensor | None:
        self._log_skips(batch.get("skipped", {}), stage)
        if batch.get("num_examples", 0) == 0:
            return None  # every row of the batch was skipped (counted above)
        inputs = {
            k: batch[k]
            for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
            if k in batch
        }
        if is_sharded(self.policy):  # the root unit's weights (embeddings, LM head) for the forward and backward:
            self.policy.unshard()  # FSDP frees them at the end of the backward pass (on_train_batch_end otherwise)
        loss, tokens = labelled_token_loss(
            self.policy, inputs, batch["labels"], chunk_size=self.hparams.logps_chunk_size
        )
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=batch["num_examples"])
        self.log(f"{stage}/label_tokens", float(tokens), reduce_fx="sum", on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        mark_batch_consumed(self.trainer)  # the optimizer step follows before any checkpoint is written
        return self._loss(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._loss(batch, "val")

    def configure_callbacks(self):
        return [SkippedRowsReport()]

    def configure_optimizers(self):
        return self.optim_config.build(self.policy, lambda: int(self.trainer.estimated_stepping_batches))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if is_sharded(self.policy):
            self.policy.reshard()

    def on_validation_batch_end(self, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if is_sharded(self.policy):
            self.policy.reshard()

    def on_train_end(self) -> None:
        self.exported_to = export_at_end(self, self.hparams.export_dir, self.hparams.export_dtype)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vlrl_rng"] = capture_rng()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "vlrl_rng" in checkpoint:
            restore_rng(checkpoint["vlrl_rng"])
