"""RolloutCallback: the rewards receive the columns they declare, the module receives one ``RolloutStep`` whose status
says what to do, and a staged schedule picks the settings of the current step. The rollouts are real (the tiny model
through the HF engine); the trainer is the few attributes the callback reads, and it reads none of the module's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from lightning_modules.callback import RolloutCallback, RolloutStep, settings_at
from lightning_modules.config import RolloutSettings, RolloutStage
from lightning_modules.policy import load_policy
from rewards import AccuracyReward, CombinedReward, Reward
from rollout.hf import HFEngine
from tests.probes import TextChecksumReward


class ColumnRecorder(Reward):
    """Scores 0 and keeps the keyword columns of each call."""

    name = "recorder"
    columns = ("problem",)

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict] = []

    def score(self, completions, **batch):
        self.calls.append(batch)
        return [0.0] * len(completions)


@pytest.fixture(scope="module")
def policy_and_processor(tiny_checkpoint, processor):
    return load_policy(str(tiny_checkpoint), dtype="float32"), processor


def data_batch(processor, n: int) -> dict:
    questions = [f"What colour is shape {i}? Options: A. red B. blue" for i in range(n)]
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for q in questions
    ]
    images = [[Image.new("RGB", (56, 56), (40 * i, 0, 0))] for i in range(n)]
    return {
        "prompt": prompts,
        "images": images,
        "id": [f"row{i}" for i in range(n)],
        "problem": questions,
        "solution": ["<answer>A</answer>"] * n,
        "problem_type": ["multiple choice"] * n,
        "task": ["colour"] * n,  # a column no reward declares
    }


def rollout_for(policy_and_processor, rewards: list[Reward], settings: RolloutSettings, batch: dict) -> RolloutStep:
    policy, processor = policy_and_processor
    callback = RolloutCallback(HFEngine(), CombinedReward(rewards), settings)
    callback.attach(policy, processor)
    callback._start_engine()
    trainer = SimpleNamespace(
        global_step=0, world_size=1, is_global_zero=True, strategy=SimpleNamespace(root_device=torch.device("cpu"))
    )
    torch.manual_seed(0)
    callback.on_train_batch_start(trainer, None, batch, 0)  # the callback reads nothing of the module
    return batch["rollout"]


SETTINGS = RolloutSettings(group_size=2, max_new_tokens=4, log_samples_every_n_steps=0)


def test_rewards_receive_the_columns_they_declare_repeated_per_completion(policy_and_processor):
    recorder = ColumnRecorder()
    batch = data_batch(policy_and_processor[1], 2)
    step = rollout_for(policy_and_processor, [AccuracyReward(), recorder], SETTINGS, batch)
    (call,) = recorder.calls
    # each reward receives the columns it declares (the recorder: problem), not id, not task, not accuracy's
    assert sorted(call) == ["problem"]
    assert call["problem"] == [batch["problem"][0]] * 2 + [batch["problem"][1]] * 2  # prompt-major, G = 2
    assert step.status == "train" and "reward/recorder" in step.metrics


def test_a_step_with_spread_rewards_trains_on_every_group(policy_and_processor):
    batch = data_batch(policy_and_processor[1], 2)
    step = rollout_for(policy_and_processor, [TextChecksumReward()], SETTINGS, batch)
    assert step.status == "train" and step.batch.num_groups == 2 and step.batch.num_rows == 4
    assert step.metrics["rollout/groups_kept"] == 2.0 and step.metrics["rollout/group_size"] == 2.0


def test_dynamic_sampling_without_an_informative_group_is_uninformative(policy_and_processor):
    settings = RolloutSettings(group_size=2, max_new_tokens=4, log_samples_every_n_steps=0, dynamic_sampling=True)
    batch = data_batch(policy_and_processor[1], 2)
    step = rollout_for(policy_and_processor, [ColumnRecorder()], settings, batch)  # every completion scores 0
    assert step.status == "uninformative" and step.batch is None
    assert step.metrics["rollout/groups_kept"] == 0.0 and step.metrics["rollout/uninformative_steps"] == 1.0
    assert "reward/total" in step.metrics  # the rollout's metrics are still handed over


def test_a_batch_whose_rows_were_all_skipped_is_empty(policy_and_processor):
    batch = {key: [] for key in data_batch(policy_and_processor[1], 0)}
    recorder = ColumnRecorder()
    step = rollout_for(policy_and_processor, [recorder], SETTINGS, batch)
    assert step == RolloutStep("empty") and recorder.calls == []  # nothing sampled, nothing scored


def test_rollout_step_status_and_batch_agree():
    with pytest.raises(ValueError, match="status"):
        RolloutStep("skipped")
    with pytest.raises(ValueError, match="needs"):
        RolloutStep("train")
    with pytest.raises(ValueError, match="has no"):
        RolloutStep("empty", batch=object())


def test_ptst_stage_schedule():
    base = RolloutSettings(group_size=8, max_new_tokens=100)
    stages = [RolloutStage(2, 4096, 16), RolloutStage(3, 8192, 8), RolloutStage(1, 16384, 4)]
    seen = [(s.max_new_tokens, s.group_size) for s in (settings_at(k, base, stages) for k in range(8))]
    assert seen == [(4096, 16)] * 2 + [(8192, 8)] * 3 + [(16384, 4)] * 3  # the last stage continues
    assert settings_at(5, base, None) is base
    assert settings_at(3, base, stages).temperature == base.temperature  # a stage overrides length and G only


def test_step_shape_is_the_largest_stage_at_the_data_s_bounds():
    """What the engine sizes itself for: the data's batch, prompt length and pixel bounds, and the stage whose
    sequences take the most tokens (PTST: 16 x (4096 + 4096) per prompt in stage 1, more than 8 x (4096 + 8192))."""
    from types import SimpleNamespace

    from rollout.engine import StepShape
    from rollout.hf import HFEngine

    data = SimpleNamespace(batch_size=4, max_prompt_length=4096, min_pixels=3136, max_pixels=10**6)
    stages = [RolloutStage(300, 4096, 16), RolloutStage(300, 8192, 8)]
    callback = RolloutCallback(HFEngine(), CombinedReward([AccuracyReward()]), RolloutSettings(), stages)
    assert callback.step_shape(data) == StepShape(4, 16, 4096, 4096, 3136, 10**6)
    plain = RolloutCallback(
        HFEngine(), CombinedReward([AccuracyReward()]), RolloutSettings(group_size=8, max_new_tokens=256)
    )
    assert plain.step_shape(data) == StepShape(4, 8, 4096, 256, 3136, 10**6)
    assert plain.step_shape(SimpleNamespace()) is None  # a datamodule that does not say


def test_stage_index_and_the_schedule_problems_both_ways():
    from lightning_modules.callback import stage_index, stage_schedule_problems

    stages = [RolloutStage(2, 64, 8), RolloutStage(2, 128, 4)]
    assert [stage_index(step, stages) for step in range(6)] == [0, 0, 1, 1, 1, 1]  # the last continues
    assert stage_index(3, None) is None
    assert stage_schedule_problems(4, stages) == [] and stage_schedule_problems(-1, stages) == []
    (short,) = stage_schedule_problems(2, stages)
    assert "max_steps=2 ends in stage 1 of 2" in short and "stage(s) 2-2 never run" in short
    (long,) = stage_schedule_problems(5, stages)
    assert "add up to 4 steps and max_steps=5: the last stage continues for 1 more" in long
