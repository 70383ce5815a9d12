"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the policy and its frozen reference, under Lightning's
``ModelParallelStrategy`` (``configs/strategy/fsdp.yaml``).

Units: each decoder layer and each vision block (the model class's ``_no_split_modules``, ``models.families``), then
the root, which owns the rest (token embeddings, LM
head, final norm, patch embedding, merger). A unit's parameters are all-gathered just before its forward and freed
after it; gradients are reduce-scattered in its backward. Mixed precision: the sharded master weights stay fp32 and
the optimizer steps on them; compute runs on bf16 copies gathered for each unit; gradients are reduced in fp32 (the
recipes' ``precision: bf16-mixed``).

Our log-prob forwards (``lightning_modules.logprobs``) call the backbone's pieces directly (embeddings, vision tower,
language model, LM head) rather than the root's ``forward``, so FSDP's root hooks do not run: ``gathered_root``
all-gathers the root unit's own parameters around such a computation (its forward and backward), which is what
Lightning's FSDP1 strategy does for the whole training step. The root's gradients are reduce-scattered by FSDP's
end-of-backward callback, like every other unit's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from models.families import unit_classes
from rollout.weights import is_sharded, unshard_root


def mixed_precision_policy(precision: str | None):
    """FSDP2's mixed-precision policy for a Lightning precision flag: ``bf16-mixed`` gathers bf16 copies of the fp32
    master weights for compute and reduces gradients in fp32; otherwise None (compute in the weights' own dtype:
    ``32-true``, ``bf16-true``; Lightning's ``ModelParallelStrategy`` takes no other flag)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if str(precision) != "bf16-mixed":
        return None
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules that become their own FSDP units: every decoder layer and vision block, in forward order."""
    names = unit_classes(model)
    return [m for m in model.modules() if type(m).__name__ in names]


def shard_model(model: nn.Module, mesh, mp_policy=None) -> nn.Module:
    """``fully_shard`` each unit of ``shard_units`` then the root, over ``mesh`` (1-D, data parallel). In place."""
    from torch.distributed.fsdp import fully_shard

    units = shard_units(model)
    if not units:
        raise ValueError(
            f"{type(model).__name__} has no decoder layers or vision blocks to shard (its unit classes: "
            f"{', '.join(unit_classes(model)) or 'none declared'})"
        )
    kwargs = {"mesh": mesh} if mp_policy is None else {"mesh": mesh, "mp_policy": mp_policy}
    for unit in units:
        fully_shard(unit, **kwargs)
    fully_shard(model, **kwargs)
    # FSDP picks its root as the first unit to run forward; our forwards may start at a decoder layer, so the root
    # is fixed now (every unit already exists). FSDP has no public call for this.
    model._get_fsdp_state()._lazy_init()
    return model


@contextlib.contextmanager
def gathered_root(model: nn.Module) -> Iterator[nn.Module]:
    """All-gather the root unit's own parameters (embeddings, LM head, norms, patch embedding, merger) for a
    computation that does not go through the root's ``forward``; freed on exit. Put the backward inside: FSDP
    reduce-scatters the root's gradients at the end of the backward pass. A no-op for an unsharded model."""
    if not is_sharded(model):
        yield model
        return
    unshard_root(model)
    try:
        yield model
    finally:
        model.reshard()


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on the CPU under its own parameter names: gathered from the shards (a collective:
    every rank calls it; rank 0 receives the tensors, the others an empty dict), or the model's own for an
    unsharded model."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` as plain FSDP2: every process in the one data-parallel (sharding)
    dimension, no tensor parallelism, whatever ``trainer.devices`` and ``trainer.num_nodes`` are; the modules shard
    themselves in ``configure_model`` (``shard_model``).

    Checkpoints hold full tensors by default (``save_distributed_checkpoint=False``: gathered to rank 0, on the CPU),
    so a run resumes on any number of processes, one included, and ``vlrl export`` reads them.
    ``save_distributed_checkpoint=True`` writes one shard per rank instead (a folder; no full copy on rank 0, for
    models whose optimizer state does not fit one host's memory).
    """

    def __init__(self, save_distributed_checkpoint: bool = False, **kwargs) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            **kwargs,
        )

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes  # the world: shard over every process
        super().setup_environment()
