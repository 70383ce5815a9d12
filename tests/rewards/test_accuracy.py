import pytest
import torch

from rewards import AccuracyReward
from rewards.accuracy import solution_error


def score(completion, solution, problem_type, choices=None, **kwargs):
    extra = {"choices": [choices]} if choices is not None else {}
    return AccuracyReward(**kwargs)([completion], solution=[solution], problem_type=[problem_type], **extra).item()


# The example row of Visionary-R1's README ("Data Preparation"), in its published shape: a yes/no answer filed under
# problem_type "numerical", the solution wrapped in <answer> tags with spaces.
PUBLISHED_ROW = {
    "solution": "<answer> Yes </answer>",
    "problem": "Is the value of Favorable 38 in 2015?",
    "problem_type": "numerical",
}


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        ("<answer>1,234</answer>", "1234", 1.0),
        ("<answer>12 cm</answer>", "<answer> 12 </answer>", 1.0),
        ("<answer>3.0</answer>", "3", 1.0),
        ("<answer>50%</answer>", "0.5", 1.0),  # % on one side: read as 0.5 -> 0.5 == 0.5
        ("<answer>50</answer>", "50%", 1.0),  # % on one side: read as written -> 50 == 50
        ("<answer>38%</answer>", "38", 1.0),  # a chart's percentage written without the sign
        ("<answer>5%</answer>", "50", 0.0),  # 5 != 50 and 0.05 != 50
        ("<answer>50%</answer>", "50%", 1.0),  # both: 0.5 == 0.5
        ("<answer>3.1</answer>", "3", 0.0),
        ("<answer>none</answer>", "3", 0.0),
        ("<answer>38 in 2015</answer>", "38", 0.0),  # the answer's last number (2015) counts, not its first
        # a solution with several numbers is text: "2:30" shares its last number with "1:30" but is wrong
        ("<answer>2:30</answer>", "1:30", 0.0),
        ("<answer>1:30</answer>", "1:30", 1.0),
        ("<answer>5</answer>", "9" * 400, 0.0),  # a solution that overflows to inf is text, not a number
    ],
)
def test_numerical(completion, solution, expected):
    assert score(completion, solution, "numerical") == expected


@pytest.mark.parametrize(
    "answer, expected",
    [("Yes", 1.0), (" yes. ", 1.0), ("YES", 1.0), ("No", 0.0), ("Yes, 38", 0.0), ("", 0.0)],
)
def test_published_row_non_numeric_solution_under_numerical(answer, expected):
    # Visionary-R1 compares a solution that is not a number as text, case-insensitively; here spacing and a final
    # period are ignored too ("yes." is "yes"). Before, every answer to this row scored 0.
    row = PUBLISHED_ROW
    assert score(f"<answer>{answer}</answer>", row["solution"], row["problem_type"]) == expected


def test_numerical_tolerance_is_configurable():
    assert score("<answer>3.04</answer>", "3", "numerical", rel_tol=0.02) == 1.0
    assert score("<answer>3.04</answer>", "3", "numerical", rel_tol=0.01) == 0.0


@pytest.mark.parametrize("pred", ["B", "(B)", "B.", "B) 12 cm", "The answer is B", "option B", "**B**"])
def test_multiple_choice(pred):
    assert score(f"<answer>{pred}</answer>", "(B) 12 cm", "multiple choice") == 1.0
    assert score(f"<answer>{pred}</answer>", "C", "multiple_choice") == 0.0


def test_multiple_choice_letters_inside_sentences_are_not_marks():
    # "I think B" used to read as I and "A red circle" as A
    assert score("<answer>I think B</answer>", "I", "multiple_choice") == 0.0
    assert score("<answer>I think B</answer>", "B", "multiple_choice") == 0.0  # names no option: not rewarded
    assert score("<answer>A red circle</answer>", "A", "multiple_choice") == 0.0
    # a solution that names no letter is compared as text: both sentences used to read as "A" and so matched
    assert score("<answer>A blue square</answer>", "A red circle", "multiple_choice") == 0.0
    assert score("<answer>a red circle.</answer>", "A red circle", "multiple_choice") == 1.0
    # options that are numbers: a bare-number solution is compared as a number
    assert score("<answer>3.0</answer>", "3", "multiple_choice") == 1.0
    assert score("<answer>4</answer>", "3", "multiple_choice") == 0.0


def test_multiple_choice_option_text_that_starts_with_a_letter():
    choices = ["A red circle", "A blue square"]
    assert score("<answer>A blue square</answer>", "B", "multiple_choice", choices) == 1.0  # option B's text
    assert score("<answer>A red circle</answer>", "B", "multiple_choice", choices) == 0.0  # option A's text
    assert score("<answer>A</answer>", "B", "multiple_choice", choices) == 0.0  # a lone letter stays a letter
    assert score("<answer>B. A blue square</answer>", "B", "multiple_choice", choices) == 1.0
    # the solution may be the option's text too
    assert score("<answer>B</answer>", "A blue square", "multiple_choice", choices) == 1.0


@pytest.mark.parametrize(
    "pred, truth, expected",
    [
        (r"\frac{1}{2}", "0.5", 1.0),
        (r"\sqrt{4}", "2", 1.0),
        ("2/4", r"\frac{1}{2}", 1.0),
        ("x+1", "1+x", 1.0),
        ("3", r"\frac{1}{2}", 0.0),
    ],
)
def test_math(pred, truth, expected):
    assert score(f"<answer>{pred}</answer>", truth, "math") == expected


def test_ocr_anls_by_hand():
    # "hellp" vs "hello": edit distance 1, longer length 5 -> 1 - 1/5 = 0.8; case is ignored
    assert score("<answer>HELLP</answer>", "hello", "OCR") == pytest.approx(0.8)
    # with threshold 0.9, 0.8 falls below -> 0
    assert score("<answer>hellp</answer>", "hello", "ocr", anls_threshold=0.9) == 0.0
    assert score("<answer>Hello</answer>", "hello", "ocr") == 1.0


@pytest.mark.parametrize(
    "answer, solution, expected",
    [
        ("39", "38", 0.0),  # ANLS would give 1 - 1/2 = 0.5 for a wrong number
        ("38", "38", 1.0),
        ("38.0", "38", 1.0),
        ("1234", "1,234", 1.0),
        ("38 kg", "38 kg", 1.0),
        ("39 kg", "38 kg", pytest.approx(0.8)),
    ],  # not a bare number: ANLS 1 - 1/5
)
def test_ocr_bare_number_solution_is_scored_as_a_number(answer, solution, expected):
    assert score(f"<answer>{answer}</answer>", solution, "ocr") == expected


def test_free_form_rouge_by_hand():
    # pred "red", truth "red circle": ROUGE-1 P=1 R=1/2 F=2/3; ROUGE-2 F=0 (pred has no bigram); ROUGE-L F=2/3
    # mean = (2/3 + 0 + 2/3) / 3 = 4/9
    assert score("<answer>red</answer>", "red circle", "free-form") == pytest.approx(4 / 9, abs=1e-4)
    assert score("<answer>Red Circle</answer>", "red circle", "free_form") == 1.0
    # pred "the red circle", truth "red circle": ROUGE-1 P=2/3 R=1 F=0.8; ROUGE-2 P=1/2 R=1 F=2/3; ROUGE-L (LCS 2)
    # F=0.8; mean = (0.8 + 2/3 + 0.8) / 3 = 34/45
    assert score("<answer>the red circle</answer>", "red circle", "free_form") == pytest.approx(34 / 45, abs=1e-4)
    # the same ROUGE tokens (punctuation and case aside) is a full match, not 2/3 for a one-word answer
    assert score("<answer>Red.</answer>", "red", "free_form") == 1.0


def test_per_sample_dispatch_not_first_row():
    # the same text "2" is right as a number and as math; as a choice it names no letter -> 0
    reward = AccuracyReward()
    out = reward(
        ["<answer>2</answer>"] * 3, solution=["2", "2", "B"], problem_type=["numerical", "math", "multiple_choice"]
    )
    assert out.tolist() == [1.0, 1.0, 0.0]
    assert out.dtype == torch.float32 and out.shape == (3,)


def test_answer_block_only_by_default():
    # as in Visionary-R1: no <answer> block, no reward; truncated and untagged completions earn nothing
    assert score(r"so \boxed{4}", "4", "numerical") == 0.0
    assert score("<think>2+2</think><answer>4", "4", "numerical") == 0.0  # cut off before </answer>
    assert score("4", "4", "numerical") == 0.0
    reward = AccuracyReward()
    reward(["4"], solution=["4"], problem_type=["numerical"])
    assert reward.metrics() == {"accuracy/no_answer": 1.0}


def test_fallbacks_are_an_explicit_option():
    assert score(r"so \boxed{4}", "4", "numerical", answer_fallbacks=("boxed",)) == 1.0
    assert score("4", "4", "numerical", answer_fallbacks=("boxed",)) == 0.0
    assert score("4", "4", "numerical", answer_fallbacks=("boxed", "text")) == 1.0
    with pytest.raises(ValueError, match="fallback"):
        AccuracyReward(answer_fallbacks=("nope",))


@pytest.mark.parametrize("kind", ["numerical", "multiple_choice", "ocr", "free_form", "math"])
def test_empty_solution_rewards_nothing(kind):
    # an empty answer used to match an empty solution under ocr (ANLS of two empty strings was 1)
    reward = AccuracyReward()
    out = reward(
        ["<answer></answer>", "<answer> x </answer>"], solution=["<answer> </answer>", ""], problem_type=[kind, kind]
    )
    assert out.tolist() == [0.0, 0.0]
    assert reward.metrics() == {"accuracy/empty_solution": 2.0}


def test_solution_error_names_the_solutions_no_answer_can_match():
    # the data scan asks this of every row (datamodules.scan): a solution the reward scores 0 for any answer
    assert [
        solution_error(s) for s in ("<answer> 12 </answer>", "Yes", 12, 0.5, "<answer>B</answer> <answer>C</answer>")
    ] == [None] * 5
    assert solution_error(None) == solution_error(float("nan")) == "no solution"
    assert solution_error("<answer> </answer>") == "empty solution '<answer> </answer>'"
    assert solution_error("  ") == "empty solution '  '"
    assert solution_error("<answer> 3") == "unbalanced <answer> tags in the solution '<answer> 3'"
    assert solution_error({"a": 1}) == "the solution is a dict, not text or a number: \"{'a': 1}\""
    assert score("<answer> </answer>", "<answer> </answer>", "ocr") == 0.0  # what "empty" costs in training


def test_unknown_problem_type_raises():
    with pytest.raises(ValueError, match="unknown problem_type"):
        score("<answer>1</answer>", "1", "regressionz")


def test_missing_solution_column_names_it():
    with pytest.raises(KeyError, match="solution"):
        AccuracyReward()(["x"], problem_type=["numerical"])


def test_misaligned_columns_raise_and_unrelated_columns_pass_through():
    with pytest.raises(ValueError, match="solution"):
        AccuracyReward()(["x", "y"], solution=["1"], problem_type=["numerical", "numerical"])
    out = AccuracyReward()(
        ["<answer>1</answer>"], solution=["1"], problem_type=["numerical"], skipped_messages=[], skipped={}
    )
    assert out.tolist() == [1.0]


def test_overlong_answer_scores_zero_and_is_counted():
    reward = AccuracyReward(max_answer_chars=10)
    assert reward(["<answer>" + "a" * 11 + "</answer>"], solution=["a"], problem_type=["ocr"]).item() == 0.0
    assert reward.metrics() == {"accuracy/answer_too_long": 1.0}


def test_integers_compare_exactly_and_decimals_within_tolerance():
    from rewards.scoring import score_numerical

    assert score_numerical("10001", "10000") == 0.0  # rel_tol 1e-4 x 10000 = 1 would have accepted it
    assert score_numerical("123450", "123456") == 0.0
    assert score_numerical("10000", "10,000") == 1.0
    assert score_numerical("3.14159", "3.1416") == 1.0  # |diff| 1e-5 <= 1e-6 + 1e-4 x 3.1416
