"""The optimizer both training modules use: AdamW over trainable parameters with a warm-up, then a constant or a
cosine learning rate (LLaMA-Factory's and the HF Trainer's ``cosine``: from the peak to 0 at the last step).

Three AdamW implementations (``OPTIMIZERS``), the same update on fp32 master weights:

- ``adamw``: ``torch.optim.AdamW`` as torch picks it (``foreach`` on GPUs): fp32 moments, 8 bytes per trainable
  parameter, and during the step a temporary the size of all of them (its ``_foreach_sqrt`` of the second moments);
- ``adamw_fused``: ``torch.optim.AdamW(fused=True)``: the same state, one fused kernel, no full-size temporary;
- ``adamw_8bit``: torchao's ``AdamW8bit``: both moments block-wise quantised to 8 bits (2 bytes per parameter, 4x
  less state); tensors under 4096 elements keep fp32 moments. torchao (``pip install torchao``) is imported only
  when chosen.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adamw", "adamw_fused", "adamw_8bit")


def make_adamw(params: list[nn.Parameter], name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """One of ``OPTIMIZERS`` over ``params`` (see the module docstring)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw_fused":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    if name == "adamw_8bit":
        try:
            from torchao.optim import AdamW8bit
        except ImportError as e:
            raise ImportError("optimizer adamw_8bit needs torchao: pip install torchao") from e
        return AdamW8bit(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use one of {OPTIMIZERS}")


def warmup_steps_for(total_steps: int, warmup_steps: int = 0, warmup_ratio: float = 0.0) -> int:
    """Warm-up length: ``warmup_steps``, or ``ceil(warmup_ratio * total_steps)`` when that is longer (as the HF
    Trainer's ``warmup_ratio``)."""
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    return max(int(warmup_steps), math.ceil(warmup_ratio * max(0, total_steps)))


def lr_factor(step: int, warmup: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak lr before optimizer step ``step`` (0-based): linear warm-up over ``warmup`` steps
    (``(step + 1) / warmup``), then 1 (constant) or ``0.5 * (1 + cos(pi * progress))`` (cosine, progress from 0 at
    the end of warm-up to 1 at ``total_steps``)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; use one of {SCHEDULES}")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def adamw_with_warmup(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    schedule: str = "constant",
    total_steps: int | None = None,
    warmup_ratio: float = 0.0,
    optimizer: str = "adamw",
) -> dict:
    """Lightning's ``configure_optimizers`` return value; frozen parameters (LoRA base, frozen vision) are left out.
    ``total_steps`` (optimizer steps of the run) is needed by the cosine schedule and by ``warmup_ratio``."""
    if (schedule == "cosine" or warmup_ratio > 0) and not total_steps:
        raise ValueError("a cosine schedule or warmup_ratio needs the run's total steps (set max_steps or max_epochs)")
    total = int(total_steps or 0)
    warmup = warmup_steps_for(total, warmup_steps, warmup_ratio)
    lr_factor(0, warmup, total, schedule)  # validates the schedule's name now
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_adamw(params, optimizer, lr, weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, warmup, total, schedule))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def beta_at(step: int, total_steps: int, beta0: float, schedule: str) -> float:
    """KL coefficient at ``step``: constant, or cosine from beta0 to 0 over ``total_steps``. Pure."""
    if schedule == "constant" or total_steps <= 0:
        return beta0
    if schedule == "cosine":
        return beta0 * 0.5 * (1 + math.cos(math.pi * min(step / total_steps, 1.0)))
    raise ValueError(f"unknown beta_schedule {schedule!r}; use 'constant' or 'cosine'")


def finite_everywhere(loss: float, grad_norm: torch.Tensor) -> bool:
    """Whether the step's loss and gradient norm are finite on every rank. The norm is already global (clipping
    reduces it over the ranks); the loss is each rank's own, so its finiteness is reduced here, or a rank whose loss
    alone is not finite would skip the optimizer step while the others take it. A collective under DDP/FSDP."""
    ok = torch.tensor(float(math.isfinite(loss) and bool(torch.isfinite(grad_norm))), device=grad_norm.device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    return bool(ok)
