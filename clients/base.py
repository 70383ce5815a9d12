"""One chat client family, shared by the caption reward's judges and the cold-start data pipeline.

A ``ChatRequest`` is one conversation turn (an optional system prompt, the user's text, images shown before it); a
``ChatClient`` answers a batch of them, ``chat(requests) -> [reply or None]``, None where that request failed (the
caller counts it: the caption reward scores it 0, the pipeline retries the row on its next run). Every client is
also a ``rewards.judges.Judge``: ``generate(prompts)`` is ``chat`` on text-only requests with the client's
``system_prompt``.

Implementations: ``clients.hf.HFChatClient`` (a local transformers model), ``clients.openai.OpenAIChatClient`` (any
OpenAI-compatible endpoint), ``clients.vllm.VLLMChatClient`` (an offline vLLM engine); ``rollout.chat`` adds the
policy's own rollout engine as a judge.

Reasoning models: with ``keep_reasoning=True`` a reply is the model's whole text, its chain of thought inside
``<think>..</think>`` before the answer (what the cold-start filters check). Local models whose chat template ends
the generation prompt with ``<think>\\n`` (DeepSeek-R1's distills, QwQ) generate text that starts inside the block
and only closes it: ``restore_think`` puts the opening tag back. The default, ``keep_reasoning=False``, returns the
text as generated (local) or the message's ``content`` (HTTP): what a judge parses.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rewards.judges import Judge


@dataclass
class ChatRequest:
    text: str  # the user turn
    images: list[Any] = field(default_factory=list)  # PIL images, shown before the text
    system: str | None = None


def placeholder_part(image: Any) -> dict[str, Any]:
    """The content part HF processors (and vLLM's renderers) expect for an image: ``{"type": "image"}``."""
    return {"type": "image"}


def chat_messages(
    request: ChatRequest, image_part: Callable[[Any], dict[str, Any]] = placeholder_part
) -> list[dict[str, Any]]:
    """Chat messages for ``request``: the system turn when there is one, then the user turn. Text alone is a plain
    string; with images the content is a list of parts, each image (``image_part(image)``) before the text."""
    system = [{"role": "system", "content": request.system}] if request.system else []
    if not request.images:
        return [*system, {"role": "user", "content": request.text}]
    content = [*(image_part(image) for image in request.images), {"type": "text", "text": request.text}]
    return [*system, {"role": "user", "content": content}]


def restore_think(text: str, prompt: str = "") -> str:
    """``text`` with the ``<think>`` tag the model did not write (because its prompt already held it) put back.

    When ``prompt`` ends with ``<think>`` (whitespace aside) and ``text`` does not open with one, the prompt's tail
    from that tag on (``<think>\\n``: what the model's context held) goes in front. Otherwise, when ``text`` closes a
    think block it never opened, ``<think>`` goes in front. Any other text comes back unchanged.
    """
    stripped = prompt.rstrip()
    if stripped.endswith("<think>") and not text.lstrip().startswith("<think>"):
        return prompt[len(stripped) - len("<think>") :] + text
    head, closed, _ = text.partition("</think>")
    if closed and "<think>" not in head:
        return "<think>" + text
    return text


class ChatClient(Judge):
    """Args shared by every client:
    max_new_tokens: longest reply, in tokens (128: a judge's short answer; the cold-start configs set their own).
    temperature: 0 is greedy (the default: a judge's score then depends on its input alone).
    top_p: nucleus sampling threshold (1: off); top_k: keep the k most likely tokens (0: off). Both apply only when
        sampling.
    system_prompt: the system turn of ``generate``'s requests (``chat`` takes each request's own).
    keep_reasoning: return a reasoning model's chain of thought inside ``<think>`` (see the module docstring).
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
        self.max_new_tokens, self.temperature, self.top_p, self.top_k = max_new_tokens, temperature, top_p, top_k
        self.system_prompt, self.keep_reasoning = system_prompt, keep_reasoning

    @abstractmethod
    def chat(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        """One reply per request, in order (None where the request failed)."""

    def generate(self, prompts: Sequence[str]) -> list[str | None]:
        """The judge interface: each prompt as a text-only request with ``system_prompt``."""
        return self.chat([ChatRequest(prompt, system=self.system_prompt) for prompt in prompts])

    def finish(self, text: str, prompt: str = "") -> str:
        """A generated ``text`` as this client returns it: with the ``<think>`` its ``prompt`` opened put back when
        keeping the reasoning, else unchanged."""
        return restore_think(text, prompt) if self.keep_reasoning else text

    def close(self) -> None:  # noqa: B027 - optional: a client holding a model frees it
        """Release the model (called when the caller no longer needs this client)."""
