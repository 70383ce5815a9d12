import pytest

from rewards.parsing import (
    extract_answer,
    extract_boxed,
    extract_tag,
    parse_choice,
    parse_number,
    parse_template,
    strip_answer_tags,
)


def test_extract_tag_takes_last_block_across_lines():
    text = "<answer>1</answer> then <answer>\n 2 \n</answer>"
    assert extract_tag(text, "answer") == "2"
    assert extract_tag("<answer>open", "answer") is None


def test_extract_boxed_balances_braces():
    assert extract_boxed(r"so \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"
    assert extract_boxed(r"\boxed{1} and \boxed{2}") == "2"
    assert extract_boxed(r"\boxed{unclosed") is None


def test_extract_answer_fallbacks_in_order():
    assert extract_answer(r"x \boxed{7} y") == "7"
    assert extract_answer("  plain 7 ") == "plain 7"
    assert extract_answer("plain 7", fallbacks=()) is None
    assert extract_answer(r"<answer>3</answer> \boxed{7}") == "3"
    with pytest.raises(ValueError):
        extract_answer("x", fallbacks=("nope",))


@pytest.mark.parametrize(
    "text, value",
    [("1,234", 1234.0), ("3.0", 3.0), ("12 cm", 12.0), ("-5", -5.0), ("50%", 0.5), ("3/4", 0.75),
     ("about 2 or 3", 3.0), (".5", 0.5), ("no number", None), ("1/0", None)],
)  # fmt: skip
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "text", ["B", "(B)", "B.", "B) 12 cm", "The answer is B", "Answer: (B)", "b", "option B", "so the choice is (B)"]
)
def test_parse_choice_all_mean_b(text):
    assert parse_choice(text) == "B"


def test_parse_choice_none_without_letter():
    assert parse_choice("twelve centimetres") is None


def test_strip_answer_tags():
    assert strip_answer_tags("<answer> 12 </answer>") == "12"
    assert strip_answer_tags(" 12 ") == "12"


def test_parse_template_caption():
    blocks = parse_template("<info>a cat\non a mat</info>\n<think>count</think> <answer>1</answer>\n", "caption")
    assert blocks == {"info": "a cat\non a mat", "think": "count", "answer": "1"}


@pytest.mark.parametrize(
    "text",
    [
        "pre <info>a</info><think>b</think><answer>c</answer>",  # text before
        "<info>a</info><think>b</think><answer>c</answer> post",  # text after
        "<think>b</think><info>a</info><answer>c</answer>",  # wrong order
        "<info>a</info><answer>c</answer>",  # missing block
        "<info>a</info><think>b</think><answer>c</answer><answer>d</answer>",  # extra block
        "<info> </info><think>b</think><answer>c</answer>",  # empty block
        "<info>a<think>x</think></info><think>b</think><answer>c</answer>",  # nested tag
    ],
)
def test_parse_template_rejects(text):
    assert parse_template(text, "caption") is None


def test_parse_template_unknown_template():
    with pytest.raises(ValueError, match="unknown template"):
        parse_template("x", "nope")
