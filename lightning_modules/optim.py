"""The optimizer both training modules use: AdamW over trainable parameters, linear warm-up, then constant."""

from __future__ import annotations

import torch
from torch import nn


def adamw_with_warmup(model: nn.Module, lr: float, weight_decay: float, warmup_steps: int) -> dict:
    """Lightning's ``configure_optimizers`` return value; frozen parameters (LoRA base, frozen vision) are left out."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
