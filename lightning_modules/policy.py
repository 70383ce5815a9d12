"""Loading the policy (any family of models.families; full fine-tune or LoRA) and its frozen reference.

- Full fine-tune: the reference is a frozen copy (eval, no grad). It is held by ``FrozenReference``, a plain object,
  so Lightning does not register it as a submodule: it is not an optimizer parameter and not in checkpoints.
- LoRA: the reference is the same weights with the adapters disabled (``reference_context``): no second copy.
  vLLM applies LoRA to the language model only, so ``LoRAConfig.vision`` defaults to False.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoProcessor

from datamodules.model_path import require_model
from lightning_modules.run_state import resolve_log_dir
from lightning_modules.sharding import full_state_dict, is_sharded
from models.families import Family, family, family_of
from rollout.weights import is_peft

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoRAConfig:
    """LoRA settings (peft ``LoraConfig``). ``target_modules``: a regex over module names; the default covers the
    language model's attention and MLP projections, and ``vision=True`` adds the vision blocks' (named per family,
    ``models.families``)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | None = None
    vision: bool = False
    extra: dict = field(default_factory=dict)

    def to_peft(self, family: Family):
        from peft import LoraConfig

        target = self.target_modules or family.lora_targets(self.vision)
        return LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=target, bias="none", **self.extra
        )


_WARNED: set[str] = set()


def flash_attn_problem() -> str | None:
    """Why flash-attn 2 cannot be used here, or None when it can: transformers' own availability check (the package,
    its version, CUDA), then a real import of its kernels, which is where a binary built against another torch
    fails (an undefined symbol) although the package is installed."""
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        return "flash-attn is not installed, or CUDA is not available"
    try:
        from flash_attn import flash_attn_func, flash_attn_varlen_func  # noqa: F401 - the import is the check
    except Exception as e:  # noqa: BLE001 - ImportError, OSError: whatever a broken binary raises
        return f"flash-attn does not load ({type(e).__name__}: {e})"
    return None


def resolve_attn_implementation(name: str) -> str:
    """``auto``: flash_attention_2 when flash-attn really works here (``flash_attn_problem``), else sdpa. A broken
    flash-attn install falls back to sdpa with one warning line; asking for ``flash_attention_2`` by name on such an
    install is an error that names the cause."""
    if name not in ("auto", "flash_attention_2"):
        return name
    problem = flash_attn_problem()
    if problem is None:
        return "flash_attention_2"
    if name == "flash_attention_2":
        raise RuntimeError(f"attn_implementation=flash_attention_2, but {problem}; use auto or sdpa")
    if "does not load" in problem and problem not in _WARNED:  # installed but broken: one line; absence is usual
        _WARNED.add(problem)
        log.warning("attention: sdpa, because %s", problem)
    return "sdpa"


def load_policy(
    model_name_or_path: str,
    dtype: str = "bfloat16",
    attn_implementation: str = "sdpa",
    gradient_checkpointing: bool = False,
    freeze_vision_tower: bool = False,
    lora: LoRAConfig | dict | None = None,
    trust_remote_code: bool = False,
    freeze_embeddings: bool = False,
) -> nn.Module:
    """The trainable policy, in train mode. With ``lora`` only adapter weights require grad; ``freeze_vision_tower``
    keeps the vision encoder fixed, ``freeze_embeddings`` the token embeddings and the LM head (one matrix when
    tied). Adam moves every vocabulary row by about the learning rate whatever its gradient's size, so a trained
    head drifts the logits of the many tokens a policy never samples."""
    if isinstance(lora, dict):  # YAML may hand the dataclass over as a plain mapping
        lora = LoRAConfig(**lora)
    from transformers import AutoModelForImageTextToText

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    check_family(model_name_or_path, trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(
        require_model(model_name_or_path),
        dtype=DTYPES[dtype],
        attn_implementation=resolve_attn_implementation(attn_implementation),
        trust_remote_code=trust_remote_code,
    )
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora.to_peft(family_of(model)))
    if freeze_vision_tower:
        for name, param in model.named_parameters():
            if ".visual." in f".{name}":
                param.requires_grad_(False)
    if freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
        model.get_output_embeddings().weight.requires_grad_(False)
    model.train()
    return model


def check_family(model_name_or_path: str, trust_remote_code: bool = False) -> Family:
    """The checkpoint's family from its config alone (``models.families``), before any weight is read: a model
    vlrl does not train stops here with the supported families and what a new one needs. An adapter folder
    (``vlrl export --keep-lora``: ``adapter_config.json``, no ``config.json``) is checked by its base model."""
    from transformers import AutoConfig

    path = require_model(model_name_or_path)
    adapter = Path(path) / "adapter_config.json"
    if adapter.is_file() and not (Path(path) / "config.json").is_file():
        path = json.loads(adapter.read_text())["base_model_name_or_path"]
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    return family(getattr(config, "model_type", None), model_name_or_path)


class FrozenReference:
    """A frozen copy of the policy kept outside the module tree (not trained, not checkpointed).

    ``dtype`` stores the copy's parameters in another dtype than the policy's: the recipes keep fp32 master weights
    for the policy (an Adam step at lr 5e-7 rounds away in bf16) but a bf16 reference, which is never updated, at
    half the memory (the published recipes' reference models are bf16 too). Its matmuls then match the policy's
    under bf16 autocast; its norms and residual stream run in bf16 where the policy's run in fp32.
    """

    def __init__(self, policy: nn.Module, dtype: str | torch.dtype | None = None) -> None:
        memo = {}
        if dtype is not None:  # the copy's parameters are made in ``dtype`` directly: no transient full-size copy
            target = DTYPES[dtype] if isinstance(dtype, str) else dtype
            for p in policy.parameters():  # tied weights are one Parameter, so they stay one in the copy
                memo[id(p)] = nn.Parameter(p.detach().to(target), requires_grad=False)
        # buffers keep their dtype: the rotary inverse frequencies stay fp32 (rounded to bf16 they would shift the
        # angles by radians at a few thousand positions)
        self.model = copy.deepcopy(policy, memo).eval().requires_grad_(False)

    def to(self, device: torch.device | str) -> FrozenReference:
        self.model.to(device)
        return self


@contextlib.contextmanager
def reference_context(policy: nn.Module, reference: FrozenReference | None):
    """Yield the model that computes reference log-probs: the frozen copy, or the policy with adapters disabled."""
    if reference is not None:
        yield reference.model
    elif is_peft(policy):
        with policy.disable_adapter():
            yield policy
    else:
        raise RuntimeError("no reference: full fine-tuning with beta > 0 needs a FrozenReference")


def _cast_state(policy: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The policy's state dict with floating-point tensors cast to ``dtype`` on the CPU, one cast per storage so that
    tied weights (embedding = LM head) stay one tensor, and no second full copy lands on the GPU."""
    cast: dict[int, torch.Tensor] = {}
    state = {}
    for key, value in policy.state_dict().items():
        if value.is_floating_point():
            if value.data_ptr() not in cast:
                cast[value.data_ptr()] = value.to("cpu", dtype)
            value = cast[value.data_ptr()]
        state[key] = value
    return state


def _record_dtype(config: Path, dtype: str) -> None:
    """The weights' dtype in ``config.json`` (and its sub-configs), read by ``from_pretrained(dtype="auto")`` and
    vLLM's ``dtype="auto"``."""
    spec = json.loads(config.read_text())
    for part in [spec, *(v for v in spec.values() if isinstance(v, dict) and "model_type" in v)]:
        for key in ("torch_dtype", "dtype"):
            if key in part:
                part[key] = dtype
    config.write_text(json.dumps(spec, indent=2) + "\n")


def export_policy(
    policy: nn.Module, source: str, out_dir: str | Path, merge_lora: bool = True, dtype: str | None = None
) -> Path:
    """Write ``policy`` (LoRA merged unless ``merge_lora=False``) and the processor of ``source`` to ``out_dir`` as a
    ``save_pretrained`` folder that transformers and vLLM load.

    ``dtype`` (e.g. ``bfloat16``) writes the floating-point weights in that dtype and records it in the config, as
    published checkpoints are: training keeps fp32 master weights, which would double the export's size.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if is_peft(policy) and merge_lora:
        policy = copy.deepcopy(policy).merge_and_unload()
    if is_peft(policy):  # an adapter (--keep-lora): it names its base model, absolutely when that is a folder
        _point_adapter_at(policy, source)
    if dtype is None:
        policy.save_pretrained(out)
    else:
        if dtype not in DTYPES:
            raise ValueError(f"export dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        policy.save_pretrained(out, state_dict=_cast_state(policy, DTYPES[dtype]))
        if (out / "config.json").exists():
            _record_dtype(out / "config.json", dtype)
    AutoProcessor.from_pretrained(source).save_pretrained(out)
    return out


def _point_adapter_at(policy: nn.Module, source: str) -> None:
    """Record ``source`` as the adapter's base model, made absolute when it is a local folder: a relative path (as
    the run was configured, e.g. ``runs/demo/sft/export``) breaks once the adapter is moved or loaded from elsewhere.
    A hub id is kept as it is."""
    base = Path(source).expanduser()
    name = str(base.resolve()) if base.exists() else source
    for config in policy.peft_config.values():
        config.base_model_name_or_path = name


def export_at_end(module: Any, export_dir: str | None, dtype: str | None) -> Path | None:
    """A training module's model at the end of fit: ``export_dir`` (``"auto"``: ``<the run's log folder>/export``;
    None or empty: no export) in ``dtype``. A collective under FSDP: every rank calls it, rank 0 writes. Returns the
    folder (on every rank), or None."""
    if not export_dir:
        return None
    out = resolve_log_dir(module.trainer) / "export" if export_dir == "auto" else Path(export_dir)
    config = module.policy_config
    if is_sharded(module.policy):
        export_sharded(module.policy, config, out, write=module.trainer.is_global_zero, dtype=dtype)
    elif module.trainer.is_global_zero:
        export_policy(module.policy, config.model_name_or_path, out, dtype=dtype)
    return out


def export_sharded(
    policy: nn.Module, config: Any, out_dir: str | Path, write: bool, dtype: str | None = None
) -> Path | None:
    """``export_policy`` for an FSDP-sharded policy. A collective: every rank gathers the full weights (to rank 0's
    CPU), and the rank with ``write`` loads them into an unsharded CPU copy of the policy (``config``: the module's
    ``PolicyConfig``: ``model_name_or_path``, ``dtype``, ``lora``, ``trust_remote_code``) and exports that in
    ``dtype`` (default: the training dtype)."""
    state = full_state_dict(policy)
    if not write:
        return None
    plain = load_policy(
        config.model_name_or_path, dtype=config.dtype, lora=config.lora, trust_remote_code=config.trust_remote_code
    )
    plain.load_state_dict(state)
    return export_policy(plain, config.model_name_or_path, out_dir, dtype=dtype)
