"""The policy's weights under transformers' parameter names, streamed one tensor at a time, for an engine to load.

Used by the vLLM engine's weight sync. Nothing here copies the whole model: each yielded tensor is the live parameter
(a view), or one gathered parameter when the policy is sharded, or one merged weight for LoRA layers pushed as
dense weights.

- FSDP2 / ``DTensor`` parameters are gathered one parameter at a time (``full_tensor()``, a collective: every rank
  streams, in the same order). FSDP1 is not supported (``lightning_modules.preflight`` refuses its strategy).
- Wrapper prefixes (activation checkpointing, compile, peft) are removed, so names are those of the plain
  transformers model's ``state_dict`` (``model.language_model.*``, ``model.visual.*``, ``lm_head.*``), which vLLM's
  loader maps.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import torch
from torch import nn

_WRAPPERS = re.compile(r"(_fsdp_wrapped_module\.|_checkpoint_wrapped_module\.|_orig_mod\.)")


def checkpoint_name(name: str) -> str:
    """A parameter's name in the plain transformers model: wrapper and peft prefixes and ``.base_layer`` removed."""
    name = _WRAPPERS.sub("", name)
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".")


def is_peft(model: nn.Module) -> bool:
    """Whether ``model`` is a peft model (LoRA adapters wrapped around the base model)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` is an FSDP2 root (``fully_shard`` applied to it)."""
    return hasattr(model, "_get_fsdp_state") and hasattr(model, "unshard")


def unshard_root(model: nn.Module) -> None:
    """All-gather an FSDP2 root's own parameters (``model.unshard()``) for work that does not go through its
    ``forward``. On GPUs, FSDP's all-gather streams are first ordered after the work queued so far (the optimizer
    step): FSDP does that in the root's pre-forward hook, which such work never runs. FSDP has no public call for
    this, hence its private communication context."""
    comm = getattr(model._get_fsdp_state(), "_comm_ctx", None)
    if torch.cuda.is_available() and comm is not None and hasattr(comm, "all_gather_stream"):
        current = torch.cuda.current_stream()
        comm.all_gather_copy_in_stream.wait_stream(current)
        comm.all_gather_stream.wait_stream(current)
    model.unshard()


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself, or the whole tensor of a sharded ``DTensor`` (a collective: every rank calls it)."""
    gather = getattr(t, "full_tensor", None)  # DTensor (FSDP2): gather this tensor only
    return gather() if gather is not None else t


def iter_named_weights(
    model: nn.Module, include: Callable[[str], bool] = lambda name: True, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(checkpoint_name, tensor)`` for every parameter whose checkpoint name passes ``include``, LoRA adapter
    parameters excluded. Tensors are detached and gathered one at a time when sharded. With ``dtype``, floating-point
    tensors are cast first, each rank its own shard, so the gather moves the engine's bytes (half of fp32 for a bf16
    engine) rather than the master weights'."""
    for name, param in model.named_parameters(remove_duplicate=False):  # tied weights under each name
        clean = checkpoint_name(name)
        if "lora_" not in clean and include(clean):
            tensor = param.detach()
            if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)  # a DTensor stays sharded: the cast is per shard
            yield clean, full_tensor(tensor)


def lora_layers(model: nn.Module) -> dict:
    """The layers with LoRA adapters, by the checkpoint name of the weight they adapt (``...q_proj.weight``)."""
    from peft.tuners.lora import LoraLayer

    return {
        checkpoint_name(name) + ".weight": module
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
    }


def merged_lora_weights(model: nn.Module, include: Callable[[str], bool]) -> Iterator[tuple[str, torch.Tensor]]:
    """Weights of the layers that pass ``include``, with the active LoRA adapters merged into them
    (``W + scale * B @ A``), computed one layer at a time, out of place (the policy's base weights are not touched);
    parameters without LoRA are yielded as they are."""
    layers = lora_layers(model)
    for name, tensor in iter_named_weights(model, include):
        layer = layers.get(name)
        if layer is None:
            yield name, tensor
            continue
        delta = sum(full_tensor(layer.get_delta_weight(a)) for a in layer.active_adapters if a in layer.lora_A)
        yield name, (tensor + delta.to(tensor.dtype)) if torch.is_tensor(delta) else tensor
