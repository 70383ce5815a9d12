"""Loss values worked out by hand, and the mu = 1 gradient equals the policy gradient plus the k3 KL gradient."""

import math

import pytest
import torch

from lightning_modules.losses import DAPOLoss, DrGRPOLoss, GRPOLoss, GSPOLoss, k3_kl


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_grpo_on_policy_value_by_hand():
    # one sequence, 2 tokens, ratio 1, A = 2. ref - logps = [0, 1] -> k3 = [0, e - 2 = 0.718282]
    # per token: -(2 - 0.04 * k3) = [-2, -1.971269]; sequence mean = -1.985634
    logps = t([-1.0, -2.0])
    loss, metrics = GRPOLoss(beta=0.04)(logps, None, t([-1.0, -1.0]), torch.tensor([2.0]), t([1.0, 1.0]))
    assert loss.item() == pytest.approx(-(2 + 2 - 0.04 * (math.e - 2)) / 2, abs=1e-6)
    assert metrics["kl"].item() == pytest.approx((math.e - 2) / 2, abs=1e-6)
    assert metrics["ratio_mean"].item() == 1.0


def test_clipping_both_sides():
    loss_fn = GRPOLoss(beta=0.0, epsilon=0.2)
    mask = t([1.0])
    # r = 1.5, A = +1: min(1.5, 1.2) = 1.2 -> loss -1.2, clipped from above
    loss, m = loss_fn(t([math.log(1.5)]), t([0.0]), None, torch.tensor([1.0]), mask)
    assert loss.item() == pytest.approx(-1.2) and m["clip_frac_high"].item() == 1.0
    # r = 1.5, A = -1: min(-1.5, -1.2) = -1.5 -> loss 1.5, not clipped
    loss, m = loss_fn(t([math.log(1.5)]), t([0.0]), None, torch.tensor([-1.0]), mask)
    assert loss.item() == pytest.approx(1.5) and m["clip_frac_high"].item() == 0.0
    # r = 0.5, A = -1: min(-0.5, -0.8) = -0.8 -> loss 0.8, clipped from below
    loss, m = loss_fn(t([math.log(0.5)]), t([0.0]), None, torch.tensor([-1.0]), mask)
    assert loss.item() == pytest.approx(0.8) and m["clip_frac_low"].item() == 1.0


def test_sequence_vs_token_normalisation():
    # seq 0: 1 token, A = 1 -> per token -1; seq 1: 3 tokens, A = 2 -> per token -2 (on policy, no KL)
    logps = torch.zeros(2, 3)
    mask = t([1.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    adv = torch.tensor([1.0, 2.0])
    grpo, _ = GRPOLoss(beta=0.0)(logps, None, None, adv, mask)
    dapo, _ = DAPOLoss()(logps, None, None, adv, mask)
    dr, _ = DrGRPOLoss(max_completion_length=4)(logps, None, None, adv, mask)
    assert grpo.item() == pytest.approx((-1 - 2) / 2)  # mean of sequence means
    assert dapo.item() == pytest.approx((-1 - 6) / 4)  # mean over the 4 tokens
    assert dr.item() == pytest.approx((-1 - 6) / (2 * 4))  # sum over tokens / (2 sequences * 4)


def test_mu1_gradient_is_policy_gradient_plus_k3_gradient():
    torch.manual_seed(0)
    logps = torch.randn(3, 4).requires_grad_(True)
    ref = torch.randn(3, 4)
    adv = torch.tensor([1.0, -0.5, 2.0])
    mask = t([1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1])
    beta = 0.1
    loss, _ = GRPOLoss(beta=beta)(logps, None, ref, adv, mask)
    loss.backward()
    # d/dlogp of -(A * r) with r = exp(logp - sg(logp)) is -A; d k3/dlogp = 1 - exp(ref - logp)
    lengths = mask.sum(1, keepdim=True)
    expected = (-adv[:, None] + beta * (1 - torch.exp(ref - logps.detach()))) * mask / lengths / 3
    assert torch.allclose(logps.grad, expected, atol=1e-6)


def test_gspo_sequence_ratio():
    # seq log-ratios per token [0.1, 0.3] -> mean 0.2 -> s = e^0.2 = 1.2214 > 1 + 4e-4, A = 1 -> clipped to 1.0004
    loss, m = GSPOLoss()(t([0.1, 0.3]), t([0.0, 0.0]), None, torch.tensor([1.0]), t([1.0, 1.0]))
    assert loss.item() == pytest.approx(-1.0004, abs=1e-6)
    assert m["ratio_max"].item() == pytest.approx(math.exp(0.2), abs=1e-5) and m["clip_frac_high"].item() == 1.0


def test_k3_is_nonnegative_and_zero_at_equality():
    x = torch.linspace(-5, 5, 11)
    assert (k3_kl(x, x.flip(0)) >= 0).all() and k3_kl(x, x).abs().max().item() == 0.0


def test_beta_without_reference_is_an_error():
    with pytest.raises(ValueError, match="ref_logps"):
        GRPOLoss(beta=0.04)(t([0.0]), None, None, torch.tensor([1.0]), t([1.0]))


def test_truncated_importance_weights_scale_each_token_by_hand():
    logps = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.2, 0.4, 0.8]]))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([1.0, -2.0])
    w = torch.tensor([[2.0, 0.5, 9.0], [1.0, 1.0, 0.25]])
    loss, _ = GRPOLoss(beta=0.0)(logps, None, None, adv, mask, is_weights=w)
    # on-policy: ratio 1, token term -A * w; per-sequence mean over its tokens, then mean over sequences
    by_hand = ((-(1.0 * 2.0) - 1.0 * 0.5) / 2 + (2.0 * 1.0 + 2.0 * 1.0 + 2.0 * 0.25) / 3) / 2
    assert loss.item() == pytest.approx(by_hand)
    unweighted, _ = GRPOLoss(beta=0.0)(logps, None, None, adv, mask)
    assert unweighted.item() == pytest.approx((-1.0 + 2.0) / 2)
