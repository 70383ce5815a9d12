"""The template registry (``rewards.templates``): one definition of each output template, read alike by the prompts,
the format rewards, the cold-start targets and the evaluation records."""

import dataclasses

import pytest

from datamodules.prompts import build_messages, sharegpt_row
from datamodules.synthetic import make_row
from datamodules.vqa import VQADataModule
from rewards import AccuracyReward, FormatReward, HardFormatResultReward
from rewards.parsing import extract_answer, parse_template
from rewards.templates import ANSWER_HINTS, TAGGED, TEMPLATES, Template, get_tagged_template, get_template


def test_the_three_templates_their_blocks_and_where_the_answer_sits():
    assert list(TEMPLATES) == ["caption", "think", "plain"]
    assert get_template("caption").blocks == ("info", "think", "answer")  # Visionary-R1: caption -> reason -> answer
    assert get_template("think").blocks == ("think", "answer")  # R1 style (Vision-R1, the GRPO baseline)
    assert get_template("plain").blocks == ()  # a bare answer
    assert [t.answer_in_block for t in TEMPLATES.values()] == [True, True, False]
    assert [t.answer_fallbacks for t in TEMPLATES.values()] == [(), (), ("text",)]
    assert TAGGED == ("caption", "think")
    assert all(name == t.name for name, t in TEMPLATES.items())


def test_a_template_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_template("think").blocks = ("answer",)
    assert isinstance(get_template("think"), Template) and hash(get_template("think")) == hash(get_template("think"))


@pytest.mark.parametrize(
    "make",
    [
        get_template,
        get_tagged_template,
        lambda name: VQADataModule(prompts={"template": name}),
        FormatReward,
        HardFormatResultReward,
        lambda name: parse_template("<think>a</think><answer>b</answer>", name),
        lambda name: build_messages("q", 1, name),
    ],
)
def test_an_unknown_template_is_an_error_naming_the_known_ones(make):
    with pytest.raises(ValueError, match=r"unknown template 'nope'; choose from \['caption', 'plain', 'think'\]"):
        make("nope")


@pytest.mark.parametrize("make", [FormatReward, HardFormatResultReward, lambda name: parse_template("4", name)])
def test_the_plain_template_has_no_format_to_check(make):
    with pytest.raises(ValueError, match=r"'plain' asks for a bare answer.*\['caption', 'think'\]"):
        make("plain")


@pytest.mark.parametrize("name", TAGGED)
def test_the_system_prompt_asks_for_the_blocks_the_format_reward_checks(name):
    template = get_template(name)
    # the prompt ends with the format spelled out: "<info> ... </info> <think> ... </think> <answer> ... </answer>"
    asked = " ".join(f"<{tag}> ... </{tag}>" for tag in template.blocks)
    assert template.system_prompt.endswith(f"Use exactly this format: {asked}")
    assert FormatReward(name)([asked]).item() == 1.0  # the example itself has the format


def test_the_plain_prompt_asks_for_no_tags():
    assert "<" not in get_template("plain").system_prompt


def test_render_writes_a_completion_the_rewards_read_back():
    contents = {"info": "two red dots", "think": "count them", "answer": "2"}
    caption = get_template("caption").render(contents)
    assert caption == "<info>two red dots</info> <think>count them</think> <answer>2</answer>"
    assert get_template("think").render(contents) == "<think>count them</think> <answer>2</answer>"
    assert get_template("plain").render(contents) == "2"
    for name, template in TEMPLATES.items():
        text = template.render(contents)
        assert extract_answer(text, template.answer_fallbacks) == "2"
        if template.blocks:
            assert parse_template(text, name) == {tag: contents[tag] for tag in template.blocks}
            assert FormatReward(name)([text]).item() == 1.0
            out = HardFormatResultReward(name)([text], solution=["2"], problem_type=["numerical"])
            assert out.item() == 1.0


def test_question_appends_the_hint_of_the_problem_type():
    plain = get_template("plain")
    assert plain.question("  How many dots? ", "numerical") == "How many dots?\nAnswer with a number."
    assert plain.question("How many dots?", "numerical", hints=False) == "How many dots?"
    assert plain.question("How many dots?", None) == "How many dots?"  # no type, no hint
    assert plain.question("How many dots?", "unheard_of") == "How many dots?"
    # the hints depend on the problem type only, never on the template
    assert all(t.answer_hints == ANSWER_HINTS for t in TEMPLATES.values())
    assert set(ANSWER_HINTS) == {"numerical", "multiple_choice", "math", "ocr", "free_form"}


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_the_prompts_are_the_registry_s(name):
    template = get_template(name)
    messages = build_messages("What colour?", 1, name, "multiple_choice")
    assert messages[0]["content"][0]["text"] == template.system_prompt
    assert messages[1]["content"] == [
        {"type": "image"},
        {"type": "text", "text": "What colour?\nAnswer with the option's letter."},
    ]
    row = sharegpt_row("What colour?", "multiple_choice", ["a.png"], name, "B")
    assert row == {
        "system": template.system_prompt,
        "images": ["a.png"],
        "conversations": [
            {"from": "human", "value": "<image>What colour?\nAnswer with the option's letter."},
            {"from": "gpt", "value": "B"},
        ],
    }


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_the_cold_start_targets_are_in_their_template_and_right(name):
    template = get_template(name)
    rows = [make_row(i, seed=0) for i in range(21)]
    completions = [r.target(name) for r in rows]
    if template.blocks:
        assert FormatReward(name)(completions).min().item() == 1.0
    else:
        assert completions == [r.answer for r in rows]
    accuracy = AccuracyReward(answer_fallbacks=template.answer_fallbacks)
    scores = accuracy(completions, solution=[r.answer for r in rows], problem_type=[r.problem_type for r in rows])
    assert scores.min().item() == 1.0
