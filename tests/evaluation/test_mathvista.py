"""MathVista testmini rules (lupantech/MathVista evaluation/calculate_score.py), scored by hand in the comments."""

import json
from pathlib import Path

import pytest

from datamodules.benchmarks import convert_benchmark
from evaluation import score_completions
from evaluation.mathvista import MathVistaQuestion, normalise, question
from tests.evaluation.published import write_images

ANIMALS = ["the cat", "the dog", "the bird"]


def _problem(pid, question_type, answer_type, answer, meta, choices=None, precision=None):
    return {
        "question": f"Question {pid}?",
        "image": f"images/{pid}.jpg",
        "choices": choices,
        "unit": None,
        "precision": precision,
        "answer": answer,
        "question_type": question_type,
        "answer_type": answer_type,
        "pid": pid,
        "metadata": {"split": "testmini", "language": "english", **meta},
    }


def _meta(category, source, grade, skills):
    return {
        "category": category,
        "source": source,
        "task": "figure question answering",
        "context": "natural image",
        "grade": grade,
        "skills": skills,
    }


# testmini.json: a dict keyed by pid; answers are strings; multi_choice answers are the option's text
PROBLEMS = {
    "1": _problem(
        "1",
        "multi_choice",
        "text",
        "the dog",
        _meta("general-vqa", "FigureQA", "elementary school", ["numeric commonsense"]),
        ANIMALS,
    ),
    "2": _problem(
        "2",
        "multi_choice",
        "text",
        "the dog",
        _meta("general-vqa", "FigureQA", "elementary school", ["numeric commonsense", "logical reasoning"]),
        ANIMALS,
    ),
    "3": _problem(
        "3",
        "free_form",
        "integer",
        "12",
        _meta("math-targeted-vqa", "Super-CLEVR", "high school", ["arithmetic reasoning"]),
    ),
    "4": _problem(
        "4",
        "free_form",
        "float",
        "1.5",
        _meta("math-targeted-vqa", "SciBench", "college", ["scientific reasoning"]),
        precision=1,
    ),
    "5": _problem(
        "5",
        "free_form",
        "float",
        "0.21",
        _meta("math-targeted-vqa", "SciBench", "college", ["scientific reasoning", "arithmetic reasoning"]),
        precision=2,
    ),
    "6": _problem(
        "6",
        "free_form",
        "list",
        "[2014, 2016]",
        _meta("general-vqa", "ChartQA", "daily life", ["statistical reasoning"]),
    ),
    "7": _problem(
        "7",
        "free_form",
        "list",
        "[2014, 2016]",
        _meta("general-vqa", "ChartQA", "daily life", ["statistical reasoning"]),
    ),
    "8": _problem(
        "8",
        "free_form",
        "integer",
        "3",
        _meta("math-targeted-vqa", "Super-CLEVR", "elementary school", ["arithmetic reasoning"]),
    ),
    "9": _problem(
        "9",
        "multi_choice",
        "text",
        "the bird",
        _meta("general-vqa", "FigureQA", "elementary school", ["logical reasoning"]),
        ANIMALS,
    ),
    "10": _problem(
        "10",
        "free_form",
        "integer",
        "7",
        _meta("math-targeted-vqa", "Super-CLEVR", "high school", ["arithmetic reasoning"]),
    ),
}

COMPLETIONS = {
    "1": "<think>Count.</think><answer>B</answer>",  # the letter B -> "the dog": right
    "2": "<answer>a dog</answer>",  # paraphrase: Levenshtein 6 / 3 / 7 to the three options -> "the dog": right
    "3": "<answer>12.7</answer>",  # integer: str(int(float("12.7"))) == "12" (int truncates): right
    "4": "<answer>1.54</answer>",  # float, precision 1: str(round(1.54, 1)) == "1.5": right
    "5": "<answer>0.2</answer>",  # float, precision 2: "0.2" != "0.21": wrong
    "6": "<answer>[2014, 2016]</answer>",  # list: the same text: right
    "7": "<answer>[2014,2016]</answer>",  # list: str() keeps the text; no space after the comma: wrong
    "8": "<answer>3 cats</answer>",  # integer: float("3 cats") fails -> None: wrong
    "9": "I pick (C) the bird.",  # no <answer> block: the whole reply; "(C)" -> C -> "the bird": right
    # "10": no prediction: wrong, and counted as missing
}
RIGHT = {"1", "2", "3", "4", "6", "9"}  # 6 of 10


def write_mathvista(folder: Path) -> Path:
    write_images(folder, [p["image"] for p in PROBLEMS.values()])
    path = folder / "testmini.json"
    path.write_text(json.dumps(PROBLEMS, indent=2))
    return path


def test_rules_by_hand():
    rows = [(PROBLEMS[pid], COMPLETIONS.get(pid)) for pid in PROBLEMS]
    result = score_completions("mathvista", rows)
    assert {q["id"] for q in result["questions"] if q["correct"]} == RIGHT
    assert (result["accuracy"], result["correct"], result["count"], result["missing"]) == (0.6, 6, 10, 1)
    by_id = {q["id"]: q for q in result["questions"]}
    assert by_id["2"]["answer"] == "a dog" and by_id["2"]["prediction"] == "the dog"
    assert by_id["3"]["prediction"] == "12" and by_id["8"]["prediction"] is None
    assert by_id["10"] == {**by_id["10"], "missing": True, "correct": 0, "answer": None}
    cats = result["categories"]
    assert list(cats) == [
        "question_type",
        "answer_type",
        "language",
        "source",
        "category",
        "task",
        "context",
        "grade",
        "skills",
    ]
    rate = {field: {v: (r["correct"], r["count"]) for v, r in values.items()} for field, values in cats.items()}
    assert rate["question_type"] == {"free_form": (3, 7), "multi_choice": (3, 3)}
    assert rate["answer_type"] == {"float": (1, 2), "integer": (1, 3), "list": (1, 2), "text": (3, 3)}
    assert rate["category"] == {"general-vqa": (4, 5), "math-targeted-vqa": (2, 5)}
    assert rate["grade"] == {
        "college": (1, 2),
        "daily life": (1, 2),
        "elementary school": (3, 4),
        "high school": (1, 2),
    }
    # skills is a list: a question counts once for each of its skills
    assert rate["skills"] == {
        "arithmetic reasoning": (1, 4),
        "logical reasoning": (2, 2),
        "numeric commonsense": (2, 2),
        "scientific reasoning": (1, 2),
        "statistical reasoning": (1, 2),
    }
    assert cats["skills"]["arithmetic reasoning"]["accuracy"] == 0.25
    assert rate["language"] == {"english": (6, 10)}


def _mc(choices=ANIMALS):
    return MathVistaQuestion("x", "multi_choice", "text", choices[0], tuple(choices))


def test_multi_choice_quirks():
    assert normalise("C", _mc()) == "the bird"
    assert normalise("(b) because", _mc()) == "the dog"  # "(b)" in any case is the letter B
    assert normalise("I think (C), not (A)", _mc()) == "the bird"  # the first bracketed letter
    # only an exact capital letter picks by position; "b" and "B." go to Levenshtein like any text
    assert normalise("b", _mc(["b", "B", "c"])) == "b"
    assert normalise("B.", _mc(["red", "B", "blue"])) == "B"  # nearest text, not "the option B"
    assert normalise("D", _mc()) == "the cat"  # no option D: Levenshtein("D", ...) = 7 / 7 / 8 -> the first of equals
    # an empty answer: every distance is the option's length -> the shortest option (upstream's default)
    assert normalise("", _mc()) == "the cat"
    assert normalise("", _mc(["a long one", "short"])) == "short"


def test_numbers_are_read_by_python_float():
    integer = MathVistaQuestion("x", "free_form", "integer", "0")
    assert normalise("-0.5", integer) == "0"  # int() truncates toward zero
    assert normalise("1e3", integer) == "1000" and normalise("1_000", integer) == "1000"
    assert normalise(" 12\n", integer) == "12"
    assert normalise("1,234", integer) is None and normalise("inf", integer) is None and normalise("", integer) is None
    floating = MathVistaQuestion("x", "free_form", "float", "1.4", precision=1)
    assert normalise("1.45", floating) == "1.4"  # round() on the binary float 1.4499999...
    assert normalise("2", floating) == "2.0"
    assert normalise("12 cm", floating) is None


def test_bad_rows_are_errors_naming_the_row_and_key():
    with pytest.raises(ValueError, match=r"where: key 'answer' 'the fish' is not one of the 'choices'"):
        question({**PROBLEMS["1"], "answer": "the fish"}, "1", "where")
    with pytest.raises(ValueError, match=r"where: no value for key 'question_type'"):
        question({k: v for k, v in PROBLEMS["1"].items() if k != "question_type"}, "1", "where")
    with pytest.raises(ValueError, match=r"where: key 'answer' is 12, not a string"):
        question({**PROBLEMS["3"], "answer": 12}, "3", "where")
    with pytest.raises(ValueError, match=r"where: answer_type float needs an integer 'precision'"):
        question({**PROBLEMS["4"], "precision": None}, "4", "where")
    with pytest.raises(ValueError, match=r"key 'answer_type' 'text'"):
        question({**PROBLEMS["3"], "answer_type": "text"}, "3", "where")


def test_converted_rows_score_the_same(tmp_path):
    rows = [json.loads(line) for line in convert_benchmark("mathvista", write_mathvista(tmp_path)).open()]
    result = score_completions("mathvista", [(row, COMPLETIONS.get(row["id"])) for row in rows])
    assert {q["id"] for q in result["questions"] if q["correct"]} == RIGHT
    # the converted rows keep only the category (metadata.category)
    assert list(result["categories"]) == ["category"]
    assert result["categories"]["category"]["general-vqa"] == {"accuracy": 0.8, "correct": 4, "count": 5}
