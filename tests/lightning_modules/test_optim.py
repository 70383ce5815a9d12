"""Learning-rate and KL schedules: warm-up, constant, cosine (values worked out by hand); the settings' checks."""

import math

import pytest
import torch

from lightning_modules.config import OptimConfig, UpdateConfig
from lightning_modules.optim import adamw_with_warmup, beta_at, lr_factor, warmup_steps_for


def test_warmup_ratio_rounds_up_and_never_shortens_warmup_steps():
    assert warmup_steps_for(100, 0, 0.05) == 5  # ceil(5.0)
    assert warmup_steps_for(101, 0, 0.05) == 6  # ceil(5.05)
    assert warmup_steps_for(100, 10, 0.05) == 10
    assert warmup_steps_for(100, 0, 0.0) == 0
    with pytest.raises(ValueError, match="warmup_ratio"):
        warmup_steps_for(100, 0, 1.5)


def test_constant_after_linear_warmup():
    assert [lr_factor(s, 4, 100, "constant") for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(0, 0, 100, "constant") == 1.0  # no warm-up: the peak from the first step


def test_cosine_from_peak_to_zero_after_warmup():
    # warm-up 2 of 10 steps: steps 0, 1 -> 0.5, 1.0; then progress (s - 2) / 8
    assert lr_factor(0, 2, 10, "cosine") == 0.5
    assert lr_factor(2, 2, 10, "cosine") == 1.0  # progress 0
    assert lr_factor(6, 2, 10, "cosine") == pytest.approx(0.5)  # progress 1/2: (1 + cos(pi/2)) / 2
    assert lr_factor(4, 2, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))  # 0.8536
    assert lr_factor(10, 2, 10, "cosine") == pytest.approx(0.0)


def test_scheduler_drives_the_optimizer_lr():
    model = torch.nn.Linear(2, 2)
    conf = adamw_with_warmup(model, 1e-3, 0.0, 0, "cosine", total_steps=20, warmup_ratio=0.05)  # warm-up 1 step
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(21):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3)  # (0 + 1) / 1
    assert lrs[1] == pytest.approx(1e-3)  # progress 0
    assert lrs[10] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 9 / 19)))
    assert lrs[20] == pytest.approx(0.0, abs=1e-12)


def test_schedule_errors_are_raised_before_training():
    with pytest.raises(ValueError, match="total steps"):
        adamw_with_warmup(torch.nn.Linear(2, 2), 1e-3, 0.0, 0, "cosine")
    with pytest.raises(ValueError, match="unknown lr schedule"):
        adamw_with_warmup(torch.nn.Linear(2, 2), 1e-3, 0.0, 0, "linear_decay", total_steps=10)


def test_optim_config_rejects_a_schedule_typo_before_a_model_loads():
    with pytest.raises(ValueError, match="unknown lr schedule"):
        OptimConfig(lr_schedule="cosin")
    with pytest.raises(ValueError, match="warmup_ratio"):
        OptimConfig(warmup_ratio=5.0)


def test_optim_config_builds_adamw_and_asks_for_the_run_length_only_when_needed():
    model = torch.nn.Linear(2, 2)
    asked = []

    def total():
        asked.append(True)
        return 10

    built = OptimConfig(lr=1e-3, weight_decay=0.1, warmup_steps=2).build(model, total)
    group = built["optimizer"].param_groups[0]
    # the first step's lr is (0 + 1) / 2 of the peak; a constant schedule never needs the run's length
    assert group["lr"] == pytest.approx(0.5e-3) and group["weight_decay"] == 0.1 and not asked
    cosine = OptimConfig(lr=1e-3, lr_schedule="cosine").build(model, total)
    assert asked == [True]
    # cosine over 10 steps, no warm-up: step 5 is lr * (1 + cos(pi/2)) / 2 = 0.5e-3
    assert cosine["lr_scheduler"]["scheduler"].lr_lambdas[0](5) == pytest.approx(0.5)


def test_constant_beta_stays_at_beta0():
    assert [beta_at(s, 10, 0.04, "constant") for s in (0, 5, 10, 20)] == [0.04] * 4


def test_cosine_beta_from_beta0_to_zero():
    # beta0 * (1 + cos(pi * step / total)) / 2 with beta0 0.04, total 8:
    # step 0 -> 0.04; step 2 -> 0.02 * (1 + cos(pi/4)) = 0.02 * 1.70711 = 0.034142; step 4 -> 0.02; step 8 -> 0
    assert beta_at(0, 8, 0.04, "cosine") == pytest.approx(0.04)
    assert beta_at(2, 8, 0.04, "cosine") == pytest.approx(0.0341421, abs=1e-7)
    assert beta_at(4, 8, 0.04, "cosine") == pytest.approx(0.02)
    assert beta_at(8, 8, 0.04, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert beta_at(12, 8, 0.04, "cosine") == pytest.approx(0.0, abs=1e-12)  # past the end: stays at 0
    assert beta_at(3, 0, 0.04, "cosine") == 0.04  # no known length: constant


def test_update_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown beta_schedule"):
        UpdateConfig(beta_schedule="cosinus")
    with pytest.raises(ValueError, match="tis_cap"):
        UpdateConfig(tis_cap=0.0)
    with pytest.raises(ValueError, match="logps_forward"):
        UpdateConfig(logps_forward="fused")
    with pytest.raises(ValueError, match="micro_batch_size"):
        UpdateConfig(micro_batch_size=0)


@pytest.mark.parametrize("name", ["adamw", pytest.param("adamw_8bit", marks=pytest.mark.slow)])  # torchao compiles
def test_a_fine_tuning_step_moves_the_fp32_master_weights(tiny_checkpoint, name):
    """The recipes' 5e-7 step on fp32 master weights moves (almost) every weight, with 8-bit moments too: the
    quantised state changes the step's size a little, not whether it lands (bf16 weights would keep ~1% of it)."""
    from lightning_modules.policy import load_policy
    from tests.probes import moved_fraction

    policy = load_policy(str(tiny_checkpoint), "float32")
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    opt = OptimConfig(lr=5e-7, optimizer=name).build(policy, lambda: 1)["optimizer"]
    torch.manual_seed(0)
    for p in policy.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    assert moved_fraction(before, policy) > 0.99


def test_an_unknown_optimizer_is_refused_before_a_model_loads():
    with pytest.raises(ValueError, match="unknown optimizer 'adam8'; use one of"):
        OptimConfig(optimizer="adam8")
