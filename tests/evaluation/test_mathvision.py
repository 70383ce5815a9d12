"""MathVision rules (mathllm/MATH-V evaluation/evaluate.py, utils.py), scored by hand in the comments."""

import json
from pathlib import Path

import pytest

from datamodules.benchmarks import convert_benchmark
from evaluation import score_completions
from evaluation.mathvision import eval_tuple, find_math_answer, is_equal, model_answer, question, score
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
    assert is_equal("(1,2)", "(1, 2)")  # elements to 2 decimals
    # upstream's quirk: an element equal to an integer prints as "3" ("3.00" is the fraction 3 to latex2sympy2), any
    # other as a float ("3.0001" -> "3.0"), so these lists differ (MATH-V's utils.is_equal: False for both); lenient
    # scoring keeps our earlier reading of "3.00" as the float 3.0
    assert (eval_tuple("[3.00,4]"), eval_tuple("[3.0001,4]"), eval_tuple("(1.0,2.0)")) == ("[3,4]", "[3.0,4]", "(1,2)")
    assert not is_equal("[3.00,4]", "[3.0001,4]") and not is_equal("[3,4]", "[3.0001,4]")
    assert is_equal("[3.00,4]", "[3.0001,4]", lenient=True) and not is_equal("(1,2)", "(1.0,2.0)", lenient=True)
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


# MATH-V's own verdicts: mathllm/MATH-V at a1f5cc3add200c0cd080fad463e500f44ef1fb41, evaluation/evaluate.py and
# evaluation/utils.py (both last changed in 1d361180b02cbff417c77c02acf1b4cacf2d55ea), run unmodified; see
# test_official_verdicts for how. (answer, options, reply, official verdict, lenient verdict)
MIXED = ["-3", "3", "3/2", "7/2", "0"]
OFFICIAL = [
    # mixed numbers: latex2sympy2 multiplies side-by-side factors, 3\frac{1}{2} = 3 * 1/2 = 1.5
    ("7/2", [], "3\\frac{1}{2}", False, True),
    ("\\frac{7}{2}", [], "3\\frac{1}{2}", False, True),
    ("3.5", [], "\\boxed{3\\frac{1}{2}}", False, True),
    ("1.5", [], "3\\frac{1}{2}", True, False),
    ("11/4", [], "2\\frac{3}{4}", False, True),
    ("1.5", [], "2\\frac{3}{4}", True, False),
    ("3/2", [], "1\\dfrac{1}{2}", False, True),
    ("1/2", [], "1\\dfrac{1}{2}", True, False),
    ("3/2", [], "1\\tfrac12", False, False),  # \frac12 stays unbraced (no sqrt in the text): no parse either way
    ("1", [], "2\\frac{1}{2}", True, False),
    ("-7/2", [], "-3\\frac{1}{2}", False, True),
    ("-3/2", [], "-3\\frac{1}{2}", True, False),
    ("7/2", [], "x = 3\\frac{1}{2}", False, True),
    ("7/2", [], "3+\\frac{1}{2}", True, True),
    ("1.5", [], "(3)\\frac{1}{2}", True, True),  # not digits before \frac: a product in both readings
    ("2\\frac{1}{2}", [], "1", True, False),  # the published answer is read the same way
    ("(1.5,1)", [], "(3\\frac{1}{2},1)", True, False),
    ("D", MIXED, "3\\frac{1}{2}", False, True),  # option D is 7/2
    ("C", MIXED, "3\\frac{1}{2}", True, False),  # option C is 3/2
    # other side-by-side factors (latex2sympy2_extended alone reads 2(3) as 5)
    ("6", [], "2(3)", True, True),
    ("5", [], "2(3)", False, False),
    ("6", [], "3\\sqrt{4}", True, True),
    ("1", [], "\\frac{4}{2}\\frac{1}{2}", True, True),
    # characters outside ASCII: latex2sympy2 parses none of them
    ("-3", [], "\u22123", False, True),  # U+2212 minus
    ("-3", [], "The answer is \u22123", False, True),
    ("-0.5", [], "\u22120.5", False, True),
    ("(-1,2)", [], "(\u22121,2)", False, True),
    ("-3", [], "\u20133", False, False),  # U+2013 en dash
    ("-3", [], "\uff0d3", False, False),  # fullwidth hyphen-minus
    ("3", [], "\uff0b3", False, False),  # fullwidth plus
    ("3", [], "\uff13", False, False),  # fullwidth digit
    ("C", ["1", "2", "3", "4", "5"], "\uff23", False, False),  # fullwidth letter
    ("12", [], "3\u00d74", False, True),  # multiplication sign
    ("3.14", [], "\u03c0", False, True),
    ("1/2", [], "\u00bd", False, False),
    ("A", MIXED, "\u22123", False, True),
    ("\u22123", [], "\u22123", True, True),  # equal text needs no parse
    ("-3", [], "\u00a0-3", True, True),  # no-break space: stripped before parsing
    # what Python's eval cannot compute among math's names: E, Abs
    ("2.72", [], "e", False, True),
    ("5", [], "|-5|", False, True),
    ("6.28", [], "\\tau", True, False),  # math.tau
    # decimals as fractions, braces as a group
    ("(1,2)", [], "(1.0,2.0)", True, False),
    ("[3.00,4]", [], "[3.0001,4]", False, True),
    ("2", [], "\\text{2}", True, False),  # read as {2}
]


@pytest.mark.parametrize(("answer", "options", "reply", "official", "lenient"), OFFICIAL)
def test_official_verdicts(answer, options, reply, official, lenient):
    """The default verdict is MATH-V's own; ``lenient`` reads the mathematical value.

    How the official verdicts were produced: MATH-V's ``evaluation/evaluate.py`` and ``evaluation/utils.py`` (commit
    above) were run unmodified in a separate virtualenv with their parser, ``latex2sympy2`` 1.9.1
    (``antlr4-python3-runtime`` 4.7.2), under sympy 1.12 and 1.14 (the same verdicts): each row here was written to
    a ``data/test.jsonl`` (``id``, ``answer``, ``options``, ``subject``, ``level``) and its reply to an answer file
    (``id``, ``response``), ``evaluate.evaluate(answer_file, regen_answer=True)`` ran, and its ``correct`` field is
    the verdict. The lenient column is our ``lenient=True`` reading, checked by hand (3\\frac{1}{2} = 7/2)."""
    row = {"id": "1", "question": "q", "options": options, "answer": answer, "subject": "s", "level": 1}
    q = question(row, "1", "w")
    assert score(q, reply)[0] is official
    assert score(q, reply, lenient=True)[0] is lenient


def test_lenient_scoring_through_score_completions():
    rows = [
        (_problem("1", "7/2", [], "arithmetic", 1), "<answer>3\\frac{1}{2}</answer>"),
        (_problem("2", "-3", [], "arithmetic", 1), "<answer>\u22123</answer>"),
    ]
    official = score_completions("mathvision", rows)
    lenient = score_completions("mathvision", rows, lenient=True)
    assert (official["correct"], official["lenient"]) == (0, False)
    assert (lenient["correct"], lenient["lenient"]) == (2, True)
    with pytest.raises(ValueError, match="mmstar has no lenient reading .* offered for mathvision"):
        score_completions("mmstar", [], lenient=True)
