"""No reward raises on any model output, and the math time limit holds on adversarial input."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewards import AccuracyReward, FormatReward, HardFormatResultReward
from rewards.problem_types import PROBLEM_TYPES

TAGGY = st.lists(
    st.sampled_from(
        [
            "<info>",
            "</info>",
            "<think>",
            "</think>",
            "<answer>",
            "</answer>",
            "\\boxed{",
            "}",
            "{",
            "\n",
            "1,234",
            "50%",
            "B)",
            "é",
            "\u202e",
            "\x00",
            "🙂",
            "\\frac{1}{",
            "$",
            " ",
        ]
    ),
    max_size=30,
).map("".join)
TEXT = st.one_of(st.text(max_size=200), TAGGY)

REWARDS = [AccuracyReward(), FormatReward("caption"), FormatReward("think"), HardFormatResultReward("caption")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(completion=TEXT, solution=TEXT.filter(lambda s: len(s) < 60), kind=st.sampled_from(PROBLEM_TYPES))
def test_no_reward_raises(completion, solution, kind):
    for reward in REWARDS:
        out = reward([completion], solution=[solution], problem_type=[kind])
        assert out.shape == (1,)
        assert 0.0 <= out.item() <= 1.0


def test_huge_and_unbalanced_inputs_get_a_score():
    """No clock is read: a scorer that backtracked on these (a megabyte, 5,000 nested tags) would not finish, and
    the suite would stop at its own limit, where linear-time scoring takes well under a second each."""
    huge = "<answer>" + "x" * 1_000_000
    nested = "<info>" * 5000 + "</info>" * 5000 + "<think>a</think><answer>1</answer>"
    for text in (huge, nested, "", "</answer><answer>", "\x00" * 1000):
        for reward in REWARDS:
            out = reward([text] * 2, solution=["1", "1"], problem_type=["ocr", "free_form"])
            assert out.shape == (2,) and bool(((out >= 0) & (out <= 1)).all())


def test_math_time_limit_holds_on_adversarial_latex():
    reward = AccuracyReward(math_timeout_s=1)
    evil = r"<answer>" + r"\left(" * 200 + "x^{" * 200 + "9" * 500 + "}" * 200 + r"\right)" * 200 + "</answer>"
    power = r"<answer>9^{9^{9^{9^{9^{9}}}}}</answer>"
    # No clock is read: without the limit the power tower does not finish at all, so a score at all shows the limit
    # held (each completion spends at most 3 limited calls of 1 s: parse truth, parse answer, verify)
    out = reward([evil, power], solution=["1", "2"], problem_type=["math", "math"])
    assert out.tolist() == [0.0, 0.0]
