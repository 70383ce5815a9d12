"""MathVerse testmini: the rule-based part of its scoring (ZrrSkywalker/MathVerse evaluation/score_answer_s2.py
quick match; VLMEvalKit post_check_score), scored by hand in the comments."""

import json
from pathlib import Path

import pytest

from datamodules.benchmarks import convert_benchmark
from evaluation import score_completions
from evaluation.mathverse import normalise, question, score
from tests.evaluation.published import write_images

ANGLE = "As shown in the figure, angle A = 80.0, DE parallel BC, then the size of angle CED is ()"
ANGLE_CHOICES = "\nChoices:\nA:40°\nB:60°\nC:120°\nD:140°"


def _sample(index, problem, version, question_text, answer, kind, subject, subfield):
    image = (
        f"images_version_{6 if version == 'Vision Only' else 5 if version == 'Vision Dominant' else '1-4'}/"
        f"image_{problem}.png"
    )
    return {
        "sample_index": index,
        "problem_index": problem,
        "problem_version": version,
        "question": question_text,
        "image": image,
        "answer": answer,
        "question_type": kind,
        "metadata": {"split": "testmini", "source": "GeoQA", "subject": subject, "subfield": subfield},
        "query_wo": "Please directly answer the question ...",
        "query_cot": "Please first conduct reasoning ...",
    }


# testmini.json: a list; ids are strings; options live in the question text (or, for Vision Only, in the image)
SAMPLES = [
    _sample("1", "1", "Text Dominant", ANGLE + ANGLE_CHOICES, "D", "multi-choice", "Plane Geometry", "Angle"),
    _sample("2", "1", "Text Lite", "Find angle CED." + ANGLE_CHOICES, "D", "multi-choice", "Plane Geometry", "Angle"),
    _sample("3", "1", "Vision Only", "", "D", "multi-choice", "Plane Geometry", "Angle"),
    _sample(
        "4",
        "2",
        "Text Dominant",
        "Is this a function?\nChoices:\nA:Yes\nB:No",
        "(A)",
        "multi-choice",
        "Functions",
        "Coordinate",
    ),
    _sample(
        "5",
        "3",
        "Text Dominant",
        "He walks 12 km west and 9 km south. Find h.",
        "$h=15$",
        "free-form",
        "Plane Geometry",
        "Length",
    ),
    _sample(
        "6", "4", "Text Lite", "Find L, rounded down to the nearest cm.", "14", "free-form", "Solid Geometry", "Length"
    ),
    _sample(
        "7",
        "5",
        "Vision Intensive",
        "Find the surface area.",
        "768 \\mathrm{cm}^2",
        "free-form",
        "Solid Geometry",
        "Area",
    ),
    _sample("8", "6", "Vision Dominant", "Find h to one decimal place.", "4.4", "free-form", "Solid Geometry", "Area"),
    _sample("9", "2", "Vision Only", "", "(A)", "multi-choice", "Functions", "Coordinate"),
]
COMPLETIONS = {
    "1": "<answer>D</answer>",  # the letter: right
    "2": "<answer>D:140°</answer>",  # the option as the question writes it, starting with its letter: right
    "3": "<answer>140°</answer>",  # Vision Only: the options are in the image, so no text to match: wrong
    "4": "<answer>Yes</answer>",  # the text of option A, listed in the question; the answer "(A)" is A: right
    "5": "<answer>15</answer>",  # only the standard answer is an equation: its right side "15": right
    "6": "<answer>14 cm</answer>",  # a unit the standard answer lacks: wrong here (the GPT judge would accept it)
    "7": "<answer>768 cm^2</answer>",  # \mathrm{cm} unwrapped, spaces dropped: "768cm^2" on both sides: right
    "8": "<answer>4.40</answer>",  # two plain numbers, equal: right
    # "9": no prediction: wrong, missing
}
RIGHT = {"1", "2", "4", "5", "7", "8"}  # 6 of 9


def write_mathverse(folder: Path) -> Path:
    write_images(folder, [s["image"] for s in SAMPLES])
    path = folder / "testmini.json"
    path.write_text(json.dumps(SAMPLES, indent=4, ensure_ascii=False))
    return path


def test_rules_by_hand():
    result = score_completions("mathverse", [(s, COMPLETIONS.get(s["sample_index"])) for s in SAMPLES])
    assert {q["id"] for q in result["questions"] if q["correct"]} == RIGHT
    assert (result["correct"], result["count"], result["missing"]) == (6, 9, 1)
    rate = {f: {v: (r["correct"], r["count"]) for v, r in values.items()} for f, values in result["categories"].items()}
    assert rate["problem_version"] == {
        "Text Dominant": (3, 3),
        "Text Lite": (1, 2),
        "Vision Dominant": (1, 1),
        "Vision Intensive": (1, 1),
        "Vision Only": (0, 2),
    }
    assert rate["subject"] == {"Functions": (1, 2), "Plane Geometry": (3, 4), "Solid Geometry": (2, 3)}
    assert rate["subfield"] == {
        "Functions-Coordinate": (1, 2),
        "Plane Geometry-Angle": (2, 3),
        "Plane Geometry-Length": (1, 1),
        "Solid Geometry-Area": (2, 2),
        "Solid Geometry-Length": (0, 1),
    }


def test_letters_and_normal_forms():
    q = question(SAMPLES[0], "1", "w")
    assert q.letter == "D" and q.choices == ("40°", "60°", "120°", "140°")
    assert score(q, "(D)") == (True, "D") and score(q, "D. 140°") == (True, "D")
    assert score(q, "B:60°") == (False, "B")  # the judge's own example: a wrong letter with its option is wrong
    assert score(q, "140°") == (True, "D")  # the option's text, listed in the question
    assert score(q, "The answer is D") == (True, "D")
    assert normalise("$\\dfrac{1}{2}$ .") == "\\frac{1}{2}" and normalise("60^{\\circ}") == "60"
    ff = question(SAMPLES[4], "5", "w")
    assert score(ff, "h = 15")[0] and score(ff, "$h=15$")[0] and not score(ff, "x=15")[0]
    assert not score(ff, "")[0]


def test_bad_rows_are_errors():
    with pytest.raises(ValueError, match=r"w: key 'answer' 'D or C' is not an option letter"):
        question({**SAMPLES[0], "answer": "D or C"}, "1", "w")
    with pytest.raises(ValueError, match=r"w: key 'question_type' 'essay'"):
        question({**SAMPLES[0], "question_type": "essay"}, "1", "w")


def test_converted_rows(tmp_path):
    rows = [json.loads(line) for line in convert_benchmark("mathverse", write_mathverse(tmp_path)).open()]
    assert [r["id"] for r in rows] == [s["sample_index"] for s in SAMPLES]
    assert rows[0]["choices"] == ["40°", "60°", "120°", "140°"] and rows[0]["problem"] == ANGLE + ANGLE_CHOICES
    assert rows[2]["problem"].startswith("According to the question shown in the image") and rows[2]["choices"] is None
    assert [r["solution"] for r in rows[:5]] == ["D", "D", "D", "A", "$h=15$"]
    assert [r["problem_type"] for r in rows[3:5]] == ["multiple_choice", "math"]
    assert rows[6]["category"] == "Vision Intensive"  # the version: the benchmark's headline split
    result = score_completions("mathverse", [(row, COMPLETIONS.get(row["id"])) for row in rows])
    assert {q["id"] for q in result["questions"] if q["correct"]} == RIGHT
    assert list(result["categories"]) == ["problem_version"]


def test_text_only_file_cannot_be_converted(tmp_path):
    text_only = [{**SAMPLES[0], "problem_version": "Text Only", "image": ""}]
    (tmp_path / "testmini_text_only.json").write_text(json.dumps(text_only))
    with pytest.raises(ValueError, match=r"problem 1: no image \(testmini_text_only.json has none"):
        convert_benchmark("mathverse", tmp_path / "testmini_text_only.json", tmp_path / "cache")
