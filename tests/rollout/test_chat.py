"""The policy's rollout engine as the caption judge: bound by the callback's ``bind``, it renders with the policy's
processor, passes its own sampling settings to the engine, and on the tiny policy answers what a separate
transformers client on the same checkpoint answers (greedy)."""

import pytest
from PIL import Image

from clients import ChatRequest, HFChatClient
from lightning_modules.policy import load_policy
from rewards import CaptionReward
from rollout.chat import PolicyEngineJudge
from rollout.hf import HFEngine


class Recording:
    """A real engine that records the arguments of each ``generate`` call."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    @property
    def collective(self):
        return self.inner.collective

    def generate(self, prompts, images, n, sampling):
        self.calls.append((prompts, images, n, sampling))
        return self.inner.generate(prompts, images, n, sampling)


@pytest.fixture(scope="module")
def engine(tiny_checkpoint, processor):
    engine = HFEngine(generation_batch_size=4)
    engine.setup(load_policy(str(tiny_checkpoint), "float32"), processor)
    return engine


def test_an_unbound_judge_raises_and_defaults_to_greedy():
    judge = PolicyEngineJudge()
    assert (judge.temperature, judge.top_k, judge.max_new_tokens) == (0.0, 0, 128)  # greedy, 128 tokens
    assert judge.collective is False
    with pytest.raises(RuntimeError, match="not bound"):
        judge.generate(["q"])


def test_the_judge_passes_its_own_sampling_settings(engine, processor):
    recording = Recording(engine)
    judge = PolicyEngineJudge(max_new_tokens=4, temperature=0.9, top_p=0.9, top_k=50, system_prompt="Judge.")
    judge.bind(recording, processor)  # the released setting: sampled like the rollouts
    replies = judge.generate(["q1", "q2"])
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    prompts, images, n, sampling = recording.calls[0]
    assert images == [[], []] and n == 1 and judge.collective is False
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.max_new_tokens) == (0.9, 0.9, 50, 4)
    expected = processor.apply_chat_template(
        [{"role": "system", "content": "Judge."}, {"role": "user", "content": "q1"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompts[0] == expected


def test_greedy_replies_are_the_checkpoints_own(engine, processor, tiny_checkpoint):
    judge = PolicyEngineJudge(max_new_tokens=6)
    judge.bind(engine, processor)
    local = HFChatClient(str(tiny_checkpoint), max_new_tokens=6, dtype="float32")
    questions = ["What colour is the square? Answer with one word.", "Is the bar tall?"]
    assert judge.generate(questions) == local.generate(questions)
    image = ChatRequest("What colour is it?", [Image.new("RGB", (56, 56), (40, 170, 60))])
    assert judge.chat([image]) == local.chat([image])  # chat takes images too
    reward = CaptionReward(judge)
    assert reward.judges == [judge]
    reward(["<info>a green circle</info>"], problem=["q"], solution=["green"], problem_type=["free_form"])
    assert reward.metrics()["caption/judged"] == 1.0
