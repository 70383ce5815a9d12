"""The memory estimate's byte counts against the real tensors of the tiny checkpoint: parameters, gradients and
AdamW state after one optimizer step (full fine-tune and LoRA), and the bf16 frozen reference, to the byte."""

import json

import pytest
import torch

from tools.memory import (
    Workload,
    activation_bytes,
    main,
    parameter_shapes,
    recipe_workloads,
    shard_numel,
    state_bytes,
)


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _one_step(model: torch.nn.Module):
    """One AdamW step (the modules' optimizer) on a loss that reaches every trainable parameter."""
    from lightning_modules.optim import adamw_with_warmup

    opt = adamw_with_warmup(model, lr=1e-3, weight_decay=0.0, warmup_steps=0)["optimizer"]
    sum(p.float().square().sum() for p in model.parameters() if p.requires_grad).backward()
    opt.step()
    return opt


def _measured(model: torch.nn.Module, opt) -> dict[str, int]:
    params = list(model.parameters())  # a tied LM head is one parameter, counted once
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    return dict(
        params=_bytes(params), grads=_bytes(p.grad for p in params if p.grad is not None), optimizer=_bytes(state)
    )


@pytest.fixture(scope="module")
def config(tiny_checkpoint):
    return json.loads((tiny_checkpoint / "config.json").read_text())


def test_parameter_inventory_is_the_models(tiny_checkpoint, config):
    from lightning_modules.policy import load_policy

    model = load_policy(str(tiny_checkpoint), "float32")
    assert parameter_shapes(config) == {n: tuple(p.shape) for n, p in model.named_parameters()}


def test_full_fine_tune_bytes_match_the_tensors(tiny_checkpoint, config):
    from lightning_modules.policy import FrozenReference, load_policy

    model = load_policy(str(tiny_checkpoint), "float32")
    opt = _one_step(model)
    measured, formula = _measured(model, opt), state_bytes(config, world_size=1)
    assert measured == dict(
        params=formula["params"], grads=formula["grads"], optimizer=formula["adam"] + formula["adam_step"]
    )
    assert formula["params"] == 4 * sum(p.numel() for p in model.parameters())  # fp32 master weights
    reference = FrozenReference(model, "bfloat16")
    assert _bytes(reference.model.parameters()) == formula["reference"]


def test_lora_bytes_match_the_tensors(tiny_checkpoint, config):
    from lightning_modules.policy import LoRAConfig, load_policy

    model = load_policy(str(tiny_checkpoint), "float32", lora=LoRAConfig(r=16))
    opt = _one_step(model)
    measured, formula = _measured(model, opt), state_bytes(config, world_size=1, lora_rank=16)
    assert measured == dict(
        params=formula["params"], grads=formula["grads"], optimizer=formula["adam"] + formula["adam_step"]
    )
    assert formula["trainable_numel"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert formula["reference"] == 0  # the adapters switched off are the reference


def test_sharding_divides_and_pads_dim_0():
    assert shard_numel((151936, 128), 1) == 151936 * 128
    assert shard_numel((151936, 128), 16) == 9496 * 128  # 151936 / 16 exactly
    assert shard_numel((3, 5), 2) == 2 * 5  # 2 rows each, the second rank's padded


def test_real_sizes_and_recipes():
    from tools.tiny_model import qwen2_5_vl_config

    for size, billions in (("3b", 3.75), ("7b", 8.29)):  # the published checkpoints' parameter counts
        numel = state_bytes(qwen2_5_vl_config(size).to_dict())["numel"]
        assert abs(numel / 1e9 - billions) < 0.01, (size, numel)
    stages = recipe_workloads("configs/vision_r1_ptst.yaml")
    assert [(w.completion_tokens, w.group_size, w.micro_batch_size) for w in stages] == [(4096, 16, 4), (8192, 8, 4)]
    (visionary,) = recipe_workloads("configs/visionary_r1.yaml")
    assert (visionary.prompt_tokens, visionary.image_tokens, visionary.vllm_gpu_memory_utilization) == (4096, 3009, 0.3)
    config = qwen2_5_vl_config("3b").to_dict()
    no_ckpt = Workload("x", 4096, 3009, 1024, 8, 8, gradient_checkpointing=False)
    ckpt = Workload("x", 4096, 3009, 1024, 8, 8, gradient_checkpointing=True)
    assert activation_bytes(config, ckpt)["layers"] < activation_bytes(config, no_ckpt)["layers"] / 3
    assert state_bytes(config, 8)["params"] < state_bytes(config, 1)["params"] / 7.9


def test_main_prints_a_table_for_a_checkpoint(tiny_checkpoint, capsys):
    main(
        [
            "--checkpoint",
            str(tiny_checkpoint),
            "--gpus",
            "1",
            "2",
            "--prompt-tokens",
            "64",
            "--image-tokens",
            "16",
            "--completion-tokens",
            "32",
            "--group-size",
            "4",
            "--micro-batch-size",
            "4",
        ]
    )
    out = capsys.readouterr().out
    assert out.count(f"| {tiny_checkpoint.name} | full |") == 3  # two GPU counts, one activation row
    assert "| LoRA r16 |" in out


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_the_other_families_inventory_is_the_model_s(family_checkpoint, family):
    """Built on the meta device from config.json: the same names and shapes as the loaded tiny model."""
    from lightning_modules.policy import load_policy

    config = json.loads((family_checkpoint(family) / "config.json").read_text())
    model = load_policy(str(family_checkpoint(family)), "float32")
    assert parameter_shapes(config) == {n: tuple(p.shape) for n, p in model.named_parameters()}


def test_released_shapes_of_the_other_families_count_their_parameters():
    from tools.tiny_model import model_config

    # the published checkpoints' parameter counts (their model cards: 8.29B, 4.44B, 8.77B)
    for family, size, billions in (("qwen2_vl", "7b", 8.29), ("qwen3_vl", "4b", 4.44), ("qwen3_vl", "8b", 8.77)):
        numel = state_bytes(model_config(family, size).to_dict())["numel"]
        assert abs(numel / 1e9 - billions) < 0.01, (family, size, numel)
