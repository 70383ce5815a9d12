"""Caption reward: alignment, rejection, failures; judge backends over real HTTP and a real local model."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rewards import CaptionReward, CombinedReward, FormatReward, HFJudge, Judge, OpenAIJudge
from rewards.caption import REJECT_MARKER
from tests.chat_server import send_json


class KeywordJudge(Judge):
    """A rule-following stand-in for a judge LLM: rejects captions with 'therefore', answers with the number
    written after 'count=' in the caption. Lets the tests check the reward's bookkeeping exactly."""

    def __init__(self, fail_on: str | None = None):
        self.calls = 0
        self.fail_on = fail_on

    def reply(self, prompt: str) -> str | None:
        caption = prompt.split("Description: ")[1].split("\n\nQuestion:")[0]
        if self.fail_on and self.fail_on in caption:
            return None
        if "therefore" in caption:
            return REJECT_MARKER
        found = re.search(r"count=(\d+)", caption)
        return f"<answer>{found.group(1) if found else 'unknown'}</answer>"

    def generate(self, prompts):
        self.calls += 1
        return [self.reply(p) for p in prompts]


def test_scores_stay_aligned_when_some_have_no_caption():
    completions = [
        "<think>x</think><answer>3</answer>",  # no caption -> 0 (and must not shift the rest)
        "<info>count=3 circles</info><think>x</think><answer>3</answer>",  # judge says 3, right -> 1
        "<info>therefore the answer is 3</info><answer>3</answer>",  # reasoning in caption -> rejected -> 0
        "<info>count=5 circles</info><answer>3</answer>",  # judge says 5, wrong -> 0
        "<info>count=2</info>",  # judge says 2, right for this row -> 1
    ]
    reward = CaptionReward(judge=KeywordJudge())
    out = reward(
        completions, problem=["How many?"] * 5, solution=["3", "3", "3", "3", "2"], problem_type=["numerical"] * 5
    )
    assert out.tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert reward.metrics() == {"caption/no_caption": 1.0, "caption/rejected": 1.0, "caption/judged": 4.0}
    assert reward.judge.calls == 1  # batched: one call for the whole batch


def test_judge_failures_score_zero_and_are_counted():
    reward = CaptionReward(judge=KeywordJudge(fail_on="flaky"))
    out = reward(
        ["<info>count=1 flaky</info>", "<info>count=1</info>"],
        problem=["q", "q"],
        solution=["1", "1"],
        problem_type=["numerical", "numerical"],
    )
    assert out.tolist() == [0.0, 1.0]
    assert reward.metrics()["caption/judge_failures"] == 1.0

    class Broken(Judge):
        def generate(self, prompts):
            raise ConnectionError("judge down")

    reward = CaptionReward(judge=Broken())
    out = reward(
        ["<info>a</info>", "<info>b</info>"], problem=["q", "q"], solution=["1", "1"], problem_type=["ocr"] * 2
    )
    assert out.tolist() == [0.0, 0.0]
    assert reward.metrics()["caption/judge_failures"] == 2.0


class ScriptedJudge(Judge):
    """Replies with the given strings in order, and records the prompts it saw."""

    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def generate(self, prompts):
        self.prompts.extend(prompts)
        return self.replies[: len(prompts)]


def test_published_row_judged_answer_scored_as_text():
    # Visionary-R1's README row: solution "<answer> Yes </answer>" under problem_type "numerical". The judge's answer
    # is compared as text (case and a final period aside); it used to score 0 whatever the judge said.
    judge = ScriptedJudge(["<answer>Yes</answer>", "<answer>yes.</answer>", "<answer>No</answer>"])
    reward = CaptionReward(judge=judge)
    out = reward(
        ["<info>a chart</info>"] * 3,
        problem=["Is the value of Favorable 38 in 2015?"] * 3,
        solution=["<answer> Yes </answer>"] * 3,
        problem_type=["numerical"] * 3,
    )
    assert out.tolist() == [1.0, 1.0, 0.0]


def test_rejection_is_the_whole_reply():
    replies = [REJECT_MARKER, f"  {REJECT_MARKER}.\n", f"Not {REJECT_MARKER}: the answer is <answer>3</answer>"]
    reward = CaptionReward(judge=ScriptedJudge(replies))
    out = reward(["<info>three dots</info>"] * 3, problem=["q"] * 3, solution=["3"] * 3, problem_type=["numerical"] * 3)
    # the first two are rejections (0); the marker inside a longer reply is not, and its answer 3 is right (1)
    assert out.tolist() == [0.0, 0.0, 1.0]
    assert reward.metrics() == {"caption/rejected": 2.0, "caption/judged": 3.0}


def test_multi_line_caption_is_judged():
    # the released code looked for <info> without DOTALL, so a caption over two lines counted as no caption
    judge = ScriptedJudge(["<answer>2</answer>"])
    reward = CaptionReward(judge=judge)
    out = reward(["<info>two dots,\none red</info>"], problem=["How many?"], solution=["2"], problem_type=["numerical"])
    assert out.tolist() == [1.0]
    assert "two dots,\none red" in judge.prompts[0]


def test_combined_weights_and_components():
    combined = CombinedReward([FormatReward("caption"), CaptionReward(judge=KeywordJudge())], weights=[1.0, 0.1])
    completions = ["<info>count=3</info> <think>t</think> <answer>3</answer>", "<answer>3</answer>"]
    total, parts = combined(completions, problem=["q", "q"], solution=["3", "3"], problem_type=["numerical"] * 2)
    # row 0: format 1 + 0.1 * caption 1 = 1.1; row 1: 0 + 0.1 * 0 = 0
    assert total.tolist() == pytest.approx([1.1, 0.0])
    assert parts["format"].tolist() == [1.0, 0.0] and parts["caption"].tolist() == [1.0, 0.0]
    assert combined.metrics()["caption/no_caption"] == 1.0


def test_combined_rejects_mismatched_weights():
    with pytest.raises(ValueError):
        CombinedReward([FormatReward()], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="unique"):
        CombinedReward([FormatReward(), FormatReward("think")])


class _Handler(BaseHTTPRequestHandler):
    seen_auth: list = []
    fail_first: list = [True]

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen_auth.append(self.headers.get("Authorization"))
        if _Handler.fail_first[0]:  # one transient 503: the client must retry
            _Handler.fail_first[0] = False
            self.send_response(503)
            self.end_headers()
            return
        prompt = body["messages"][-1]["content"]
        reply = KeywordJudge().reply(prompt)
        payload = {"choices": [{"message": {"role": "assistant", "content": reply}}], "model": body["model"]}
        data = json.dumps(payload).encode()
        send_json(self, data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_openai_judge_over_http_with_key_from_env(judge_server, monkeypatch):
    monkeypatch.setenv("VLRL_TEST_JUDGE_KEY", "s3cret")
    judge = OpenAIJudge(judge_server, model="judge", api_key_env="VLRL_TEST_JUDGE_KEY", timeout_s=5, max_retries=2)
    assert "s3cret" not in repr(vars(judge))  # the key is read at call time, never stored
    reward = CaptionReward(judge=judge)
    out = reward(
        ["<info>count=4</info>", "<info>so therefore 4</info>"],
        problem=["q", "q"],
        solution=["4", "4"],
        problem_type=["numerical"] * 2,
    )
    assert out.tolist() == [1.0, 0.0]
    assert "Bearer s3cret" in _Handler.seen_auth


def test_openai_judge_unreachable_scores_zero():
    judge = OpenAIJudge("http://127.0.0.1:9/v1", model="judge", timeout_s=1, max_retries=0)
    reward = CaptionReward(judge=judge)
    assert reward(["<info>count=1</info>"], problem=["q"], solution=["1"], problem_type=["numerical"]).item() == 0.0
    assert reward.metrics()["caption/judge_failures"] == 1.0


def test_hf_judge_with_the_tiny_model(tiny_checkpoint):
    judge = HFJudge(str(tiny_checkpoint), max_new_tokens=4, batch_size=2)
    replies = judge.generate(["What is 2+2?", "Name a colour.", "Say hi."])
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    assert not any(p.requires_grad for p in judge.model.parameters())
    reward = CaptionReward(judge=judge)
    out = reward(
        ["<info>a red circle</info>", "no caption"],
        problem=["q", "q"],
        solution=["red", "red"],
        problem_type=["free_form"] * 2,
    )
    assert out.shape == (2,) and out[1].item() == 0.0


def test_policy_engine_judge_passes_its_sampling_settings():
    from types import SimpleNamespace

    from rewards import PolicyEngineJudge

    class Processor:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "|".join(part["text"] for m in messages for part in m["content"])

    class Engine:
        def generate(self, prompts, images, n, sampling):
            self.seen = (prompts, images, n, sampling)
            return SimpleNamespace(texts=["<answer>1</answer>"] * len(prompts))

    engine = Engine()
    judge = PolicyEngineJudge(max_new_tokens=64, temperature=0.9, top_p=0.9, top_k=50)  # the released setting
    judge.bind(engine, Processor())
    assert judge.generate(["q1", "q2"]) == ["<answer>1</answer>"] * 2
    prompts, images, n, sampling = engine.seen
    assert prompts == ["q1", "q2"] and images == [[], []] and n == 1
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.max_new_tokens) == (0.9, 0.9, 50, 64)
    assert PolicyEngineJudge().top_k == 0 and PolicyEngineJudge().temperature == 0.0  # greedy by default
