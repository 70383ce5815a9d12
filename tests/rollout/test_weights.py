"""Streaming the policy's weights for an engine: names, LoRA merging, and an FSDP2-sharded policy gathered one
parameter at a time on two CPU processes (FSDP2; FSDP1 is not supported)."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.policy import LoRAConfig, load_policy
from rollout.weights import checkpoint_name, iter_named_weights, lora_layers, merged_lora_weights
from tests.distributed import run_on_ranks


def _saved(checkpoint) -> dict[str, torch.Tensor]:
    """The checkpoint's weights under transformers' parameter names (what vLLM's loader maps)."""
    return load_policy(str(checkpoint), "float32").state_dict()


def test_checkpoint_names():
    wrapped = "_fsdp_wrapped_module.base_model.model.model.language_model.layers.0._checkpoint_wrapped_module.mlp"
    assert checkpoint_name(wrapped + ".up_proj.base_layer.weight") == "model.language_model.layers.0.mlp.up_proj.weight"


def test_full_policy_yields_every_saved_weight(tiny_checkpoint):
    policy = load_policy(str(tiny_checkpoint), "float32")
    streamed = dict(iter_named_weights(policy))
    saved = _saved(tiny_checkpoint)
    assert set(saved) <= set(streamed)  # tied weights appear under each name
    for name, tensor in saved.items():
        assert torch.equal(streamed[name], tensor), name
    assert (
        streamed["model.language_model.embed_tokens.weight"].data_ptr()
        == next(p for n, p in policy.named_parameters() if n.endswith("embed_tokens.weight")).data_ptr()
    )  # views of the live parameters: no copy


def test_lora_merge_matches_peft_merge(tiny_checkpoint):
    policy = load_policy(str(tiny_checkpoint), "float32", lora=LoRAConfig(r=4, alpha=8, dropout=0.0, vision=True))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_()
    vision = dict(merged_lora_weights(policy, lambda n: n.startswith("model.visual.")))
    assert vision and all(n.startswith("model.visual.") for n in vision)
    import copy

    merged = copy.deepcopy(policy).merge_and_unload().state_dict()
    for name, tensor in vision.items():
        torch.testing.assert_close(tensor, merged[name], rtol=0, atol=1e-6, msg=name)
    qkv = "model.visual.blocks.0.attn.qkv.weight"
    assert not torch.allclose(vision[qkv], _saved(tiny_checkpoint)[qkv])  # the adapter really was merged


def _sharded_worker(rank: int, checkpoint: str, out: str) -> None:
    torch.manual_seed(0)
    policy = load_policy(checkpoint, "float32")
    from torch.distributed.fsdp import fully_shard

    for layer in policy.model.language_model.layers:
        fully_shard(layer)
    fully_shard(policy)
    assert any(type(p).__name__ == "DTensor" for p in policy.parameters())
    streamed = {name: t.clone() for name, t in iter_named_weights(policy)}
    # in the engine's dtype: each rank casts its own shard, so the gather carries bf16 (half the bytes)
    halved = {name: t.clone() for name, t in iter_named_weights(policy, dtype=torch.bfloat16)}
    if rank == 0:
        torch.save({"fp32": streamed, "bf16": halved}, out)


@pytest.mark.slow
def test_fsdp2_sharded_policy_streams_full_weights(tiny_checkpoint, tmp_path):
    out = tmp_path / "streamed.pt"
    run_on_ranks(_sharded_worker, str(tiny_checkpoint), str(out))
    both = torch.load(out, weights_only=True)
    streamed, halved = both["fp32"], both["bf16"]
    for name, tensor in _saved(tiny_checkpoint).items():
        assert name in streamed, name
        assert torch.equal(streamed[name], tensor), name
        assert halved[name].dtype == torch.bfloat16 and torch.equal(halved[name], tensor.to(torch.bfloat16)), name


def _sharded_lora_worker(rank: int, checkpoint: str, out: str) -> None:
    from peft import get_peft_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh

    from lightning_modules.sharding import shard_model
    from rollout.weights import full_tensor

    policy = _lora_policy(checkpoint)
    shard_model(policy, init_device_mesh("cpu", (2,)))
    vision = {n: t.clone() for n, t in merged_lora_weights(policy, lambda n: n.startswith("model.visual."))}
    adapters = {k: full_tensor(v.detach()).clone() for k, v in get_peft_model_state_dict(policy).items()}
    adapted = {n: t.clone() for n, t in merged_lora_weights(policy, set(lora_layers(policy)).__contains__)}
    if rank == 0:
        torch.save({"vision": vision, "adapters": adapters, "adapted": adapted}, out)


def _lora_policy(checkpoint: str):
    torch.manual_seed(0)
    policy = load_policy(checkpoint, "float32", lora=LoRAConfig(r=4, alpha=8, dropout=0.0, vision=True))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_()
    return policy


@pytest.mark.slow
def test_fsdp2_sharded_lora_policy_streams_merged_vision_and_whole_adapters(tiny_checkpoint, tmp_path):
    """What the vLLM engine's LoRA syncs read from a sharded policy: the vision weights with their adapter merged and
    the language adapter tensors (``lora_sync=adapter``), or every adapted layer merged (``merged``), each gathered
    whole, equal to the unsharded policy's."""
    from peft import get_peft_model_state_dict

    out = tmp_path / "streamed.pt"
    run_on_ranks(_sharded_lora_worker, str(tiny_checkpoint), str(out))
    streamed = torch.load(out, weights_only=True)
    policy = _lora_policy(str(tiny_checkpoint))
    vision = dict(merged_lora_weights(policy, lambda n: n.startswith("model.visual.")))
    assert streamed["vision"].keys() == vision.keys()
    for name, tensor in vision.items():
        torch.testing.assert_close(streamed["vision"][name], tensor, rtol=0, atol=1e-6, msg=name)
    adapters = get_peft_model_state_dict(policy)
    assert streamed["adapters"].keys() == adapters.keys() and any("lora_B" in k for k in adapters)
    for name, tensor in adapters.items():
        assert torch.equal(streamed["adapters"][name], tensor), name
    adapted = dict(merged_lora_weights(policy, set(lora_layers(policy)).__contains__))
    assert streamed["adapted"].keys() == adapted.keys() == lora_layers(policy).keys()
    assert {n.split(".")[1] for n in adapted} == {"language_model", "visual"}
    for name, tensor in adapted.items():
        torch.testing.assert_close(streamed["adapted"][name], tensor, rtol=0, atol=1e-6, msg=name)
