"""FSDP2 pieces that need no second process: the mixed-precision policy per precision flag, the units, and the
no-op paths on an unsharded model. The sharded runs are in tests/e2e/test_fsdp.py and tests/rollout/."""

import torch

from lightning_modules.policy import load_policy
from lightning_modules.sharding import full_state_dict, gathered_root, mixed_precision_policy, shard_units
from rollout.weights import full_tensor, is_sharded


def test_bf16_mixed_computes_in_bf16_and_reduces_in_fp32():
    policy = mixed_precision_policy("bf16-mixed")
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert mixed_precision_policy("32-true") is None and mixed_precision_policy("bf16-true") is None


def test_units_are_every_decoder_layer_and_vision_block_in_forward_order(tiny_checkpoint):
    model = load_policy(str(tiny_checkpoint), "float32")
    units = shard_units(model)
    assert units == [*model.model.visual.blocks, *model.model.language_model.layers]


def test_unsharded_model_passes_through(tiny_checkpoint):
    model = load_policy(str(tiny_checkpoint), "float32")
    assert not is_sharded(model)
    with gathered_root(model) as gathered:
        assert gathered is model
    state = full_state_dict(model)
    assert state.keys() == model.state_dict().keys()
    norm = torch.tensor(2.5)
    assert full_tensor(norm) is norm
