import pytest

from rewards.parsing import (
    extract_answer,
    extract_boxed,
    extract_tag,
    is_bare_number,
    parse_choice,
    parse_number,
    parse_numbers,
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


def test_extract_answer_reads_the_answer_block_only_by_default():
    assert extract_answer(r"x \boxed{7} y") is None
    assert extract_answer("plain 7") is None
    assert extract_answer("<answer>\n 3\n4 </answer>") == "3\n4"  # multi-line, as Visionary-R1 (DOTALL) reads it
    assert extract_answer("<answer>3") is None  # truncated


def test_extract_answer_fallbacks_in_order():
    assert extract_answer(r"x \boxed{7} y", fallbacks=("boxed", "text")) == "7"
    assert extract_answer("  plain 7 ", fallbacks=("boxed", "text")) == "plain 7"
    assert extract_answer(r"<answer>3</answer> \boxed{7}", fallbacks=("boxed",)) == "3"
    with pytest.raises(ValueError):
        extract_answer("x", fallbacks=("nope",))


@pytest.mark.parametrize(
    "text, value",
    [
        ("1,234", 1234.0),
        ("3.0", 3.0),
        ("12 cm", 12.0),
        ("-5", -5.0),
        ("50%", 0.5),
        ("3/4", 0.75),
        ("about 2 or 3", 3.0),
        (".5", 0.5),
        ("no number", None),
        ("1/0", None),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_parse_numbers_keeps_the_percent_sign_apart():
    assert parse_numbers("50% of 1,200 and −3/4") == [(50.0, True), (1200.0, False), (-0.75, False)]
    assert parse_numbers("1/0 or 2") == [(2.0, False)]
    assert parse_numbers("Yes") == []


@pytest.mark.parametrize(
    "text, bare",
    [
        ("38", True),
        (" -1.5 ", True),
        ("1,234", True),
        (".5", True),
        ("12 cm", False),
        ("50%", False),
        ("3/4", False),
        ("1:30", False),
        ("Yes", False),
        ("", False),
    ],
)
def test_is_bare_number(text, bare):
    assert is_bare_number(text) is bare


@pytest.mark.parametrize(
    "text",
    [
        "B",
        "(B)",
        "B.",
        "B)",
        "[B]",
        "B) 12 cm",
        "B. 12 cm",
        "(B) 12 cm",
        "The answer is B",
        "Answer: (B)",
        "b",
        "option B",
        "so the choice is (B)",
        "the answer is: B.",
        "Answer: b",
        "**B**",
        "'B'",
        "not (A), so (B)",
    ],
)
def test_parse_choice_all_mean_b(text):
    assert parse_choice(text) == "B"


@pytest.mark.parametrize(
    "text",
    ["twelve centimetres", "I think B", "A red circle", "the answer is a dog", "Is it B or C", "", "Answers: C"],
)
def test_parse_choice_capitals_inside_sentences_are_not_marks(text):
    # "I think B" used to give I, "A red circle" A
    assert parse_choice(text) is None


def test_parse_choice_with_the_option_texts():
    capitals = ["A red circle", "A blue square"]
    assert parse_choice("A blue square", capitals) == "B"  # the option's text, though it starts with "A"
    assert parse_choice("a red circle.", capitals) == "A"
    assert parse_choice("B", capitals) == "B" and parse_choice("A", capitals) == "A"  # a lone letter stays a letter
    assert parse_choice("A green star", capitals) is None
    plain = ["red circle", "blue square"]
    assert parse_choice("B blue square", plain) == "B"  # the letter, then its own option's text
    assert parse_choice("blue square", plain) == "B"
    assert parse_choice("blue", ["blue", "Blue"]) is None  # two options fit: no letter


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
