"""The OpenAI-compatible chat client against a real HTTP server on localhost that replies the way reasoning models'
servers do (DeepSeek's ``reasoning_content``, vLLM's ``reasoning``): a judge gets the answer alone, the cold-start
pipeline gets the chain of thought back inside ``<think>``."""

import pytest

from rollout.http_chat import ChatClient, reply_text
from tests.chat_server import ANSWER, DESCRIPTION, REASONING, ChatServer

FOLDED = f"<think>{REASONING}</think> {ANSWER}"


def test_reply_text_folds_each_reasoning_field_back_in_front_of_the_answer():
    deepseek = {"role": "assistant", "content": "<answer>B</answer>", "reasoning_content": "  so B \n"}
    assert reply_text(deepseek) == "<answer>B</answer>"  # default: the content alone (what a judge parses)
    assert reply_text(deepseek, keep_reasoning=True) == "<think>so B</think> <answer>B</answer>"
    vllm = {"role": "assistant", "content": "<answer>B</answer>", "reasoning": "so B", "tool_calls": []}
    assert reply_text(vllm, keep_reasoning=True) == "<think>so B</think> <answer>B</answer>"
    # older vLLM servers sent both names; the first non-empty one is the reasoning
    assert reply_text({"content": "x", "reasoning_content": "", "reasoning": "so B"}, True) == "<think>so B</think> x"
    # no reasoning (a plain model, or a server without a parser): the content unchanged
    assert reply_text({"content": "so B</think> x", "reasoning_content": None}, True) == "so B</think> x"
    assert reply_text({"content": "  plain  "}, True) == "  plain  "
    # cut off while reasoning: the reasoning alone, closed, so the format filter rejects it rather than a retry
    assert reply_text({"content": None, "reasoning_content": "so B"}, True) == "<think>so B</think>"
    assert reply_text({"content": None}, True) is None
    # the model wrote its own <think> block too: one block, the hidden reasoning first
    tagged = {"content": " <think>B it is.</think> <answer>B</answer>", "reasoning_content": "so B"}
    assert reply_text(tagged, True) == "<think>so B\n\nB it is.</think> <answer>B</answer>"
    with pytest.raises(TypeError):
        reply_text({"content": [{"type": "text", "text": "x"}]})  # the client turns this into None (malformed)


def test_client_returns_the_reasoning_only_when_asked_to_keep_it():
    with ChatServer() as server:
        messages = [{"role": "user", "content": "Which option?"}]

        def ask(model: str, keep: bool) -> str | None:
            return ChatClient(server.url, model, api_key_env=None, keep_reasoning=keep).complete(messages)

        assert ask("deepseek-reasoner", False) == ANSWER  # a judge's view: unchanged behaviour
        assert ask("deepseek-reasoner", True) == FOLDED
        assert ask("vllm-reasoning-parser", True) == FOLDED
        assert ask("cut-off", True) == f"<think>{REASONING}</think>"
        assert ask("cut-off", False) is None
        assert ask("writes-tags", True) == f"<think>{REASONING}\n\nSo B.</think> {ANSWER}"
        assert ask("no-reasoning-parser", True) == f"{REASONING}\n</think>\n\n{ANSWER}"  # restored by the backend
        assert ask("describer", True) == DESCRIPTION
        many = ChatClient(server.url, "deepseek-reasoner", api_key_env=None, keep_reasoning=True)
        assert many.complete_many([messages] * 3, concurrency=2) == [FOLDED] * 3
        assert len(server.requests) == 11 and server.requests[0]["messages"] == messages
