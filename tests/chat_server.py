"""A real OpenAI-compatible ``/v1/chat/completions`` server on localhost whose replies have the shapes reasoning
models' servers send, chosen by the request's ``model``:

- ``deepseek-reasoner``: DeepSeek's API: the chain of thought in ``reasoning_content``, the answer in ``content``;
- ``vllm-reasoning-parser``: ``vllm serve --reasoning-parser ...`` (vLLM 0.32): the same in ``reasoning``;
- ``no-reasoning-parser``: vLLM without a parser on a DeepSeek-R1 distill, whose chat template ends the prompt with
  ``<think>\\n``: ``content`` is the reasoning, ``</think>``, then the answer, with no opening tag;
- ``cut-off``: a reply that hit ``max_tokens`` while still reasoning (``content`` null, ``finish_reason`` length);
- ``writes-tags``: a reasoning model that also wrote the requested tags into ``content``;
- any other name: a plain chat model (the describing VLM) answering ``DESCRIPTION``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REASONING = "The description says the shape is green. Green is option B, so the answer is B."
ANSWER = "<answer>B</answer>"
DESCRIPTION = "A green circle on a white background."


def message_for(model: str) -> tuple[dict[str, Any], str]:
    """The ``choices[0].message`` and ``finish_reason`` the server sends for ``model``."""
    if model == "deepseek-reasoner":
        return {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING}, "stop"
    if model == "vllm-reasoning-parser":
        return {"role": "assistant", "content": ANSWER, "reasoning": REASONING, "tool_calls": []}, "stop"
    if model == "no-reasoning-parser":
        return {"role": "assistant", "content": f"{REASONING}\n</think>\n\n{ANSWER}"}, "stop"
    if model == "cut-off":
        return {"role": "assistant", "content": None, "reasoning_content": REASONING}, "length"
    if model == "writes-tags":
        tagged = f"<think>So B.</think> {ANSWER}"
        return {"role": "assistant", "content": tagged, "reasoning_content": REASONING}, "stop"
    return {"role": "assistant", "content": DESCRIPTION}, "stop"


def send_json(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """Answer a request with ``body`` (encoded JSON), status 200: shared by the test servers that play an
    OpenAI-compatible endpoint."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(body)
            kill = self.server.kill_at is not None and len(self.server.requests) == self.server.kill_at[0]
        if kill:  # the client dies with this request in flight
            os.kill(self.server.kill_at[1], signal.SIGKILL)
            return
        message, finish = message_for(body["model"])
        payload = json.dumps(
            {
                "id": f"chatcmpl-{len(self.server.requests)}",
                "object": "chat.completion",
                "created": 1700000000,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
            }
        ).encode()
        send_json(self, payload)

    def log_message(self, *args):
        pass


class ChatServer(ThreadingHTTPServer):
    """``with ChatServer() as server:`` serves on ``server.url`` (``http://127.0.0.1:PORT/v1``) in a thread;
    ``server.requests`` holds the request bodies received. ``server.kill_at = (n, pid)``: the n-th request received
    (counting from 1, over the server's life) SIGKILLs process ``pid`` instead of being answered."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.kill_at: tuple[int, int] | None = None
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
