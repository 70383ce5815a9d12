"""The policy's rollout engine as a chat client, so the caption reward's judge can be the model being trained.

``PolicyEngineJudge`` renders each request with the policy's processor (its chat template) and generates on the
bound engine (vLLM or HF). The rollout callback binds it when training starts (``bind(engine, processor)``, the
``rewards.judges.Judge`` hook); rewards only ever see the judge contract, so they import nothing of the rollout.

Visionary-R1's setting: the model being trained judges whether its captions suffice, so, unlike a separate judge
model, its answers change as the policy trains. Departure: greedy by default, where Visionary-R1's released trainer
samples the judge with the rollout's own ``SamplingParams`` (the training temperature, ``top_p=0.9``, ``top_k=50``,
the completion length limit as the reply limit). Greedy makes the caption reward depend on the caption alone, not
also on the judge's draw, so two equally good captions in a group score alike; ``PolicyEngineJudge(temperature=<the
rollout's>, top_p=0.9, top_k=50)`` reproduces the released setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clients.base import ChatClient, ChatRequest, chat_messages
from rollout.engine import RolloutEngine, SamplingConfig


class PolicyEngineJudge(ChatClient):
    """The policy's rollout engine used as a judge (text only through ``generate``; ``chat`` also takes images).

    Args: ``ChatClient``'s sampling settings, greedy and 128 tokens by default (``top_k <= 0`` disables top-k).
    Calling it before ``bind`` is an error.
    """

    def __init__(
        self,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        system_prompt: str | None = None,
        keep_reasoning: bool = False,
    ) -> None:
        super().__init__(max_new_tokens, temperature, top_p, top_k, system_prompt, keep_reasoning)
        self.engine: RolloutEngine | None = None
        self.processor: Any = None

    def bind(self, engine: RolloutEngine, processor: Any) -> None:
        self.engine, self.processor = engine, processor

    @property
    def collective(self) -> bool:
        """Whether the bound engine runs the FSDP-sharded policy itself (every rank must call together)."""
        return self.engine is not None and self.engine.collective

    def chat(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        if self.engine is None:
            raise RuntimeError("PolicyEngineJudge is not bound to a rollout engine (the rollout callback binds it)")
        prompts = [
            self.processor.apply_chat_template(chat_messages(r), tokenize=False, add_generation_prompt=True)
            for r in requests
        ]
        sampling = SamplingConfig(self.temperature, self.top_p, self.top_k, self.max_new_tokens)
        texts = self.engine.generate(prompts, [list(r.images) for r in requests], 1, sampling).texts
        return [self.finish(text, prompt) for text, prompt in zip(texts, prompts)]
