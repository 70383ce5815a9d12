"""Learning-rate schedules: warm-up, constant, cosine (values worked out by hand)."""

import math

import pytest
import torch

from lightning_modules.optim import adamw_with_warmup, lr_factor, warmup_steps_for


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


def test_sft_module_rejects_a_schedule_typo_before_loading_a_model():
    from lightning_modules.sft import SFTModule

    with pytest.raises(ValueError, match="unknown lr schedule"):
        SFTModule("no/such/model", lr_schedule="cosin")
    with pytest.raises(ValueError, match="warmup_ratio"):
        SFTModule("no/such/model", warmup_ratio=5.0)
