import pytest
import torch

from rollout.advantages import group_advantages, informative_groups


def test_group_normalisation_by_hand():
    # group [1, 0, 0, 1]: mean 0.5, unbiased std sqrt(1/3) = 0.57735 -> +-0.8660 (eps 0)
    # group [2, 2, 2, 2]: all equal -> 0, counted
    adv, zero = group_advantages(torch.tensor([1.0, 0, 0, 1, 2, 2, 2, 2]), group_size=4, eps=0.0)
    s = 0.5 / (1 / 3) ** 0.5
    assert adv[:4].tolist() == pytest.approx([s, -s, -s, s], abs=1e-5)
    assert adv[4:].tolist() == [0.0] * 4 and zero == 1


def test_without_std_scaling():
    adv, zero = group_advantages(torch.tensor([3.0, 1.0]), group_size=2, scale_std=False)
    assert adv.tolist() == [1.0, -1.0] and zero == 0


def test_group_size_one_has_no_baseline():
    adv, zero = group_advantages(torch.tensor([0.3, 0.9]), group_size=1)
    assert adv.tolist() == [0.0, 0.0] and zero == 2


def test_shape_errors():
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(5), group_size=2)


def test_informative_groups_are_those_with_a_reward_spread():
    rewards = torch.tensor([1.0, 1, 1, 0, 0.5, 0.5, 2, 2, 0, 1, 0, 0])  # groups of 3: none, spread, spread, spread
    assert informative_groups(rewards, 3) == [1, 2, 3]
    assert informative_groups(torch.ones(6), 2) == []
    assert informative_groups(torch.tensor([0.0, 1.0]), 1) == []  # G = 1: no baseline, nothing to learn
    assert informative_groups(torch.tensor([1.0, 1, float("nan"), 0]), 2) == [1]  # kept for the non-finite guard
