"""Cold-start supervised fine-tuning: Vision-R1's first stage and the "SFT" baseline of Visionary-R1's table.

Batches come from ``datamodules.sft.SFTDataModule`` with assistant-only labels (-100 elsewhere); the loss is the
mean token cross-entropy over labelled tokens. The model is built in ``configure_model`` so a sharding strategy can
wrap it. LoRA, the frozen reference and the GRPO module arrive with the training loop; this module is full
fine-tuning only, optionally with the vision tower frozen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class SFTModule(LightningModule):
    """Args:
    model_name_or_path: a local checkpoint folder or hub id of a Qwen2.5-VL model.
    dtype: weights' dtype (``float32`` on CPU, ``bfloat16`` on GPU).
    attn_implementation: ``sdpa`` (default) or ``flash_attention_2`` when flash-attn is installed.
    lr, weight_decay, warmup_steps: AdamW with linear warm-up, then constant.
    freeze_vision_tower: keep the vision encoder fixed (its parameters leave the optimizer).
    gradient_checkpointing: trade compute for activation memory.
    export_dir: where ``save_pretrained`` writes the model and processor when training ends (None: no export).
    """

    def __init__(
        self,
        model_name_or_path: str,
        dtype: str = "float32",
        attn_implementation: str = "sdpa",
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        freeze_vision_tower: bool = False,
        gradient_checkpointing: bool = False,
        export_dir: str | None = None,
    ) -> None:
        super().__init__()
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.save_hyperparameters()
        self.model = None

    def configure_model(self) -> None:
        if self.model is not None:
            return
        from transformers import AutoModelForImageTextToText

        h = self.hparams
        self.model = AutoModelForImageTextToText.from_pretrained(
            h.model_name_or_path, dtype=_DTYPES[h.dtype], attn_implementation=h.attn_implementation
        )
        self.model.train()  # from_pretrained returns eval mode
        if h.freeze_vision_tower:
            self.model.model.visual.requires_grad_(False)
        if h.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def _loss(self, batch: dict[str, Any], stage: str) -> torch.Tensor | None:
        for reason, count in batch.get("skipped", {}).items():
            self.log(f"{stage}/skipped_{reason}", float(count), reduce_fx="sum", on_step=False, on_epoch=True)
        if batch.get("num_examples", 0) == 0:
            return None  # every row of the batch was skipped (counted above)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw") if k in batch}
        out = self.model(**inputs, labels=batch["labels"])  # HF shifts labels and averages over labelled tokens
        tokens = (batch["labels"] != -100).sum()
        self.log(f"{stage}/loss", out.loss, prog_bar=True, batch_size=batch["num_examples"])
        self.log(f"{stage}/label_tokens", tokens.float(), reduce_fx="sum", on_step=False, on_epoch=True)
        return out.loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        return self._loss(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._loss(batch, "val")

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        warmup = max(1, self.hparams.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            from transformers import AutoProcessor

            out = Path(self.hparams.export_dir)
            self.model.save_pretrained(out)
            AutoProcessor.from_pretrained(self.hparams.model_name_or_path).save_pretrained(out)
