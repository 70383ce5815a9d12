"""MathVision rules (mathllm/MATH-V evaluation/evaluate.py, utils.py), scored by hand in the comments."""

import json
from pathlib import Path

import pytest

from datamodules.benchmarks import convert_benchmark
from evaluation import score_completions
from evaluation.mathvision import find_math_answer, is_equal, model_answer, question
from tests.evaluation.published import write_images

OPTIONS = ["1", "2", "3", "4", "5"]


def _problem(id, answer, options, subject, level):
    return {
        "id": id,
        "question": f"<image1>Question {id}?",
        "options": options,
        "image": f"images/{id}.jpg",
        "answer": answer,
        "solution": None,
        "level": level,
        "subject": subject,
    }


# MathVision's JSONL: options (a list, empty for a free answer), answer (a letter when there are options)
PROBLEMS = [
    _problem("1", "C", OPTIONS, "counting", 1),
    _problem("2", "B", OPTIONS, "counting", 2),
    _problem("3", "\\frac{1}{2}", [], "algebra", 2),
    _problem("4", "6", [], "arithmetic", 1),
    _problem("5", "12", [], "arithmetic", 1),
    _problem("6", "\\frac{1}{3}", [], "algebra", 3),
]
COMPLETIONS = {
    "1": "<answer>C</answer>",  # lower-cased "c" equals "c": right
    "2": "<answer>2</answer>",  # not the letter, but the right option's text "2": right
    "3": "<answer>0.5</answer>",  # "0.5" becomes \frac{1}{2}: the same text: right
    "4": "<answer>The answer is 7.</answer>",  # cut after "is " -> "7": wrong
    "5": "<think>...</think><answer>\\boxed{12}</answer>",  # the boxed content: right
    "6": "<answer>0.33</answer>",  # LaTeX values to 2 decimals: round(1/3, 2) == 0.33: right
}
RIGHT = {"1", "2", "3", "5", "6"}


def write_mathvision(folder: Path) -> Path:
    write_images(folder, [p["image"] for p in PROBLEMS])
    path = folder / "test.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path


def test_rules_by_hand():
    result = score_completions("mathvision", [(p, COMPLETIONS[p["id"]]) for p in PROBLEMS])
    assert {q["id"] for q in result["questions"] if q["correct"]} == RIGHT
    assert (result["correct"], result["count"], result["missing"]) == (5, 6, 0)
    assert [q["prediction"] for q in result["questions"]] == ["c", "2", "\\frac{1}{2}", "7", "12", "0.33"]
    assert result["categories"]["subject"] == {
        "algebra": {"accuracy": 1.0, "correct": 2, "count": 2},
        "arithmetic": {"accuracy": 0.5, "correct": 1, "count": 2},
        "counting": {"accuracy": 1.0, "correct": 2, "count": 2},
    }
    assert {v: r["count"] for v, r in result["categories"]["level"].items()} == {"1": 3, "2": 2, "3": 1}


def test_reading_the_reply():
    assert model_answer("so it is B.") == "b"  # " B." at the end
    assert model_answer("(D)\nbecause the angle ...") == "d"
    assert model_answer("The correct answer is 42. It follows from the figure.") == "42"
    assert model_answer("\\boxed{3} or maybe \\boxed{4}") == "4"  # several boxes: the last
    assert model_answer("x = 3") == "3"  # the text after "="
    assert model_answer("1/2") == "\\frac{1}{2}"
    assert model_answer("90^\\circ") == "90"
    assert find_math_answer("\\frac12") == "\\frac12"  # braces are added only when the text also has sqrt
    assert find_math_answer("\\sqrt3\\frac12") == "\\sqrt{3}\\frac{1}{2}"


def test_equivalence():
    assert is_equal("\\frac{\\sqrt{3}}{2}", "0.866")  # both evaluate to 0.87
    assert is_equal("(1,2)", "(1, 2)") and is_equal("[3.00,4]", "[3.0001,4]")  # elements to 2 decimals
    # upstream's quirk: an integer element prints as "3", a decimal one as "3.0", so these lists differ
    assert not is_equal("[3,4]", "[3.0001,4]")
    assert not is_equal("(1,2)", "(2,1)")
    assert not is_equal("x+1", "y+1")  # free variables have no value
    assert not is_equal("", "") and not is_equal("6", " ")  # an empty side is never equal


def test_bad_rows_are_errors():
    with pytest.raises(ValueError, match=r"w: key 'answer' 'F' is not the letter of one of the 5 options"):
        question({**PROBLEMS[0], "answer": "F"}, "1", "w")
    with pytest.raises(ValueError, match=r"w: no key 'options'"):
        question({k: v for k, v in PROBLEMS[0].items() if k != "options"}, "1", "w")


def test_converted_rows_score_the_same(tmp_path):
    rows = [json.loads(line) for line in convert_benchmark("mathvision", write_mathvision(tmp_path)).open()]
    result = score_completions("mathvision", [(row, COMPLETIONS[row["id"]]) for row in rows])
    assert {q["id"] for q in result["questions"] if q["correct"]} == RIGHT
    assert list(result["categories"]) == ["subject"]  # a converted row has no level
