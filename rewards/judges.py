"""The judge contract of the caption reward: text in, text out, batched.

A judge returns one string per prompt, or None for a prompt it could not answer; the caption reward scores those 0
and counts them. Exceptions that escape a judge are caught by the reward the same way.

This module holds the contract only, so rewards import nothing above them. The implementations live higher up:
- ``clients.HFChatClient``, ``clients.OpenAIChatClient``, ``clients.VLLMChatClient``: every chat client is a judge
  (a local transformers model, any OpenAI-compatible endpoint, an offline vLLM engine);
- ``rollout.chat.PolicyEngineJudge``: the policy's own rollout engine on text only (Visionary-R1's setting), bound to
  the engine by the rollout callback through ``bind``;
- ``rewards.oracle_judge.OracleJudge``: a rule-based judge for the synthetic tasks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any


class Judge(ABC):
    """Answers prompts; ``generate`` is all a reward calls."""

    #: whether every rank must call ``generate`` together, even with no prompts (a judge that runs on an
    #: FSDP-sharded policy): rewards then call it with an empty list rather than skipping the call
    collective: bool = False

    @abstractmethod
    def generate(self, prompts: Sequence[str]) -> list[str | None]:
        """One reply per prompt (None when that prompt failed)."""

    def bind(self, engine: Any, processor: Any) -> None:  # noqa: B027 - optional hook, most judges need nothing
        """Hand the judge the policy's rollout engine and processor (the rollout callback calls this on every judge
        when training starts). Default: nothing; a judge that answers with the policy's engine keeps them."""
