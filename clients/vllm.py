"""A chat client on an offline vLLM engine: any checkpoint vLLM serves (a VLM for images and text, any causal LM for
text), prompts rendered with the checkpoint's own chat template. ``vllm`` is imported when the client is built, so
the rest of the package works where it is not installed.

On CPU the client always gives vLLM a fixed KV cache (``kv_cache_gib``, default 1 GiB there, ``kv_cache_args``):
vLLM's CPU backend otherwise sizes it as ``gpu_memory_utilization`` x the NUMA node's memory and refuses to start
when other processes already hold part of it.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from typing import Any

from transformers import AutoProcessor

from clients.base import ChatClient, ChatRequest, chat_messages

log = logging.getLogger(__name__)


def on_cpu() -> bool:
    """Whether vLLM runs on its CPU backend here."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def kv_cache_args(
    kv_cache_gib: float | None, engine_kwargs: dict[str, Any] | None = None, cpu_default_gib: float = 1.0
) -> dict[str, int]:
    """``vllm.LLM``'s ``kv_cache_memory_bytes`` for a client: ``kv_cache_gib`` when given; else, on vLLM's CPU
    backend, ``cpu_default_gib`` (logged), unless ``engine_kwargs`` or ``VLLM_CPU_KVCACHE_SPACE`` already size it;
    else nothing (on GPU vLLM sizes it from ``gpu_memory_utilization``)."""
    given = "kv_cache_memory_bytes" in (engine_kwargs or {})
    if kv_cache_gib is not None:
        if given:
            raise ValueError("give the KV cache size once: kv_cache_gib or engine_kwargs.kv_cache_memory_bytes")
        return {"kv_cache_memory_bytes": int(kv_cache_gib * 2**30)}
    if given or os.environ.get("VLLM_CPU_KVCACHE_SPACE") or not on_cpu():
        return {}
    log.info("vLLM on CPU: KV cache fixed at %g GiB (set kv_cache_gib to change it)", cpu_default_gib)
    return {"kv_cache_memory_bytes": int(cpu_default_gib * 2**30)}


class VLLMChatClient(ChatClient):
    """Args (and ``ChatClient``'s sampling settings):
    model: checkpoint folder or hub id.
    seed: makes sampling reproducible (one seed per request, drawn from a stream seeded with it).
    gpu_memory_utilization, max_model_len, dtype ("auto": the checkpoint's), enforce_eager, tensor_parallel_size
        (this client only generates, so any size works), max_images_per_prompt: as in ``vllm.LLM``.
    kv_cache_gib: a fixed KV cache size in GiB instead of one derived from ``gpu_memory_utilization`` (None: derived
        on GPU, ``CPU_KV_CACHE_GIB`` on CPU; vLLM's own ``VLLM_CPU_KVCACHE_SPACE``, when set, overrides both).
    engine_kwargs: any other ``vllm.LLM`` argument.
    """

    CPU_KV_CACHE_GIB = 1.0

    def __init__(
        self,
        model: str,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        system_prompt: str | None = None,
        keep_reasoning: bool = False,
        seed: int = 0,
        gpu_memory_utilization: float = 0.85,
        kv_cache_gib: float | None = None,
        max_model_len: int | None = None,
        dtype: str = "auto",
        enforce_eager: bool = False,
        tensor_parallel_size: int = 1,
        max_images_per_prompt: int = 1,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(max_new_tokens, temperature, top_p, top_k, system_prompt, keep_reasoning)
        if tensor_parallel_size == 1:  # in-process engine (what the CPU build runs best); TP needs worker processes
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        # a VLM's processor renders image placeholders; for a text-only LLM AutoProcessor returns its tokenizer
        self.renderer = AutoProcessor.from_pretrained(model)
        self.seed = seed
        self._seeds = random.Random(seed)
        self.engine_args = dict(
            model=model,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            dtype=dtype,
            enforce_eager=enforce_eager,
            tensor_parallel_size=tensor_parallel_size,
            limit_mm_per_prompt={"image": max_images_per_prompt},
        )
        self.engine_args.update(engine_kwargs or {})
        self.engine_args.update(kv_cache_args(kv_cache_gib, engine_kwargs, self.CPU_KV_CACHE_GIB))
        log.info("starting vLLM on %s", model)
        self.llm = LLM(**self.engine_args)

    def sampling_params(self) -> Any:
        """One request's ``vllm.SamplingParams``, with the next seed of the client's stream."""
        from vllm import SamplingParams

        greedy = self.temperature <= 0
        return SamplingParams(
            n=1,
            temperature=0.0 if greedy else self.temperature,
            top_p=1.0 if greedy else self.top_p,
            top_k=0 if greedy or self.top_k <= 0 else self.top_k,
            max_tokens=self.max_new_tokens,
            seed=self._seeds.randrange(2**31),
        )

    def chat(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        if not requests:
            return []
        # one seed per request from a seeded stream: reproducible, and no two requests share a random stream
        params = [self.sampling_params() for _ in requests]
        prompts = []
        for r in requests:
            text = self.renderer.apply_chat_template(chat_messages(r), add_generation_prompt=True, tokenize=False)
            prompts.append({"prompt": text, **({"multi_modal_data": {"image": list(r.images)}} if r.images else {})})
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [self.finish(out.outputs[0].text, p["prompt"]) for out, p in zip(outputs, prompts)]

    def close(self) -> None:
        del self.llm
