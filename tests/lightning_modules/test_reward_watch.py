"""DeadRewardWatch: a reward flat across every rollout for ``patience`` steps is named once, and counted while flat."""

import math

import torch

from lightning_modules.reward_watch import DeadRewardWatch


def _step(**values: list[float]) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(v) for name, v in values.items()}


def test_a_reward_flat_for_patience_steps_warns_once_and_counts_while_flat():
    watch = DeadRewardWatch(patience=3)
    said = []
    for _ in range(5):  # "hard" is 0 for every rollout; "accuracy" varies within the step
        said += watch.update(_step(hard=[0.0, 0.0, 0.0, 0.0], accuracy=[0.0, 1.0, 0.0, 0.0]))
        if len(said) == 0:
            assert watch.dead == []
    assert len(said) == 1 and said[0].startswith("reward 'hard' has given every rollout 0 for 3 steps in a row")
    assert watch.dead == ["hard"]
    watch.update(_step(hard=[0.0, 1.0, 0.0, 0.0], accuracy=[1.0, 1.0, 1.0, 1.0]))  # it moved: no longer dead
    assert watch.dead == []


def test_a_constant_that_changes_between_steps_is_not_flat():
    watch = DeadRewardWatch(patience=2)
    for value in (0.0, 1.0, 0.0, 1.0):  # every rollout alike within a step, but the steps differ: the policy moved
        assert watch.update(_step(fmt=[value] * 4)) == []
    assert watch.dead == []


def test_nan_rows_are_ignored_and_off_means_off():
    watch = DeadRewardWatch(patience=2)
    watch.update(_step(judge=[1.0, math.nan]))
    assert watch.update(_step(judge=[math.nan, 1.0]))[0].startswith("reward 'judge' has given every rollout 1 for 2")
    off = DeadRewardWatch(patience=0)
    assert off.update(_step(judge=[1.0, 1.0])) == [] and off.dead == []


def test_state_round_trips_so_a_resumed_run_counts_on():
    watch = DeadRewardWatch(patience=3)
    watch.update(_step(hard=[0.0, 0.0]))
    watch.update(_step(hard=[0.0, 0.0]))
    resumed = DeadRewardWatch(patience=3)
    resumed.load_state_dict(watch.state_dict())
    assert len(resumed.update(_step(hard=[0.0, 0.0]))) == 1 and resumed.dead == ["hard"]
