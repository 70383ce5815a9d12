"""``vlrl plan``: will this run fit the GPUs, before anything loads? Memory per GPU, by phase, from the run's own
configuration (the same ``-c`` files and ``--key=value`` overrides as ``vlrl fit``) and the model's shapes, which come
from a local ``config.json``, from the released checkpoints vlrl knows (``KNOWN``: Qwen2.5-VL 3B and 7B, Qwen2-VL 7B,
Qwen3-VL 4B and 8B; no network), or, for a
folder a shipped recipe exports (the PTST recipe starts from the cold start's export), from that recipe's own start.

    vlrl plan -c configs/visionary_r1.yaml --gpus 1 --gpu-memory-gib 79.6          # exit 1: does not fit
    vlrl plan -c configs/visionary_r1.yaml -c configs/memory/adamw_8bit.yaml --gpus 1

Phases, per GPU (``tools.memory`` has the byte counts of each tensor, the formulas and what they leave out):

- ``fixed``: fp32 parameters, optimizer state, the frozen reference, the CUDA context, and vLLM asleep (or awake
  throughout without sleep mode);
- ``rollout``: fixed + vLLM's ``gpu_memory_utilization`` share of the GPU while it generates (the HF engine: its KV
  cache on the policy);
- ``update``: fixed + gradients + FSDP's gathered units + one micro-batch's activations (+ DDP's gradient buckets);
- ``optimizer step``: fixed + gradients + the step's temporary (``adamw``: torch's foreach step holds a second copy of
  the second moments; ``adamw_fused`` and ``adamw_8bit``: none worth counting).

The peak is the largest phase plus the allocator's slack (``ALLOCATOR_SLACK`` of it: fragmentation and cached blocks).
A run fits when its peak is at most the GPU's memory. ``vlrl fit`` runs the same check on GPUs, with the device's
real memory and the run's real world size, before the model loads (``VLRL_MEMORY_PLAN=off`` skips it;
``tools.plan_cli`` is the command, ``tools.lightning_cli`` the check).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rollout.engine import StepShape
from tools import tiny_model
from tools.memory import GIB, Workload, activation_bytes, head_dim, parameter_shapes, state_bytes, text_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
H100_GIB = 79.1  # torch's total_memory of an H100 80GB, about (nvidia-smi says 79.6 GiB); vlrl fit uses the device's
CUDA_CONTEXT_GIB = 0.6  # CUDA context and NCCL's buffers: an allowance, not measured here
VLLM_ACTIVATIONS_GIB = 1.0  # vLLM's own activations and sampler buffers inside its share: an allowance
VLLM_ASLEEP_GIB = 1.0  # what a sleeping vLLM keeps (CUDA graphs, its context): an allowance, not measured here
ALLOCATOR_SLACK = 0.05  # the caching allocator's fragmentation, as a share of the peak: an allowance
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
KNOWN = {  # released checkpoints the recipes name -> tools.tiny_model's shapes (config.json of the release)
    "Qwen/Qwen2.5-VL-3B-Instruct": ("qwen2_5_vl", "3b"),
    "Qwen/Qwen2.5-VL-7B-Instruct": ("qwen2_5_vl", "7b"),
    "Qwen/Qwen2-VL-7B-Instruct": ("qwen2_vl", "7b"),
    "Qwen/Qwen3-VL-4B-Instruct": ("qwen3_vl", "4b"),
    "Qwen/Qwen3-VL-8B-Instruct": ("qwen3_vl", "8b"),
}
# what the planner suggests, alone or together, when a run does not fit
OVERLAYS = ("configs/memory/adamw_8bit.yaml", "configs/strategy/fsdp.yaml", "configs/lora.yaml")


class PlanError(ValueError):
    """The plan cannot be made from this configuration (named in the message)."""


@dataclass
class Plan:
    phases: dict[str, int]  # bytes per GPU
    gpus: int
    gpu_bytes: int
    model: str  # where the shapes came from
    notes: list[str] = field(default_factory=list)
    kv_short: bool = False  # vLLM's share cannot hold one step's sequences (see ``kv_cache_shortfall``)

    @property
    def peak(self) -> int:
        return int(max(self.phases.values()) * (1 + ALLOCATOR_SLACK))

    @property
    def fits(self) -> bool:
        return self.peak <= self.gpu_bytes and not self.kv_short

    def report(self) -> str:
        lines = [f"model: {self.model}", f"per GPU, {self.gpus} GPU(s) of {self.gpu_bytes / GIB:.1f} GiB:"]
        lines += [f"  {name:<26} {value / GIB:7.1f} GiB" for name, value in self.phases.items()]
        lines.append(
            f"  {'peak':<26} {self.peak / GIB:7.1f} GiB (largest phase + {ALLOCATOR_SLACK:.0%} allocator slack)"
        )
        lines += [f"  note: {note}" for note in self.notes]
        over = f"{(self.peak - self.gpu_bytes) / GIB:.1f} GiB over" if self.peak > self.gpu_bytes else "KV cache short"
        lines.append("fits" if self.fits else f"does NOT fit: {over}")
        return "\n".join(lines)


# -- the model's shapes ---------------------------------------------------------------------------------------------
def model_shapes(path: str) -> tuple[dict, str]:
    """The ``config.json`` dict of ``path`` and where it came from (see the module docstring)."""
    local = Path(path)
    if (local / "config.json").is_file():
        return json.loads((local / "config.json").read_text()), f"{local / 'config.json'}"
    if path in KNOWN:
        return tiny_model.model_config(*KNOWN[path]).to_dict(), f"{path} (known shapes)"
    for recipe in sorted(CONFIGS.glob("*.yaml")):
        init = (yaml.safe_load(recipe.read_text()).get("model") or {}).get("init_args") or {}
        if init.get("export_dir") and Path(init["export_dir"]) == local:
            shapes, source = model_shapes(init["policy"]["model_name_or_path"])
            return shapes, f"{path}, exported by {recipe.relative_to(ROOT)} from {source}"
    raise PlanError(
        f"cannot tell the model's shapes: {path!r} has no config.json, is not a checkpoint vlrl knows "
        f"({', '.join(KNOWN)}), and no recipe in configs/ exports it (vlrl fit then starts without the memory check)"
    )


# -- the run's settings ---------------------------------------------------------------------------------------------
def _args(section: dict | None) -> dict:
    return dict((section or {}).get("init_args") or {})


def _data(cfg: dict) -> dict:
    """The datamodule's settings that size a step, one flat mapping: its argument groups' fields (``prompts`` or
    ``examples``, and ``loader``: ``datamodules.config``)."""
    data = _args(cfg["data"])
    flat = {**(data.get("prompts") or {}), **(data.get("examples") or {}), **(data.get("loader") or {})}
    if "image_size" in data and flat.get("max_pixels") is None:  # SyntheticVQADataModule: image_size^2 when unset
        flat["max_pixels"] = data["image_size"] ** 2
    return flat


def image_factor(model_config: dict) -> int:
    """The side in pixels of one image token: the vision patch times the spatial merge."""
    v = model_config["vision_config"]
    return int(v.get("patch_size", 14)) * int(v.get("spatial_merge_size", 2))


def workloads(cfg: dict, factor: int = 28) -> list[Workload]:
    """One workload per rollout stage (GRPO) or one (SFT), from a parsed ``vlrl fit`` configuration; an image
    token covers ``factor`` x ``factor`` pixels (28, or 32 for Qwen3-VL)."""
    model, data = _args(cfg["model"]), _data(cfg)
    policy = model["policy"]
    checkpointing, chunk = bool(policy.get("gradient_checkpointing")), 1024
    pixels = data.get("max_pixels") or 28 * 28 * 1280  # the processors' default bound
    if "rollout" not in model:  # SFT: a micro-batch of full-length rows, every token after the image labelled
        length = data.get("max_length", 4096)
        image = min(length, pixels // (factor * factor))
        rows, chunk = data.get("batch_size", 1), model.get("logps_chunk_size", chunk)
        return [Workload("sft", image, image, length - image, 1, rows, checkpointing, chunk, None)]
    engine = model.get("engine") or {"class_path": "rollout.hf.HFEngine"}
    vllm = _args(engine).get("gpu_memory_utilization")  # an engine with its own share of the GPU (vLLM)
    update, rollout = model.get("update") or {}, model.get("rollout") or {}
    stages = model.get("rollout_stages") or [
        {"max_new_tokens": rollout.get("max_new_tokens", 256), "group_size": rollout.get("group_size", 8)}
    ]
    prompt = data.get("max_prompt_length") or 4096
    return [
        Workload(
            f"stage {i + 1}" if len(stages) > 1 else "grpo",
            prompt,
            min(prompt, pixels // (factor * factor)),
            stage["max_new_tokens"],
            stage["group_size"],
            update.get("micro_batch_size", 8),
            checkpointing,
            update.get("logps_chunk_size", chunk),
            vllm,
        )
        for i, stage in enumerate(stages)
    ]


def _frozen(policy: dict):
    vision, embeddings = policy.get("freeze_vision_tower"), policy.get("freeze_embeddings")

    def frozen(name: str) -> bool:
        return bool(vision and ".visual." in name) or bool(
            embeddings and (name.endswith("embed_tokens.weight") or name.startswith("lm_head"))
        )

    return frozen


def plan(cfg: dict, gpus: int, gpu_bytes: int, model_config: dict | None = None, source: str = "") -> Plan:
    """The memory plan of a parsed ``vlrl fit`` configuration (``cfg``, a plain dict) on ``gpus`` GPUs of
    ``gpu_bytes`` each. ``model_config`` overrides the shapes looked up from the policy's checkpoint."""
    model = _args(cfg["model"])
    policy, optimizer = model["policy"], (model.get("optim") or {}).get("optimizer", "adamw")
    if model_config is None:
        model_config, source = model_shapes(policy["model_name_or_path"])
    strategy = (cfg.get("trainer") or {}).get("strategy") or ""
    sharded = "FSDP2Strategy" in str(strategy.get("class_path", "") if isinstance(strategy, dict) else strategy)
    lora = policy.get("lora")
    rank = lora.get("r", 16) if isinstance(lora, dict) else None
    s = state_bytes(model_config, gpus if sharded else 1, rank, frozen=_frozen(policy))
    scale = DTYPE_BYTES[policy.get("dtype") or "float32"] / 4  # tools.memory counts fp32 weights and state
    params, grads = int(s["params"] * scale), int(s["grads"] * scale)
    adam = int(s["adam"] * scale) // (4 if optimizer == "adamw_8bit" else 1)
    beta = _args(model.get("loss")).get("beta", 0.04)  # GRPOModule builds no reference when beta is 0
    reference = 0 if "rollout" not in model or not beta else s["reference"] // 2  # elements (tools.memory: bf16)
    reference *= DTYPE_BYTES[policy.get("reference_dtype") or policy.get("dtype") or "float32"]
    fixed = params + adam + reference + int(CUDA_CONTEXT_GIB * GIB)
    ddp = 0 if sharded or gpus == 1 else grads  # DDP's gradient buckets beside the gradients
    temporary = adam // 2 if optimizer == "adamw" else 0  # foreach: a copy of the second moments
    # unsharded under bf16-mixed, autocast keeps a bf16 copy of every weight it casts for the whole training step
    # (FSDP2 instead gathers bf16 units one at a time: tools.memory's ``gathered``)
    casts = s["gathered"] if sharded else 2 * s["numel"]
    phases: dict[str, int] = {"fixed": fixed}
    for w in workloads(cfg, image_factor(model_config)):
        awake, asleep = _engine_bytes(cfg, model_config, w, gpu_bytes)
        phases["fixed"] = max(phases["fixed"], fixed + asleep)
        a = activation_bytes(model_config, w, rank)
        suffix = "" if w.name in ("grpo", "sft") else f" ({w.name})"
        if w.name != "sft":
            phases["rollout" + suffix] = fixed + awake
        dynamic = grads + casts + a["layers"] + a["lm_head"] + a["chunk"] + ddp
        phases["update" + suffix] = fixed + asleep + dynamic
        phases["optimizer step" + suffix] = fixed + asleep + grads + temporary + ddp
    notes = [] if sharded or gpus == 1 else [f"no FSDP: DDP keeps a full replica on each of the {gpus} GPUs"]
    shortfall = kv_cache_shortfall(cfg, model_config, gpu_bytes)
    if shortfall:
        notes.append(shortfall)
    return Plan(phases, gpus, gpu_bytes, source, notes, kv_short=bool(shortfall))


def kv_cache_shortfall(cfg: dict, model_config: dict, gpu_bytes: int) -> str | None:
    """Why vLLM's share cannot hold one step's sequences (the engine's start-up check, ``rollout.vllm``), or None:
    the share less the engine's bf16 weights and ``VLLM_ACTIVATIONS_GIB`` must hold every stage's
    ``batch_size x G x (P + C)`` tokens of K and V."""
    t = text_config(model_config)
    per_token = 2 * 2 * t["num_hidden_layers"] * t["num_key_value_heads"] * head_dim(t)  # K and V in bf16
    weights = 2 * sum(math.prod(shape) for shape in parameter_shapes(model_config).values())
    prompts = _data(cfg).get("batch_size") or 1
    engine = _args(_args(cfg["model"]).get("engine"))
    for w in workloads(cfg, image_factor(model_config)):
        if w.vllm_gpu_memory_utilization is None:
            continue
        kv_gib = engine.get("kv_cache_gib")
        if kv_gib is not None:
            cache = int(kv_gib * GIB)
        else:
            cache = int(w.vllm_gpu_memory_utilization * gpu_bytes) - weights - int(VLLM_ACTIVATIONS_GIB * GIB)
        tokens = StepShape(prompts, w.group_size, w.prompt_tokens, w.completion_tokens).tokens(
            shared_prompt=engine.get("enable_prefix_caching", True)
        )
        need = tokens * per_token
        if cache < need:
            return (
                f"vLLM's KV cache ({max(cache, 0) / GIB:.1f} GiB) cannot hold one step of {w.name} "
                f"({tokens:,} tokens = {need / GIB:.1f} GiB): raise the engine's gpu_memory_utilization"
            )
    return None


def _engine_bytes(cfg: dict, model_config: dict, w: Workload, gpu_bytes: int) -> tuple[int, int]:
    """(while generating, while the policy trains) bytes of the rollout engine on each GPU."""
    model = _args(cfg["model"])
    engine = model.get("engine") or {"class_path": "rollout.hf.HFEngine"}
    if w.vllm_gpu_memory_utilization is None:  # the HF engine: the policy itself, plus its KV cache
        t = text_config(model_config)
        rows = (_data(cfg).get("batch_size") or 1) * w.group_size
        kv = 2 * 2 * t["num_hidden_layers"] * t["num_key_value_heads"] * head_dim(t)  # K and V, bf16, per token
        return rows * (w.prompt_tokens + w.completion_tokens) * kv, 0
    settings = _args(engine)
    if settings.get("kv_cache_gib") is not None:  # weights (bf16) + the fixed cache + an allowance for activations
        numel = sum(math.prod(shape) for shape in parameter_shapes(model_config).values())
        awake = 2 * numel + int((settings["kv_cache_gib"] + 1.0) * GIB)
    else:
        awake = int(w.vllm_gpu_memory_utilization * gpu_bytes)
    asleep = int(VLLM_ASLEEP_GIB * GIB) if settings.get("enable_sleep_mode") else awake
    return awake, asleep


# -- what fits instead ----------------------------------------------------------------------------------------------
def _merge(base: dict, overlay: dict) -> dict:
    """``overlay`` over ``base``, mappings merged key by key (how a later ``-c`` file applies over an earlier one)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _with(cfg: dict, overlay: str) -> dict:
    loaded = yaml.safe_load((ROOT / overlay).read_text())
    if "fsdp" in overlay:  # a strategy given on the command line is a class path; the overlay's replaces it whole
        cfg = {**cfg, "trainer": {**(cfg.get("trainer") or {}), "strategy": None}}
    return _merge(cfg, loaded)


def alternatives(cfg: dict, gpus: int, gpu_bytes: int, model_config: dict, source: str) -> list[tuple[str, Plan]]:
    """Overlays (alone, then in pairs) and GPU counts under which the run fits, cheapest change first: each as the
    arguments to add and its plan."""
    options: list[tuple[list[str], int]] = [([o], gpus) for o in OVERLAYS]
    options += [([a, b], gpus) for i, a in enumerate(OVERLAYS) for b in OVERLAYS[i + 1 :]]
    if gpus == 1:  # sharding over one GPU changes nothing
        options = [(overlays, n) for overlays, n in options if "configs/strategy/fsdp.yaml" not in overlays]
    options += [(["configs/strategy/fsdp.yaml"], n) for n in (2, 4, 8, 16) if n > gpus]
    options += [(["configs/strategy/fsdp.yaml", "configs/memory/adamw_8bit.yaml"], n) for n in (2, 4, 8) if n > gpus]
    found = []
    for overlays, n in options:
        candidate = cfg
        for overlay in overlays:
            candidate = _with(candidate, overlay)
        if n == gpus and any(_with(cfg, overlay) == cfg for overlay in overlays):
            continue  # an overlay the run already has
        result = plan(candidate, n, gpu_bytes, model_config, source)
        if result.fits:
            args = " ".join(f"-c {o}" for o in overlays) + (f" on {n} GPUs" if n != gpus else "")
            found.append((args, result))
    return found


def check_fit(cfg: dict, gpus: int, gpu_bytes: int) -> Plan:
    """Raise ``MemoryError`` naming what fits when the run does not fit ``gpus`` GPUs of ``gpu_bytes``."""
    model_config, source = model_shapes(_args(cfg["model"])["policy"]["model_name_or_path"])
    result = plan(cfg, gpus, gpu_bytes, model_config, source)
    if not result.fits:
        fits = alternatives(cfg, gpus, gpu_bytes, model_config, source)
        advice = "; ".join(f"{args} (peak {p.peak / GIB:.1f} GiB)" for args, p in fits[:4]) or "nothing vlrl ships"
        raise MemoryError(f"{result.report()}\nwhat fits: {advice}. (VLRL_MEMORY_PLAN=off skips this check.)")
    return result
