import pytest
import torch

from rewards import AccuracyReward


def score(completion, solution, problem_type, **kwargs):
    return AccuracyReward(**kwargs)([completion], solution=[solution], problem_type=[problem_type]).item()


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        ("<answer>1,234</answer>", "1234", 1.0),
        ("<answer>12 cm</answer>", "<answer> 12 </answer>", 1.0),
        ("<answer>3.0</answer>", "3", 1.0),
        ("<answer>50%</answer>", "0.5", 1.0),  # % divides by 100
        ("<answer>50</answer>", "50%", 0.0),  # 50 != 0.5
        ("<answer>3.1</answer>", "3", 0.0),
        ("<answer>none</answer>", "3", 0.0),
    ],
)
def test_numerical(completion, solution, expected):
    assert score(completion, solution, "numerical") == expected


def test_numerical_tolerance_is_configurable():
    assert score("<answer>3.04</answer>", "3", "numerical", rel_tol=0.02) == 1.0
    assert score("<answer>3.04</answer>", "3", "numerical", rel_tol=0.01) == 0.0


@pytest.mark.parametrize("pred", ["B", "(B)", "B.", "B) 12 cm", "The answer is B"])
def test_multiple_choice(pred):
    assert score(f"<answer>{pred}</answer>", "(B) 12 cm", "multiple choice") == 1.0
    assert score(f"<answer>{pred}</answer>", "C", "multiple_choice") == 0.0


@pytest.mark.parametrize(
    "pred, truth, expected",
    [(r"\frac{1}{2}", "0.5", 1.0), (r"\sqrt{4}", "2", 1.0), ("2/4", r"\frac{1}{2}", 1.0), ("x+1", "1+x", 1.0),
     ("3", r"\frac{1}{2}", 0.0)],
)  # fmt: skip
def test_math(pred, truth, expected):
    assert score(f"<answer>{pred}</answer>", truth, "math") == expected


def test_ocr_anls_by_hand():
    # "hellp" vs "hello": edit distance 1, longer length 5 -> 1 - 1/5 = 0.8; case is ignored
    assert score("<answer>HELLP</answer>", "hello", "OCR") == pytest.approx(0.8)
    # with threshold 0.9, 0.8 falls below -> 0
    assert score("<answer>hellp</answer>", "hello", "ocr", anls_threshold=0.9) == 0.0
    assert score("<answer>Hello</answer>", "hello", "ocr") == 1.0


def test_free_form_rouge_by_hand():
    # pred "red", truth "red circle": ROUGE-1 P=1 R=1/2 F=2/3; ROUGE-2 F=0 (pred has no bigram); ROUGE-L F=2/3
    # mean = (2/3 + 0 + 2/3) / 3 = 4/9
    assert score("<answer>red</answer>", "red circle", "free-form") == pytest.approx(4 / 9, abs=1e-4)
    assert score("<answer>Red Circle</answer>", "red circle", "free_form") == 1.0


def test_per_sample_dispatch_not_first_row():
    # the same text "2" is right as a number and as math; as a choice it names no letter -> 0
    reward = AccuracyReward()
    out = reward(
        ["<answer>2</answer>"] * 3, solution=["2", "2", "B"], problem_type=["numerical", "math", "multiple_choice"]
    )
    assert out.tolist() == [1.0, 1.0, 0.0]
    assert out.dtype == torch.float32 and out.shape == (3,)


def test_fallbacks_configurable():
    assert score(r"so \boxed{4}", "4", "numerical") == 1.0
    assert score(r"so \boxed{4}", "4", "numerical", answer_fallbacks=()) == 0.0


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
