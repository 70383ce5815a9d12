"""Judge backends for the caption reward: text in, text out, batched.

- ``HFJudge``: a local transformers model (any causal LM, or a VLM used text-only), greedy by default.
- ``OpenAIJudge``: any OpenAI-compatible ``/v1/chat/completions`` endpoint; the key is read from an environment
  variable at call time and never stored in the config, logged or put in an error message.
- ``PolicyEngineJudge``: the policy's own rollout engine (vLLM or HF) on text only, with its own sampling settings:
  Visionary-R1's setting, where the model being trained judges whether its captions suffice. The GRPO module's
  rollout callback binds it to the engine when training starts.

Every backend is greedy by default (``HFJudge`` always is). Visionary-R1's released trainer samples the judge with
the rollout's own ``SamplingParams``: the training temperature, ``top_p=0.9``, ``top_k=50``, and the completion
length limit as the reply limit. Greedy makes the caption reward depend on the caption alone, not also on the
judge's draw, so two equally good captions in a group score alike; ``PolicyEngineJudge(temperature=<the
rollout's>, top_p=0.9, top_k=50)`` reproduces the released setting.

A backend returns one string per prompt, or None for a prompt it could not answer; the caption reward scores
those 0 and counts them. Exceptions that escape a backend are caught by the reward the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any


class Judge(ABC):
    #: whether every rank must call ``generate`` together, even with no prompts (a judge that runs on an
    #: FSDP-sharded policy): rewards then call it with an empty list rather than skipping the call
    collective: bool = False

    @abstractmethod
    def generate(self, prompts: Sequence[str]) -> list[str | None]:
        """One reply per prompt (None when that prompt failed)."""


class HFJudge(Judge):
    """A local transformers model. ``model`` may be a path/hub id or an already loaded model (with ``tokenizer``).

    The judge is frozen: eval mode, no gradients, and it is never registered as a submodule of the policy module, so
    it is not an optimizer parameter and not saved in checkpoints.
    """

    def __init__(
        self,
        model: str | Any,
        tokenizer: Any = None,
        max_new_tokens: int = 128,
        batch_size: int = 16,
        dtype: str = "auto",
        device: str | None = None,
        system_prompt: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

        if isinstance(model, str):
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            try:
                model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
            except ValueError:  # a VLM checkpoint: load it whole and use it on text only
                model = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype)
        if tokenizer is None:
            raise ValueError("HFJudge needs a tokenizer when given a loaded model")
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.system_prompt = system_prompt

    def _render(self, prompt: str) -> str:
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [
            {"role": "user", "content": prompt}
        ]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, prompts: Sequence[str]) -> list[str | None]:
        import torch

        out: list[str | None] = []
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            for start in range(0, len(prompts), self.batch_size):
                chunk = [self._render(p) for p in prompts[start : start + self.batch_size]]
                enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
                with torch.no_grad():
                    ids = self.model.generate(
                        **enc,
                        max_new_tokens=self.max_new_tokens,
                        do_sample=False,
                        pad_token_id=self.tokenizer.pad_token_id,
                    )
                out.extend(self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True))
        finally:
            self.tokenizer.padding_side = side
        return out


class PolicyEngineJudge(Judge):
    """The policy's rollout engine used as a text-only judge. Greedy by default; the reply length is its own.

    Unlike a separate judge model, its answers change as the policy trains (the paper's setup). Bound by
    ``RolloutCallback`` (``bind(engine, processor)``); calling it before that is an error. ``top_k <= 0`` disables
    top-k.
    """

    def __init__(
        self,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        system_prompt: str | None = None,
    ) -> None:
        self.max_new_tokens, self.temperature, self.top_p, self.top_k = max_new_tokens, temperature, top_p, top_k
        self.system_prompt = system_prompt
        self.engine: Any = None
        self.processor: Any = None

    def bind(self, engine: Any, processor: Any) -> None:
        self.engine, self.processor = engine, processor

    @property
    def collective(self) -> bool:
        return self.engine is not None and self.engine.collective

    def generate(self, prompts: Sequence[str]) -> list[str | None]:
        if self.engine is None:
            raise RuntimeError("PolicyEngineJudge is not bound to a rollout engine (the GRPO module binds it at fit)")
        from rollout.engine import SamplingConfig

        rendered = []
        for prompt in prompts:
            messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [
                {"role": "user", "content": [{"type": "text", "text": prompt}]}
            ]
            rendered.append(self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        sampling = SamplingConfig(self.temperature, self.top_p, self.top_k, self.max_new_tokens)
        return list(self.engine.generate(rendered, [[] for _ in rendered], 1, sampling).texts)


class OpenAIJudge(Judge):
    """An OpenAI-compatible chat endpoint (vLLM's server, a hosted API ...).

    Args:
        base_url: e.g. ``http://localhost:8000/v1``.
        model: the served model name.
        api_key_env: name of the environment variable holding the key (unset: no Authorization header).
        max_retries: retries per prompt on connection errors, 5xx and 429, with exponential backoff.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_tokens: int = 128,
        temperature: float = 0.0,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        system_prompt: str | None = None,
    ) -> None:
        from rollout.http_chat import ChatClient

        self.client = ChatClient(base_url, model, api_key_env, timeout_s, max_retries)
        self.max_tokens, self.temperature = max_tokens, temperature
        self.system_prompt = system_prompt

    def _messages(self, prompt: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": prompt}]

    def generate(self, prompts: Sequence[str]) -> list[str | None]:
        return self.client.complete_many(
            [self._messages(p) for p in prompts], max_tokens=self.max_tokens, temperature=self.temperature
        )
