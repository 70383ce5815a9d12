"""Where the cold-start pipeline's models run. One interface: ``chat(requests) -> [reply or None]``.

- ``VLLMBackend``: a local vLLM engine on any checkpoint vLLM serves (a VLM for the image stages, any causal LM for
  the text-only reasoning stage). Prompts are rendered with the checkpoint's own chat template.
- ``HFBackend``: transformers ``generate`` through the project's ``HFEngine`` (Qwen2.5-VL-style checkpoints; the CPU
  and test path).
- ``OpenAIBackend``: any OpenAI-compatible ``/chat/completions`` endpoint (vLLM's server, a hosted reasoning model);
  the key comes from the environment variable named by ``api_key_env``.

A reply is ``None`` when the backend failed for that request (HTTP error after retries); the pipeline counts it
and retries the row on the next run.

Reasoning models hand back their chain of thought in ways the filters would otherwise reject or lose, so every
backend returns it as one ``<think>reasoning</think> answer`` text:
- an OpenAI-compatible server with a reasoning parser (DeepSeek's API, ``vllm serve --reasoning-parser ...``) puts it
  in the message's ``reasoning_content`` / ``reasoning`` field beside ``content``: ``OpenAIBackend`` folds it back
  (``rollout.http_chat.reply_text``);
- the chat templates of DeepSeek-R1's distills and QwQ end the generation prompt with ``<think>\n``, so the
  generated text starts inside the block and only closes it: ``restore_think`` puts the opening tag back (local
  backends see the rendered prompt; over HTTP a ``</think>`` without an opening tag is the sign).
The upstream Vision-R1 repository (Osilly/Vision-R1) publishes the resulting dataset, not the generation code; how
it read DeepSeek-R1's reasoning is not public.

On CPU, ``VLLMBackend`` always gives vLLM a fixed KV cache (``kv_cache_gib``, default 1 GiB there): vLLM's CPU
backend otherwise sizes it as ``gpu_memory_utilization`` x the NUMA node's memory and refuses to start when other
processes already hold part of it.
"""

from __future__ import annotations

import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class ChatRequest:
    text: str  # the user turn
    images: list[Any] = field(default_factory=list)  # PIL images, shown before the text
    system: str | None = None


def chat_messages(request: ChatRequest, image_parts: bool = True) -> list[dict[str, Any]]:
    """Chat-template messages for ``request`` (``{"type": "image"}`` placeholders, as HF processors expect)."""
    system = [{"role": "system", "content": request.system}] if request.system else []
    if not request.images or not image_parts:
        return [*system, {"role": "user", "content": request.text}]
    content = [*({"type": "image"} for _ in request.images), {"type": "text", "text": request.text}]
    return [*system, {"role": "user", "content": content}]


def restore_think(text: str, prompt: str = "") -> str:
    """``text`` with the ``<think>`` tag the model did not write (because its prompt already held it) put back.

    When ``prompt`` ends with ``<think>`` (whitespace aside) and ``text`` does not open with one, the prompt's tail
    from that tag on (``<think>\n``: what the model's context held) goes in front. Otherwise, when ``text`` closes a
    think block it never opened, ``<think>`` goes in front. Any other text comes back unchanged.
    """
    stripped = prompt.rstrip()
    if stripped.endswith("<think>") and not text.lstrip().startswith("<think>"):
        return prompt[len(stripped) - len("<think>") :] + text
    head, closed, _ = text.partition("</think>")
    if closed and "<think>" not in head:
        return "<think>" + text
    return text


def on_cpu() -> bool:
    """Whether vLLM runs on its CPU backend here."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def kv_cache_args(
    kv_cache_gib: float | None, engine_kwargs: dict[str, Any] | None = None, cpu_default_gib: float = 1.0
) -> dict[str, int]:
    """``vllm.LLM``'s ``kv_cache_memory_bytes`` for a backend: ``kv_cache_gib`` when given; else, on vLLM's CPU
    backend, ``cpu_default_gib`` (logged), unless ``engine_kwargs`` or ``VLLM_CPU_KVCACHE_SPACE`` already size it;
    else nothing (on GPU vLLM sizes it from ``gpu_memory_utilization``)."""
    import os

    given = "kv_cache_memory_bytes" in (engine_kwargs or {})
    if kv_cache_gib is not None:
        if given:
            raise ValueError("give the KV cache size once: kv_cache_gib or engine_kwargs.kv_cache_memory_bytes")
        return {"kv_cache_memory_bytes": int(kv_cache_gib * 2**30)}
    if given or os.environ.get("VLLM_CPU_KVCACHE_SPACE") or not on_cpu():
        return {}
    log.info("vLLM on CPU: KV cache fixed at %g GiB (set kv_cache_gib to change it)", cpu_default_gib)
    return {"kv_cache_memory_bytes": int(cpu_default_gib * 2**30)}


class ChatBackend(ABC):
    """Args shared by the backends: max_new_tokens, temperature (0: greedy), top_p."""

    def __init__(self, max_new_tokens: int = 1024, temperature: float = 0.0, top_p: float = 1.0) -> None:
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p

    @abstractmethod
    def chat(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        """One reply per request, in order."""

    def close(self) -> None:  # noqa: B027 - optional: free the engine's memory
        """Release the model (called when the pipeline no longer needs this backend)."""


class HFBackend(ChatBackend):
    """Args: model_name_or_path: a Qwen2.5-VL-style checkpoint; dtype; generation_batch_size."""

    def __init__(
        self,
        model_name_or_path: str,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        top_p: float = 1.0,
        dtype: str = "float32",
        generation_batch_size: int = 16,
    ) -> None:
        super().__init__(max_new_tokens, temperature, top_p)
        from transformers import AutoProcessor

        from lightning_modules.policy import load_policy
        from rollout.hf import HFEngine

        self.processor = AutoProcessor.from_pretrained(model_name_or_path)
        self.engine = HFEngine(generation_batch_size)
        self.engine.setup(load_policy(model_name_or_path, dtype).eval(), self.processor)

    def chat(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        from rollout.engine import SamplingConfig

        prompts = [
            self.processor.apply_chat_template(chat_messages(r), add_generation_prompt=True, tokenize=False)
            for r in requests
        ]
        sampling = SamplingConfig(self.temperature, self.top_p, 0, self.max_new_tokens)
        texts = self.engine.generate(prompts, [r.images for r in requests], 1, sampling).texts
        return [restore_think(text, prompt) for text, prompt in zip(texts, prompts)]


class VLLMBackend(ChatBackend):
    """Args: model: checkpoint folder or hub id; gpu_memory_utilization, max_model_len, dtype ("auto": the
    checkpoint's), enforce_eager, tensor_parallel_size (this backend only generates, so any size works),
    max_images_per_prompt: as in ``vllm.LLM``; kv_cache_gib: a fixed KV cache size in GiB instead of one derived
    from ``gpu_memory_utilization`` (None: derived on GPU, ``CPU_KV_CACHE_GIB`` on CPU; vLLM's own
    ``VLLM_CPU_KVCACHE_SPACE``, when set, overrides both); engine_kwargs: any other ``vllm.LLM`` argument; seed: makes
    sampling reproducible."""

    CPU_KV_CACHE_GIB = 1.0

    def __init__(
        self,
        model: str,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        top_p: float = 1.0,
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
        super().__init__(max_new_tokens, temperature, top_p)
        import os

        if tensor_parallel_size == 1:  # in-process engine (what the CPU build runs best); TP needs worker processes
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from transformers import AutoProcessor
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

    def chat(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        from vllm import SamplingParams

        # one seed per request from a seeded stream: reproducible, and no two requests share a random stream
        params = [
            SamplingParams(
                n=1,
                temperature=self.temperature,
                top_p=self.top_p if self.temperature > 0 else 1.0,
                max_tokens=self.max_new_tokens,
                seed=self._seeds.randrange(2**31),
            )
            for _ in requests
        ]
        prompts = []
        for r in requests:
            text = self.renderer.apply_chat_template(chat_messages(r), add_generation_prompt=True, tokenize=False)
            prompts.append({"prompt": text, **({"multi_modal_data": {"image": list(r.images)}} if r.images else {})})
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [restore_think(out.outputs[0].text, p["prompt"]) for out, p in zip(outputs, prompts)]

    def close(self) -> None:
        del self.llm


class OpenAIBackend(ChatBackend):
    """Args: base_url (``http://host:8000/v1``), model (served name), api_key_env, timeout_s, max_retries,
    concurrency (requests in flight). A reasoning model's chain of thought comes back inside ``<think>``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        top_p: float = 1.0,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        max_retries: int = 2,
        concurrency: int = 8,
    ) -> None:
        super().__init__(max_new_tokens, temperature, top_p)
        from rollout.http_chat import ChatClient

        self.client = ChatClient(base_url, model, api_key_env, timeout_s, max_retries, keep_reasoning=True)
        self.concurrency = concurrency

    def chat(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        from rollout.http_chat import user_message

        conversations = []
        for r in requests:
            system = [{"role": "system", "content": r.system}] if r.system else []
            conversations.append([*system, user_message(r.text, r.images)])
        replies = self.client.complete_many(
            conversations,
            self.concurrency,
            max_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
        )
        return [None if reply is None else restore_think(reply) for reply in replies]
