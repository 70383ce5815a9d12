"""Policy-gradient objectives, one ``nn.Module`` each, chosen by ``class_path`` in YAML.

All share ``forward(logps, old_logps, ref_logps, advantages, mask) -> (loss, metrics)`` with
``logps, old_logps, ref_logps: [B*G, T]`` (log-prob of each sampled completion token), ``advantages: [B*G]`` and
``mask: [B*G, T]`` (1 on completion tokens). ``old_logps=None`` means on-policy (mu = 1): the ratio is 1 and the
gradient is the plain policy gradient. ``ref_logps=None`` requires ``beta == 0``. An optional ``is_weights: [B*G, T]``
multiplies each token's surrogate term (truncated importance sampling against the rollout engine's own log-probs).

Per-token clipped surrogate: ``min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A)`` with ``r = exp(logps - old)``;
KL to the reference by the k3 estimator ``exp(ref - logps) - (ref - logps) - 1``.
"""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1 (over ``dim``, or everything); empty rows give 0."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference); >= 0, and 0 where the two agree."""
    delta = ref_logps - logps  # [B*G, T]
    return torch.exp(delta) - delta - 1


def clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, eps_low: float, eps_high: float) -> torch.Tensor:
    """``min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A)``; ``adv`` broadcasts against ``ratio``."""
    return torch.minimum(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)


class PolicyLoss(nn.Module):
    """Shared pieces: the ratio, the KL term and the metrics. Subclasses choose the normalisation."""

    def __init__(self, beta: float = 0.04, epsilon: float = 0.2, epsilon_high: float | None = None) -> None:
        super().__init__()
        if beta < 0 or epsilon <= 0:
            raise ValueError(f"need beta >= 0 and epsilon > 0, got beta={beta}, epsilon={epsilon}")
        self.beta = beta  # the GRPO module may anneal this (Visionary-R1: cosine to 0)
        self.eps_low = epsilon
        self.eps_high = epsilon if epsilon_high is None else epsilon_high

    def token_terms(self, logps, old_logps, ref_logps, advantages, mask, is_weights=None):
        """Per-token loss ``[B*G, T]`` and metrics."""
        if old_logps is None:
            old_logps = logps.detach()
        log_ratio = logps - old_logps  # [B*G, T]
        ratio = torch.exp(log_ratio)  # [B*G, T]
        adv = advantages.unsqueeze(1)  # [B*G, 1]
        per_token = -clipped_surrogate(ratio, adv, self.eps_low, self.eps_high)  # [B*G, T]
        if is_weights is not None:
            per_token = per_token * is_weights
        metrics = self.ratio_metrics(ratio, adv, mask)
        if self.beta > 0:
            if ref_logps is None:
                raise ValueError(f"{type(self).__name__}: beta={self.beta} needs ref_logps")
            kl = k3_kl(logps, ref_logps)  # [B*G, T]
            per_token = per_token + self.beta * kl
            metrics["kl"] = masked_mean(kl.detach(), mask)
        elif ref_logps is not None:
            metrics["kl"] = masked_mean(k3_kl(logps.detach(), ref_logps), mask)
        return per_token, metrics

    def ratio_metrics(self, ratio, adv, mask) -> dict[str, torch.Tensor]:
        ratio = ratio.detach()
        low = ((ratio < 1 - self.eps_low) & (adv < 0)).float()  # clipped from below
        high = ((ratio > 1 + self.eps_high) & (adv > 0)).float()  # clipped from above
        on = mask.bool()
        picked = ratio[on] if on.any() else ratio.new_ones(1)
        return {
            "clip_frac_low": masked_mean(low, mask),
            "clip_frac_high": masked_mean(high, mask),
            "ratio_min": picked.min(),
            "ratio_mean": picked.mean(),
            "ratio_max": picked.max(),
        }


class GRPOLoss(PolicyLoss):
    """GRPO: mean over each sequence's completion tokens, then over sequences (Visionary-R1's normalisation)."""

    def forward(self, logps, old_logps, ref_logps, advantages, mask, is_weights=None):
        per_token, metrics = self.token_terms(logps, old_logps, ref_logps, advantages, mask, is_weights)
        return masked_mean(per_token, mask, dim=1).mean(), metrics


class DAPOLoss(PolicyLoss):
    """DAPO: clip-higher (``epsilon_high`` > ``epsilon``), token-level mean over all completion tokens of the batch,
    no KL by default."""

    def __init__(self, beta: float = 0.0, epsilon: float = 0.2, epsilon_high: float = 0.28) -> None:
        super().__init__(beta, epsilon, epsilon_high)

    def forward(self, logps, old_logps, ref_logps, advantages, mask, is_weights=None):
        per_token, metrics = self.token_terms(logps, old_logps, ref_logps, advantages, mask, is_weights)
        return masked_mean(per_token, mask), metrics


class DrGRPOLoss(PolicyLoss):
    """Dr. GRPO: sum over tokens divided by a constant (``num sequences * max_completion_length``), so longer
    wrong answers are not penalised less per token. Pair it with advantages computed without std scaling
    (``group_advantages(..., scale_std=False)``)."""

    def __init__(self, max_completion_length: int, beta: float = 0.0, epsilon: float = 0.2) -> None:
        super().__init__(beta, epsilon)
        self.max_completion_length = max_completion_length

    def forward(self, logps, old_logps, ref_logps, advantages, mask, is_weights=None):
        per_token, metrics = self.token_terms(logps, old_logps, ref_logps, advantages, mask, is_weights)
        return (per_token * mask).sum() / (mask.shape[0] * self.max_completion_length), metrics


class GSPOLoss(PolicyLoss):
    """GSPO: one importance ratio per sequence, ``exp(mean_t(logps - old_logps))``, clipped per sequence with the
    paper's small ranges; the KL term (if any) is GRPO's per-sequence mean."""

    def __init__(self, beta: float = 0.0, epsilon: float = 3e-4, epsilon_high: float = 4e-4) -> None:
        super().__init__(beta, epsilon, epsilon_high)

    def forward(self, logps, old_logps, ref_logps, advantages, mask, is_weights=None):
        if old_logps is None:
            old_logps = logps.detach()
        if is_weights is not None:  # per-sequence weight: the mean of its tokens' weights
            advantages = advantages * masked_mean(is_weights, mask, dim=1)
        seq_ratio = torch.exp(masked_mean(logps - old_logps, mask, dim=1))  # [B*G]
        loss = -clipped_surrogate(seq_ratio, advantages, self.eps_low, self.eps_high).mean()
        metrics = self.ratio_metrics(
            seq_ratio.unsqueeze(1), advantages.unsqueeze(1), torch.ones_like(seq_ratio)[:, None]
        )
        if ref_logps is not None:
            kl = masked_mean(k3_kl(logps, ref_logps), mask, dim=1)  # [B*G]
            metrics["kl"] = kl.detach().mean()
            if self.beta > 0:
                loss = loss + self.beta * kl.mean()
        elif self.beta > 0:
            raise ValueError(f"GSPOLoss: beta={self.beta} needs ref_logps")
        return loss, metrics
