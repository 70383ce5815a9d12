"""A chat client for OpenAI-compatible ``/v1/chat/completions`` endpoints (vLLM's server, hosted APIs).

Standard library only. The key is read from the environment variable named by ``api_key_env`` at each request and
never stored, logged or put in an error message. Connection errors, timeouts, 429 and 5xx are retried with
exponential backoff; other HTTP errors and malformed replies give ``None`` (the caller counts them). Images go as
``data:image/png;base64`` URLs in ``image_url`` content parts.

Reasoning models served this way return their chain of thought beside the answer, in the message's
``reasoning_content`` (DeepSeek's API, older vLLM servers started with a reasoning parser) or ``reasoning`` (newer
vLLM). A client built with ``keep_reasoning=True`` folds it back into one text, ``<think>reasoning</think> content``
(``reply_text``), and gives a reply that closes a ``</think>`` it never opened (a distill served without a reasoning
parser) its opening tag (``clients.base.restore_think``); the default returns ``content`` alone, which is what a
judge wants to parse.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clients.base import ChatClient, ChatRequest, chat_messages

RETRIED_STATUS = (429, 500, 502, 503, 504)
REASONING_FIELDS = ("reasoning_content", "reasoning")  # DeepSeek's API and older vLLM; newer vLLM


def image_url_part(image: Any) -> dict[str, Any]:
    """An ``image_url`` content part holding a PIL image as a PNG data URL."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return {"type": "image_url", "image_url": {"url": url}}


def reply_text(message: dict[str, Any], keep_reasoning: bool = False) -> str | None:
    """The text of one reply ``message`` (``choices[0].message``): its ``content`` (None when absent).

    With ``keep_reasoning``, the reasoning field (the first non-empty of ``REASONING_FIELDS``) goes back in front of
    the content as ``<think>reasoning</think> content``. When the content opens with a ``<think>`` block of its own
    (a model asked to write the tags), the reasoning is put at the start of that block, so the text keeps one block.
    A reply cut off while still reasoning has no content: it comes back as ``<think>reasoning</think>``.
    """
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise TypeError(f"reply content is {type(content).__name__}, not text")
    reasoning = next((r for f in REASONING_FIELDS if isinstance(r := message.get(f), str) and r.strip()), None)
    if not keep_reasoning or reasoning is None:
        return content
    content = (content or "").strip()
    if content.startswith("<think>"):
        return f"<think>{reasoning.strip()}\n\n{content.removeprefix('<think>').lstrip()}"
    return f"<think>{reasoning.strip()}</think> {content}".rstrip()


class OpenAIChatClient(ChatClient):
    """Args (and ``ChatClient``'s sampling settings; ``top_k`` is sent only when positive, as not every server
    takes it):
    base_url: e.g. ``http://localhost:8000/v1``.
    model: the served model name.
    api_key_env: environment variable holding the key (None or unset: no Authorization header).
    timeout_s: per request; max_retries: retries per request on transient failures.
    concurrency: requests in flight.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        system_prompt: str | None = None,
        keep_reasoning: bool = False,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 2,
        concurrency: int = 8,
    ) -> None:
        super().__init__(max_new_tokens, temperature, top_p, top_k, system_prompt, keep_reasoning)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.timeout_s, self.max_retries, self.concurrency = timeout_s, max_retries, concurrency

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def complete(self, messages: list[dict[str, Any]], **params: Any) -> str | None:
        """The reply's text (``reply_text``), or None after the retries (``params``: max_tokens, temperature ...)."""
        body = json.dumps({"model": self.model, "messages": messages, **params}).encode()
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=self.headers(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    payload = json.loads(response.read())
                return reply_text(payload["choices"][0]["message"], self.keep_reasoning)
            except urllib.error.HTTPError as e:
                if e.code not in RETRIED_STATUS or attempt == self.max_retries:
                    return None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
                if attempt == self.max_retries:
                    return None
            except (KeyError, IndexError, TypeError, ValueError, AttributeError):  # malformed reply
                return None
            time.sleep(min(2.0**attempt * 0.5, 8.0))
        return None

    def complete_many(
        self, conversations: Sequence[list[dict[str, Any]]], concurrency: int | None = None, **params: Any
    ) -> list[str | None]:
        """Replies in order, ``concurrency`` (default: the client's) requests in flight."""
        workers = min(concurrency or self.concurrency, max(1, len(conversations)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda messages: self.complete(messages, **params), conversations))

    def sampling_params(self) -> dict[str, Any]:
        """The request body's sampling fields."""
        params: dict[str, Any] = {"max_tokens": self.max_new_tokens, "temperature": self.temperature}
        if self.temperature > 0:
            params["top_p"] = self.top_p
            if self.top_k > 0:
                params["top_k"] = self.top_k
        return params

    def chat(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        conversations = [chat_messages(r, image_url_part) for r in requests]
        replies = self.complete_many(conversations, **self.sampling_params())
        return [None if reply is None else self.finish(reply) for reply in replies]
