"""The policy's weights under transformers' parameter names, streamed one tensor at a time, for an engine to load.

Used by the vLLM engine's weight sync. Nothing here copies the whole model: each yielded tensor is the live parameter
(a view), or one gathered parameter when the policy is sharded, or one merged weight for LoRA layers pushed as
dense weights.

- FSDP2 / ``DTensor`` parameters are gathered one parameter at a time (``full_tensor()``).
- FSDP1 (``FullyShardedDataParallel``) units are unsharded one unit at a time (``summon_full_params(recurse=False)``),
  so at most one unit's full weights exist beside the shards.
- Wrapper prefixes (FSDP, activation checkpointing, peft) are removed, so names are those of the plain transformers
  model's ``state_dict`` (``model.language_model.*``, ``model.visual.*``, ``lm_head.*``), which vLLM's loader maps.
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


def _full(t: torch.Tensor) -> torch.Tensor:
    full_tensor = getattr(t, "full_tensor", None)  # DTensor (FSDP2): gather this parameter only
    return full_tensor() if full_tensor is not None else t


def _fsdp1_units(model: nn.Module) -> list[nn.Module]:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    except ImportError:  # pragma: no cover - torch without distributed
        return []
    return [m for m in model.modules() if isinstance(m, FSDP)]


def iter_named_weights(
    model: nn.Module, include: Callable[[str], bool] = lambda name: True
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(checkpoint_name, tensor)`` for every parameter whose checkpoint name passes ``include``, LoRA adapter
    parameters excluded. Tensors are detached and unsharded one at a time (one FSDP1 unit at a time)."""
    units = _fsdp1_units(model)
    if not units:
        for name, param in model.named_parameters(remove_duplicate=False):  # tied weights under each name
            clean = checkpoint_name(name)
            if "lora_" not in clean and include(clean):
                yield clean, _full(param.detach())
        return
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    for unit in units:  # outermost first; each unit owns the parameters not inside a nested unit
        inner = [sub for sub in unit.modules() if sub is not unit and isinstance(sub, FSDP)]
        nested = {id(p) for sub in inner for p in sub.parameters()}
        with FSDP.summon_full_params(unit, recurse=False, writeback=False):
            prefix = _unit_prefix(model, unit)
            for name, param in unit.named_parameters():
                if id(param) in nested:
                    continue
                clean = checkpoint_name(prefix + name)
                if "lora_" not in clean and include(clean):
                    yield clean, param.detach()


def _unit_prefix(model: nn.Module, unit: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is unit:
            return f"{name}." if name else ""
    raise ValueError("FSDP unit not found in the model")


def merged_lora_weights(model: nn.Module, include: Callable[[str], bool]) -> Iterator[tuple[str, torch.Tensor]]:
    """Weights of the layers that pass ``include``, with the active LoRA adapters merged into them
    (``W + scale * B @ A``), computed one layer at a time; parameters without LoRA are yielded as they are."""
    from peft.tuners.lora import LoraLayer

    lora_layers = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            lora_layers[checkpoint_name(name) + ".weight"] = module
    for name, tensor in iter_named_weights(model, include):
        layer = lora_layers.get(name)
        if layer is None:
            yield name, tensor
            continue
        delta = sum(layer.get_delta_weight(a) for a in layer.active_adapters if a in layer.lora_A)
        yield name, (tensor + delta.to(tensor.dtype)) if torch.is_tensor(delta) else tensor
