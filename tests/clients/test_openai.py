"""The OpenAI-compatible chat client against real HTTP servers on localhost: replies shaped the way reasoning models'
servers send them (DeepSeek's ``reasoning_content``, vLLM's ``reasoning``: a judge gets the answer alone, the
cold-start pipeline the chain of thought inside ``<think>``), the key read from the environment at call time,
retries, failures as None, sampling fields, and images that survive the trip (the tiny model behind a server)."""

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from clients import ChatRequest, HFChatClient, OpenAIChatClient
from clients.openai import reply_text
from rewards import CaptionReward
from rewards.caption import REJECT_MARKER
from tests.chat_server import ANSWER, DESCRIPTION, REASONING, ChatServer, send_json

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
            return OpenAIChatClient(server.url, model, api_key_env=None, keep_reasoning=keep).complete(messages)

        assert ask("deepseek-reasoner", False) == ANSWER  # a judge's view
        assert ask("deepseek-reasoner", True) == FOLDED
        assert ask("vllm-reasoning-parser", True) == FOLDED
        assert ask("cut-off", True) == f"<think>{REASONING}</think>"
        assert ask("cut-off", False) is None
        assert ask("writes-tags", True) == f"<think>{REASONING}\n\nSo B.</think> {ANSWER}"
        assert ask("no-reasoning-parser", True) == f"{REASONING}\n</think>\n\n{ANSWER}"  # complete: as sent
        assert ask("describer", True) == DESCRIPTION
        many = OpenAIChatClient(server.url, "deepseek-reasoner", api_key_env=None, keep_reasoning=True)
        assert many.complete_many([messages] * 3, concurrency=2) == [FOLDED] * 3
        assert len(server.requests) == 11 and server.requests[0]["messages"] == messages
        # chat also gives the reply that closes a </think> it never opened its opening tag, when keeping reasoning
        request = [ChatRequest("Which option?")]
        assert OpenAIChatClient(server.url, "no-reasoning-parser", api_key_env=None, keep_reasoning=True).chat(
            request
        ) == [f"<think>{REASONING}\n</think>\n\n{ANSWER}"]
        assert OpenAIChatClient(server.url, "no-reasoning-parser", api_key_env=None).chat(request) == [
            f"{REASONING}\n</think>\n\n{ANSWER}"
        ]


def test_sampling_fields_sent_greedy_and_sampled():
    with ChatServer() as server:
        OpenAIChatClient(server.url, "describer", max_new_tokens=32, top_p=0.5, api_key_env=None).chat(
            [ChatRequest("a")]
        )
        sampled = OpenAIChatClient(
            server.url, "describer", max_new_tokens=64, temperature=0.6, top_p=0.95, top_k=20, api_key_env=None
        )
        sampled.chat([ChatRequest("b")])
        OpenAIChatClient(server.url, "describer", temperature=0.6, api_key_env=None).chat([ChatRequest("c")])
    fields = [{k: v for k, v in r.items() if k not in ("model", "messages")} for r in server.requests]
    assert fields[0] == {"max_tokens": 32, "temperature": 0.0}  # greedy: top_p means nothing, not sent
    assert fields[1] == {"max_tokens": 64, "temperature": 0.6, "top_p": 0.95, "top_k": 20}
    assert fields[2] == {"max_tokens": 128, "temperature": 0.6, "top_p": 1.0}  # the default length; top_k 0: not sent


class _JudgeHandler(BaseHTTPRequestHandler):
    """A judge endpoint: one transient 503 first (the client must retry), then rejects captions holding
    'therefore' and otherwise answers the number after 'count='."""

    seen_auth: list = []
    fail_first: list = [True]

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _JudgeHandler.seen_auth.append(self.headers.get("Authorization"))
        if _JudgeHandler.fail_first[0]:
            _JudgeHandler.fail_first[0] = False
            self.send_response(503)
            self.end_headers()
            return
        caption = body["messages"][-1]["content"].split("Description: ")[1].split("\n\nQuestion:")[0]
        count = caption.split("count=")[-1].split()[0] if "count=" in caption else "unknown"
        reply = REJECT_MARKER if "therefore" in caption else f"<answer>{count}</answer>"
        payload = {"choices": [{"message": {"role": "assistant", "content": reply}}], "model": body["model"]}
        send_json(self, json.dumps(payload).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JudgeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_caption_judge_over_http_with_the_key_from_the_environment(judge_server, monkeypatch):
    monkeypatch.setenv("VLRL_TEST_JUDGE_KEY", "s3cret")
    judge = OpenAIChatClient(
        judge_server, model="judge", max_new_tokens=128, api_key_env="VLRL_TEST_JUDGE_KEY", timeout_s=5, max_retries=2
    )
    assert "s3cret" not in repr(vars(judge))  # the key is read at call time, never stored
    reward = CaptionReward(judge=judge)
    out = reward(
        ["<info>count=4</info>", "<info>so therefore 4</info>"],
        problem=["q", "q"],
        solution=["4", "4"],
        problem_type=["numerical"] * 2,
    )
    assert out.tolist() == [1.0, 0.0]  # 4 answered from the caption; the reasoning caption rejected
    assert "Bearer s3cret" in _JudgeHandler.seen_auth and reward.metrics()["caption/rejected"] == 1.0


def test_unreachable_endpoint_gives_none_and_the_caption_reward_scores_zero():
    judge = OpenAIChatClient("http://127.0.0.1:9/v1", model="judge", timeout_s=1, max_retries=0)
    assert judge.chat([ChatRequest("q")]) == [None]
    reward = CaptionReward(judge=judge)
    assert reward(["<info>count=1</info>"], problem=["q"], solution=["1"], problem_type=["numerical"]).item() == 0.0
    assert reward.metrics()["caption/judge_failures"] == 1.0


class _ModelHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint answering with a local client (the tiny model behind a real HTTP server):
    images arrive as PNG data URLs."""

    client = None
    auth: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _ModelHandler.auth.append(self.headers.get("Authorization"))
        system, text, images = None, "", []
        for message in body["messages"]:
            if message["role"] == "system":
                system = message["content"]
                continue
            content = message["content"]
            for part in content if isinstance(content, list) else [{"type": "text", "text": content}]:
                if part["type"] == "text":
                    text = part["text"]
                else:
                    data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                    images.append(Image.open(io.BytesIO(data)).convert("RGB"))
        reply = _ModelHandler.client.chat([ChatRequest(text, images, system)])[0]
        send_json(self, json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode())

    def log_message(self, *args):
        pass


def test_over_http_the_replies_are_the_models_own_images_included(tiny_checkpoint, monkeypatch):
    local = HFChatClient(str(tiny_checkpoint), max_new_tokens=12)
    _ModelHandler.client = local
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ModelHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("VLRL_TEST_COLD_KEY", "secret")
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        http = OpenAIChatClient(url, "tiny", max_new_tokens=12, api_key_env="VLRL_TEST_COLD_KEY", concurrency=2)
        image = Image.new("RGB", (56, 56), (40, 170, 60))
        requests = [ChatRequest("What colour is it?", [image]), ChatRequest("Say hi.", [], "Be brief.")]
        assert http.chat(requests) == local.chat(requests)  # the image survives the trip (greedy, same tokens)
        assert set(_ModelHandler.auth) == {"Bearer secret"}
    finally:
        server.shutdown()
        server.server_close()
