"""The byte counts behind ``vlrl plan``: each tensor of a GRPO run on Qwen2.5-VL, per GPU, on paper.
Pure functions of a config.json dict (``hidden_size``, layers, heads, vocabulary ...) and a workload (a recipe's
lengths, G, micro-batch).

    vlrl bench memory                                   # 3B and 7B, full and LoRA, 1 / 8 / 16 GPUs, the GPU recipes
    vlrl bench memory --checkpoint DIR                  # a local checkpoint's config.json instead
    vlrl bench memory --sizes 3b --gpus 1 --prompt-tokens 1360 --image-tokens 1296 --completion-tokens 256 \
        --group-size 8 --micro-batch-size 8 --gradient-checkpointing --no-vllm   # one custom workload

What is counted (bytes per GPU, N GPUs, FSDP2 ``fully_shard`` on each decoder layer, each vision block, then the root;
``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``):

- parameters: fp32, every tensor sharded on dim 0 (each rank holds ceil(rows / N) rows, as FSDP2 pads);
- gradients: fp32, sharded, trainable parameters only (freed after the step: ``zero_grad(set_to_none=True)``);
- Adam: ``exp_avg`` and ``exp_avg_sq``, fp32, sharded, trainable only. ``torch.optim.AdamW``'s ``step`` counters
  (one fp32 scalar per trainable tensor) live in host memory unless fused/capturable: reported apart;
- reference: the frozen copy in bf16, sharded (full fine-tune); LoRA has none (the adapters are switched off);
- gathered (transient): the root unit (embeddings, LM head, final norm, patch embedding, merger) all-gathered in bf16
  for the whole forward and backward, two decoder-layer / vision-block units (the current one and the prefetched
  one) in bf16, and one unit's unsharded gradient in bf16 plus its fp32 copy for the reduce-scatter (6 bytes per
  trainable element; the root's at the end of the backward pass when it trains, whose LM-head gradient, computed
  first, waits in bf16 through the whole backward pass);
- activations of one micro-batch (below).

How these add up into phases (fixed, rollout, update, optimizer step), with vLLM's share, the optimizer's temporary,
autocast's weight copies and the allowances, and the peak of a run: ``tools.plan`` (``vlrl plan``).

Activations per micro-batch of ``m`` completions (rows) of ``U = ceil(m / G)`` prompts, P prompt tokens (image
included), C completion tokens, a prompt image of ``I`` merged tokens (``4 I`` patches), hidden h, MLP width f,
vision width d and MLP width f_v. Bytes per token per layer, from the tensors autograd keeps (transformers 5's
modeling_qwen2_5_vl, sdpa attention, bf16 compute; RMSNorm keeps its fp32 input; with a padding mask sdpa gets K and
V repeated to all heads):

    decoder layer  a_t = 20 h + 8 f          (LoRA r on q,k,v,o,gate,up,down: 34 h + 9 f; its dropout keeps copies)
    vision block   a_v = 26 d + 8 f_v        (per patch; LoRA on the language model only: the vision tower keeps none)

    without checkpointing: L T a_t + L_v V a_v + 8 h T     T = U P + m C tokens (prompt once, ``shared_prefix``)
                           + 4 m (2P + C) kv L             each completion's copy of its prompt's keys and values
    with checkpointing:    L T 2h + L_v V 2d + 8 h T       T = m (P + C) (no shared prefix under checkpointing),
                           + max(T a_t, V a_v) + 8 h T     one layer recomputed, and its input's and output's
                                                           fp32 gradients
                           + m (P + C)^2                   the boolean attention mask

with V = 4 U I vision patches and ``8 h T`` the embeddings and final norm. The LM head runs on completion positions
only, in chunks of ``logps_chunk_size`` (K): on GPUs the autograd path keeps each chunk's fp32 logits for the
backward pass, ``4 m C vocab`` bytes, and the backward pass of a chunk holds four more fp32 ``K x vocab`` tensors at
once (the gather's scattered gradient; logsumexp's ``self - result``, its ``exp`` and their product with the incoming
gradient), ``16 K vocab`` (more than the forward pass's bf16 logits and entropy temporaries). Measured on the tiny
model on CPU, by the profiler's memory timeline (``tests/tools/test_plan.py``). The CUDA context, vLLM's residue
while asleep and the allocator's fragmentation are ``tools.plan``'s allowances, unmeasured until a GPU runs
``bench/device_check.sh``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from datamodules.config import PromptConfig
from lightning_modules.config import PolicyConfig, UpdateConfig
from tools.tiny_model import qwen2_5_vl_config

GIB = 2**30
GPU_MEMORY_MIB = {"H100": 81559, "H200": 143771}  # nvidia-smi's total (vLLM's utilisation is a share of it)
LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RECIPES = ("configs/visionary_r1.yaml", "configs/grpo_baseline.yaml", "configs/vision_r1_ptst.yaml")


# -- the model's tensors -------------------------------------------------------------------------------------------
def text_config(config: dict) -> dict:
    """The language model's fields: nested under ``text_config`` (transformers 5) or at the top (hub 4.x files)."""
    return config["text_config"] if "text_config" in config else config


def tie_word_embeddings(config: dict) -> bool:
    for where in (config, text_config(config)):
        if "tie_word_embeddings" in where:
            return bool(where["tie_word_embeddings"])
    raise KeyError("config has no tie_word_embeddings (3B: true, 7B: false)")


def head_dim(text: dict) -> int:
    return text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]  # Qwen2.5 omits it


def _linear(name: str, rows: int, cols: int, bias: bool) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (rows, cols), **({f"{name}.bias": (rows,)} if bias else {})}


def parameter_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every parameter of the model, named as ``named_parameters()`` names it (a tied LM head is the embedding,
    listed once): written out for Qwen2.5-VL, built on the meta device for the other families."""
    if config.get("model_type", "qwen2_5_vl") != "qwen2_5_vl":
        return dict(_meta_shapes(json.dumps(config, sort_keys=True)))
    t, v = text_config(config), config["vision_config"]
    h, f, vocab, hd = t["hidden_size"], t["intermediate_size"], t["vocab_size"], head_dim(t)
    q, kv = t["num_attention_heads"] * hd, t["num_key_value_heads"] * hd
    d, fv, wide = v["hidden_size"], v["intermediate_size"], v["hidden_size"] * v["spatial_merge_size"] ** 2
    channels = v["in_channels"] if "in_channels" in v else v["in_chans"]  # transformers 5 / hub 4.x spelling
    patch = (d, channels, v["temporal_patch_size"], v["patch_size"], v["patch_size"])
    shapes: dict[str, tuple[int, ...]] = {"model.visual.patch_embed.proj.weight": patch}
    for i in range(v["depth"]):
        p = f"model.visual.blocks.{i}."
        shapes.update({p + "norm1.weight": (d,), p + "norm2.weight": (d,)})
        shapes.update(_linear(p + "attn.qkv", 3 * d, d, True) | _linear(p + "attn.proj", d, d, True))
        for name, rows, cols in (("gate_proj", fv, d), ("up_proj", fv, d), ("down_proj", d, fv)):
            shapes.update(_linear(f"{p}mlp.{name}", rows, cols, True))
    shapes["model.visual.merger.ln_q.weight"] = (d,)
    shapes.update(_linear("model.visual.merger.mlp.0", wide, wide, True))
    shapes.update(_linear("model.visual.merger.mlp.2", v["out_hidden_size"], wide, True))
    shapes["model.language_model.embed_tokens.weight"] = (vocab, h)
    for i in range(t["num_hidden_layers"]):
        p = f"model.language_model.layers.{i}."
        for name, rows, cols, bias in (
            ("q_proj", q, h, True),
            ("k_proj", kv, h, True),
            ("v_proj", kv, h, True),
            ("o_proj", h, q, False),
        ):
            shapes.update(_linear(f"{p}self_attn.{name}", rows, cols, bias))
        for name, rows, cols in (("gate_proj", f, h), ("up_proj", f, h), ("down_proj", h, f)):
            shapes.update(_linear(f"{p}mlp.{name}", rows, cols, False))
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,)})
    shapes["model.language_model.norm.weight"] = (h,)
    if not tie_word_embeddings(config):
        shapes["lm_head.weight"] = (vocab, h)
    return shapes


@functools.lru_cache(maxsize=8)
def _meta_shapes(config_json: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The model a config.json describes, built on the meta device (no memory), as (name, shape) pairs."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = json.loads(config_json)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(**config))
    return tuple((name, tuple(p.shape)) for name, p in model.named_parameters())


def lora_shapes(config: dict, rank: int) -> dict[str, tuple[int, ...]]:
    """The adapters ``LoRAConfig(r=rank)`` adds (peft: A [r, in], B [out, r], no bias) on the language model's
    attention and MLP projections, keyed by the projection's weight name."""
    shapes = {}
    for name, shape in parameter_shapes(config).items():
        if ".language_model.layers." in name and name.endswith(".weight") and name.split(".")[-2] in LORA_PROJECTIONS:
            (rows, cols), base = shape, name.removesuffix(".weight")
            shapes[base + ".lora_A.weight"], shapes[base + ".lora_B.weight"] = (rank, cols), (rows, rank)
    return shapes


def fsdp_unit(name: str) -> str:
    """The FSDP2 unit holding a parameter: its decoder layer, its vision block, or the root (the rest)."""
    parts = name.split(".")
    for key in ("layers", "blocks"):
        if key in parts:
            i = parts.index(key)
            return ".".join(parts[: i + 2])
    return "root"


def shard_numel(shape: tuple[int, ...], world_size: int) -> int:
    """Elements one rank holds of a tensor sharded on dim 0 (FSDP2 pads dim 0 to a multiple of the world size)."""
    return math.ceil(shape[0] / world_size) * math.prod(shape[1:])


def state_bytes(
    config: dict, world_size: int = 1, lora_rank: int | None = None, frozen: Callable[[str], bool] = lambda name: False
) -> dict[str, int]:
    """Parameters, gradients, Adam moments (+ ``adam_step``, host memory on GPUs), bf16 reference and the transient
    gathered units, per GPU. Trainable: everything but the ``frozen`` names (full fine-tune) or the LoRA adapters."""
    base = parameter_shapes(config)
    adapters = lora_shapes(config, lora_rank) if lora_rank else {}
    trainable = adapters if lora_rank else {name: shape for name, shape in base.items() if not frozen(name)}
    everything = {**base, **adapters}
    shard = sum(shard_numel(s, world_size) for s in everything.values())
    train_shard = sum(shard_numel(s, world_size) for s in trainable.values())
    units: dict[str, list[int]] = {}  # unit -> [all elements, trainable elements]
    for name, shape in everything.items():
        unit = units.setdefault(fsdp_unit(name), [0, 0])
        unit[0] += math.prod(shape)
        unit[1] += math.prod(shape) if name in trainable else 0
    root, blocks = units.pop("root"), list(units.values())
    largest = max(b[0] for b in blocks)
    head_name = "model.language_model.embed_tokens.weight" if tie_word_embeddings(config) else "lm_head.weight"
    head = math.prod(trainable[head_name]) if head_name in trainable else 0
    # root gathered + LM-head gradient (computed first, reduced last) + current and prefetched unit + one unit's grad
    during = 2 * root[0] + 2 * head + 2 * 2 * largest + 6 * max(b[1] for b in blocks)
    at_end = 2 * root[0] + 6 * root[1]  # the root's own gradient, reduced last
    return dict(
        params=4 * shard,
        grads=4 * train_shard,
        adam=8 * train_shard,
        adam_step=4 * len(trainable),
        reference=0 if lora_rank else 2 * sum(shard_numel(s, world_size) for s in base.values()),
        gathered=max(during, at_end),
        numel=sum(math.prod(s) for s in everything.values()),
        trainable_numel=sum(math.prod(s) for s in trainable.values()),
    )


# -- activations ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """One training setting's shapes: a recipe (one per rollout stage) or a benchmark."""

    name: str
    prompt_tokens: int  # P, image tokens included
    image_tokens: int  # I merged image tokens of the prompt's one image (4 I patches)
    completion_tokens: int  # C
    group_size: int  # G
    micro_batch_size: int  # m rows per forward/backward
    gradient_checkpointing: bool
    logps_chunk_size: int = 1024
    vllm_gpu_memory_utilization: float | None = 0.3  # None: no vLLM (HF engine)


def activation_bytes(config: dict, w: Workload, lora_rank: int | None = None) -> dict[str, int]:
    """One micro-batch's activations kept for the backward pass (the module docstring's formulas): ``layers`` (all
    decoder layers, vision blocks, embeddings; with checkpointing their inputs, one recomputed layer and the mask),
    ``lm_head`` (fp32 logits kept for the backward pass) and ``chunk`` (one LM-head chunk's backward pass)."""
    t, v = text_config(config), config["vision_config"]
    h, f, vocab, layers = t["hidden_size"], t["intermediate_size"], t["vocab_size"], t["num_hidden_layers"]
    kv = t["num_key_value_heads"] * head_dim(t)
    d = v.get("embed_dim") or v["hidden_size"]  # Qwen2-VL names the vision width embed_dim
    fv, depth = v.get("intermediate_size") or d * v["mlp_ratio"], v["depth"]
    m, p, c = w.micro_batch_size, w.prompt_tokens, w.completion_tokens
    prompts = math.ceil(m / w.group_size)
    patches = prompts * 4 * w.image_tokens
    per_token = 34 * h + 9 * f if lora_rank else 20 * h + 8 * f
    per_patch = 0 if lora_rank else 26 * d + 8 * fv  # a frozen vision tower keeps nothing for the backward pass
    if w.gradient_checkpointing:
        tokens = m * (p + c)
        kept = layers * tokens * 2 * h + (depth * patches * 2 * d if per_patch else 0) + 8 * h * tokens
        kept += max(tokens * per_token, patches * per_patch) + 8 * h * tokens + m * (p + c) ** 2
    else:
        tokens = prompts * p + m * c
        kept = layers * tokens * per_token + depth * patches * per_patch + 8 * h * tokens
        kept += 4 * m * (2 * p + c) * kv * layers
    return dict(layers=kept, lm_head=4 * m * c * vocab, chunk=16 * min(w.logps_chunk_size, m * c) * vocab)


# -- recipes -------------------------------------------------------------------------------------------------------
def _init_args(section: dict) -> dict[str, Any]:
    """A ``class_path``/``init_args`` section's arguments, the class's own defaults filled in (read from its
    signature, so a default that changes in the code changes here)."""
    module, name = section["class_path"].rsplit(".", 1)
    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **section.get("init_args", {})}


def _group(init_args: dict, name: str) -> dict[str, Any]:
    """A dataclass argument group of a module (``policy``, ``update``, the data's ``prompts``): the YAML's values over
    the group's defaults (the default instance in the module's signature)."""
    value = init_args[name]
    if is_dataclass(value):
        return asdict(value)
    cls = {"policy": PolicyConfig, "update": UpdateConfig, "prompts": PromptConfig}[name]
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}
    return {**defaults, **value}


def recipe_workloads(path: str | Path, patch_tokens: int = 28 * 28) -> list[Workload]:
    """One ``Workload`` per rollout stage of a recipe YAML: P = ``max_prompt_length``, an image at ``max_pixels``
    (``max_pixels / 28^2`` merged tokens, at most P), the rollout's G and lengths, the module's micro-batch,
    checkpointing and LM-head chunk, and the vLLM engine's ``gpu_memory_utilization`` (none for the HF engine)."""
    import yaml

    recipe = yaml.safe_load(Path(path).read_text())
    model, prompts = _init_args(recipe["model"]), _group(_init_args(recipe["data"]), "prompts")
    engine = model["engine"]
    vllm = _init_args(engine)["gpu_memory_utilization"] if engine["class_path"].endswith("VLLMEngine") else None
    rollout = model["rollout"]
    stages = model.get("rollout_stages") or [
        dict(max_new_tokens=rollout["max_new_tokens"], group_size=rollout["group_size"])
    ]
    prompt = prompts["max_prompt_length"]
    image = min(prompt, prompts["max_pixels"] // patch_tokens)
    name = Path(path).stem
    return [
        Workload(
            f"{name}" + (f" stage {i + 1}" if len(stages) > 1 else ""),
            prompt,
            image,
            s["max_new_tokens"],
            s["group_size"],
            _group(model, "update")["micro_batch_size"],
            _group(model, "policy")["gradient_checkpointing"],
            _group(model, "update")["logps_chunk_size"],
            vllm,
        )
        for i, s in enumerate(stages)
    ]


# -- the tables ----------------------------------------------------------------------------------------------------
def _gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def model_configs(sizes: list[str], checkpoint: str | None) -> dict[str, dict]:
    if checkpoint:
        return {Path(checkpoint).name: json.loads((Path(checkpoint) / "config.json").read_text())}
    return {size.upper(): qwen2_5_vl_config(size).to_dict() for size in sizes}


def tables(
    configs: dict[str, dict], workloads: list[Workload], gpus: list[int], lora_rank: int, gpu: str = "H100"
) -> str:
    """Markdown: per-GPU state for each model, mode and GPU count; then activations per micro-batch. The phases and
    the peak of a run are ``vlrl plan``'s (``tools.plan``), from the run's whole configuration."""
    gpu_mib = GPU_MEMORY_MIB[gpu]
    lines = ["| model | tuning | GPUs | params | grads | Adam | ref | gathered |", "|" + "---|" * 8]
    for label, config in configs.items():
        for rank in (None, lora_rank):
            for n in gpus:
                s = state_bytes(config, n, rank)
                tuning = f"LoRA r{rank}" if rank else "full"
                lines.append(
                    f"| {label} | {tuning} | {n} | {_gib(s['params'])} | {_gib(s['grads'])} | "
                    f"{_gib(s['adam'])} | {_gib(s['reference'])} | {_gib(s['gathered'])} |"
                )
    lines += [
        "",
        "| model | tuning | workload | P / image / C tokens | G | micro-batch | checkpointing | layers | "
        "LM-head logits | LM-head chunk | vLLM |",
        "|" + "---|" * 11,
    ]
    for label, config in configs.items():
        for rank in (None, lora_rank):
            for w in workloads:
                a = activation_bytes(config, w, rank)
                vllm = (
                    f"{w.vllm_gpu_memory_utilization} x {gpu} = {_gib(w.vllm_gpu_memory_utilization * gpu_mib * 2**20)}"
                    if w.vllm_gpu_memory_utilization
                    else "none"
                )
                lines.append(
                    f"| {label} | {f'LoRA r{rank}' if rank else 'full'} | {w.name} | {w.prompt_tokens} / "
                    f"{w.image_tokens} / {w.completion_tokens} | {w.group_size} | {w.micro_batch_size} | "
                    f"{'yes' if w.gradient_checkpointing else 'no'} | {_gib(a['layers'])} | "
                    f"{_gib(a['lm_head'])} | {_gib(a['chunk'])} | {vllm} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vlrl bench memory", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["3b", "7b"], choices=["tiny", "3b", "7b"])
    parser.add_argument("--checkpoint", help="a local checkpoint folder: use its config.json instead of --sizes")
    parser.add_argument("--gpus", nargs="+", type=int, default=[1, 8, 16])
    parser.add_argument("--lora-rank", type=int, default=16, help="LoRA rows (LoRAConfig's default r)")
    parser.add_argument("--gpu", default="H100", choices=sorted(GPU_MEMORY_MIB), help="for vLLM's share of the GPU")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    custom = parser.add_argument_group("one custom workload instead of the recipes (all of these)")
    custom.add_argument("--prompt-tokens", type=int)
    custom.add_argument("--image-tokens", type=int)
    custom.add_argument("--completion-tokens", type=int)
    custom.add_argument("--group-size", type=int)
    custom.add_argument("--micro-batch-size", type=int)
    custom.add_argument("--gradient-checkpointing", action="store_true")
    custom.add_argument("--logps-chunk-size", type=int, default=1024)
    custom.add_argument("--vllm-gpu-memory-utilization", type=float, default=None, help="default: no vLLM")
    args = parser.parse_args(argv)

    fields = (args.prompt_tokens, args.image_tokens, args.completion_tokens, args.group_size, args.micro_batch_size)
    if any(x is not None for x in fields):
        if any(x is None for x in fields):
            parser.error(
                "a custom workload needs --prompt-tokens, --image-tokens, --completion-tokens, "
                "--group-size and --micro-batch-size"
            )
        workloads = [
            Workload(
                "custom", *fields, args.gradient_checkpointing, args.logps_chunk_size, args.vllm_gpu_memory_utilization
            )
        ]
    else:
        workloads = [w for path in args.recipes for w in recipe_workloads(path)]
        # visionary_r1 and grpo_baseline share every shape: one column
        unique: dict[tuple, Workload] = {}
        for w in workloads:
            key = tuple(getattr(w, k) for k in Workload.__dataclass_fields__ if k != "name")
            unique[key] = Workload(f"{unique[key].name} & {w.name}", *key) if key in unique else w
        workloads = list(unique.values())
    print(tables(model_configs(args.sizes, args.checkpoint), workloads, args.gpus, args.lora_rank, args.gpu))


if __name__ == "__main__":
    main()
