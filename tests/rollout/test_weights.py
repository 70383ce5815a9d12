"""Streaming the policy's weights for an engine: names, LoRA merging, and an FSDP2-sharded policy gathered one
parameter at a time on two CPU processes. (FSDP1 refuses CPU, so its per-unit path needs a GPU to test.)"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_modules.policy import LoRAConfig, load_policy
from rollout.weights import checkpoint_name, iter_named_weights, merged_lora_weights


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


def _sharded_worker(rank: int, world: int, checkpoint: str, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        policy = load_policy(checkpoint, "float32")
        from torch.distributed.fsdp import fully_shard

        for layer in policy.model.language_model.layers:
            fully_shard(layer)
        fully_shard(policy)
        assert any(type(p).__name__ == "DTensor" for p in policy.parameters())
        streamed = {name: t.clone() for name, t in iter_named_weights(policy)}
        if rank == 0:
            torch.save(streamed, out)
    finally:
        dist.destroy_process_group()


def test_fsdp2_sharded_policy_streams_full_weights(tiny_checkpoint, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "streamed.pt"
    mp.spawn(_sharded_worker, args=(2, str(tiny_checkpoint), port, str(out)), nprocs=2, join=True)
    streamed = torch.load(out, weights_only=True)
    for name, tensor in _saved(tiny_checkpoint).items():
        assert name in streamed, name
        assert torch.equal(streamed[name], tensor), name
