"""Group-normalised advantages: a pure function of the rewards of each prompt's G completions."""

from __future__ import annotations

import torch


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale_std: bool = True, eps: float = 1e-4
) -> tuple[torch.Tensor, int]:
    """``A_i = (r_i - mean_group) / (std_group + eps)`` (or without the division when ``scale_std=False``, as
    Dr. GRPO does). Rewards are laid out prompt-major: ``[p0 g0, p0 g1, ..., p1 g0, ...]``.

    Returns the advantages ``[B*G]`` and the number of groups whose rewards are all equal (those get advantage 0
    and teach nothing). The std is the unbiased sample std, as in TRL's GRPO; with ``group_size == 1`` there is no
    baseline and every advantage is 0.
    """
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be 1-D with a multiple of group_size={group_size} values, got {tuple(rewards.shape)}"
        )
    grouped = rewards.float().view(-1, group_size)  # [B, G]
    mean = grouped.mean(dim=1, keepdim=True)  # [B, 1]
    flat = _all_equal(grouped)  # [B]
    zero_variance = int(flat.sum())
    if group_size == 1:
        return torch.zeros_like(rewards, dtype=torch.float32), zero_variance
    adv = grouped - mean  # [B, G]
    if scale_std:
        adv = adv / (grouped.std(dim=1, keepdim=True) + eps)
        adv = torch.where(flat.unsqueeze(1), torch.zeros_like(adv), adv)  # 0/0 when eps == 0
    return adv.reshape(-1), zero_variance


def informative_groups(rewards: torch.Tensor, group_size: int) -> list[int]:
    """Indices of the groups whose rewards are not all equal (prompt-major layout, as ``group_advantages``): the
    groups that carry a policy gradient. DAPO's dynamic sampling trains on these only. A group with a non-finite
    reward is kept, so the module's non-finite guard sees and counts it rather than the filter hiding it."""
    return torch.nonzero(~_all_equal(rewards.float().view(-1, group_size))).flatten().tolist()


def _all_equal(grouped: torch.Tensor) -> torch.Tensor:
    """[B] whether each group's rewards (grouped [B, G]) are all equal and finite: a NaN or infinite reward gives a
    NaN spread, so its group counts as unequal and reaches the module's non-finite guard."""
    return grouped.amax(dim=1) - grouped.amin(dim=1) == 0
