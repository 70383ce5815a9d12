"""MMBench (CircularEval) and MMStar under VLMEvalKit's exact-matching rules, scored by hand in the comments."""

import json
from pathlib import Path

import pytest

from datamodules.benchmarks import convert_benchmark, read_published
from evaluation import score_completions
from evaluation.vlmevalkit import infer_option, question
from tests.evaluation.published import b64_png, write_tsv

MMBENCH_HEADER = [
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "image",
    "source",
    "l2-category",
    "comment",
    "split",
]


def _mmb(index, question, options, answer, category, l2, image):
    cells = (options + ["", "", "", ""])[:4]
    return [str(index), question, "nan", *cells, answer, category, image, "synthetic", l2, "nan", "dev"]


# VLMEvalKit's MMBench TSV: each question with its options rotated, copies at index + k * 1,000,000; a copy's image
# cell holds the index of the row with the image (VLMEvalKit's ImageBaseDataset resolves it).
MMBENCH_ROWS = [
    _mmb(1, "What colour is the square?", ["red", "green", "blue"], "A", "colour", "perception", b64_png("red")),
    _mmb(1000001, "What colour is the square?", ["green", "blue", "red"], "C", "colour", "perception", "1"),
    _mmb(2000001, "What colour is the square?", ["blue", "red", "green"], "B", "colour", "perception", "1"),
    _mmb(2, "Which shape is shown?", ["circle", "square"], "B", "shape", "perception", b64_png("green")),
    _mmb(1000002, "Which shape is shown?", ["square", "circle"], "A", "shape", "perception", "2"),
    _mmb(3, "Is it raining?", ["yes", "no"], "A", "weather", "reasoning", b64_png("blue")),
    _mmb(1000003, "Is it raining?", ["no", "yes"], "B", "weather", "reasoning", "3"),
]
MMBENCH_COMPLETIONS = {
    "1": "<answer>A</answer>",  # right
    "1000001": "<answer>(C) red</answer>",  # "C" is the one letter word, in the last 4 words: right
    "2000001": "<answer>The answer is B.</answer>",  # right -> question 1 right (every copy)
    "2": "<answer>B</answer>",  # right
    "1000002": "<answer>B</answer>",  # wrong (the rotated answer is A) -> question 2 wrong: one wrong copy
    "3": "<answer>yes</answer>",  # no letter; the only option text in the reply is "yes" (A): right
    # "1000003": no prediction -> question 3 wrong, 1 missing
}
# questions: 1 right, 2 wrong, 3 wrong -> accuracy 1/3; rows: 5 of 7 right on their own (the missing one is wrong)


def write_mmbench(folder: Path) -> Path:
    return write_tsv(folder / "MMBench_DEV_EN.tsv", MMBENCH_HEADER, MMBENCH_ROWS)


MMSTAR_HEADER = ["index", "question", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]
MMSTAR_ROWS = [
    ["0", "Which object is larger?", "cat", "dog", "car", "cup", "C", "coarse perception", "image scene", b64_png()],
    ["1", "How many dots?", "1", "2", "3", "4", "B", "math", "numeric commonsense", b64_png("red")],
    ["2", "Which is on top?", "book", "pen", "lamp", "box", "D", "coarse perception", "image style", b64_png("blue")],
]
MMSTAR_COMPLETIONS = {
    "0": "<answer>**C**</answer>",  # "*" becomes a space: the word C: right
    "1": "<answer>Cannot determine the answer</answer>",  # a refusal phrase -> Z: wrong
    "2": "<answer>D</answer>",  # right
}  # 2 of 3; each row is its own question (MMStar is not circular)


def write_mmstar(folder: Path) -> Path:
    return write_tsv(folder / "MMStar.tsv", MMSTAR_HEADER, MMSTAR_ROWS)


def _published(benchmark, path, completions):
    return [(record, completions.get(id)) for id, record in read_published(benchmark, path)]


def test_mmbench_circular_eval_by_hand(tmp_path):
    result = score_completions("mmbench", _published("mmbench", write_mmbench(tmp_path), MMBENCH_COMPLETIONS))
    assert (result["accuracy"], result["correct"], result["count"]) == (pytest.approx(1 / 3), 1, 3)
    assert (result["rows"], result["row_accuracy"], result["missing"]) == (7, pytest.approx(5 / 7), 1)
    by_id = {q["id"]: q for q in result["questions"]}
    assert [by_id[i]["question"] for i in ("1", "1000001", "2000001", "1000002")] == ["1", "1", "1", "2"]
    assert by_id["1000002"]["prediction"] == "B" and by_id["1000002"]["truth"] == "A"
    assert by_id["3"]["prediction"] == "A" and by_id["1000003"]["missing"]
    # per category after grouping: each question once
    assert result["categories"] == {
        "category": {
            "colour": {"accuracy": 1.0, "correct": 1, "count": 1},
            "shape": {"accuracy": 0.0, "correct": 0, "count": 1},
            "weather": {"accuracy": 0.0, "correct": 0, "count": 1},
        },
        "l2-category": {
            "perception": {"accuracy": 0.5, "correct": 1, "count": 2},
            "reasoning": {"accuracy": 0.0, "correct": 0, "count": 1},
        },
    }


def test_mmstar_scores_each_row(tmp_path):
    result = score_completions("mmstar", _published("mmstar", write_mmstar(tmp_path), MMSTAR_COMPLETIONS))
    assert (result["correct"], result["count"], result["missing"]) == (2, 3, 0)
    assert [q["prediction"] for q in result["questions"]] == ["C", "Z", "D"]
    assert result["categories"]["category"]["coarse perception"] == {"accuracy": 1.0, "correct": 2, "count": 2}
    assert result["categories"]["l2-category"]["numeric commonsense"]["accuracy"] == 0.0


def test_option_reading_rules():
    options = {"A": "red", "B": "green", "C": "blue circle"}
    assert infer_option("B", options) == "B"
    assert infer_option("(B) green", options) == "B"
    assert infer_option("I choose option B here", options) == "B"  # B is among the last 4 words
    assert infer_option("B is what I would pick, after some thought about it", options) == "Z"  # B too early
    assert infer_option("A or B", options) == "Z"  # two letters, no "answer is": nothing
    assert infer_option("A or B, so the correct answer is **B**", options) == "B"
    assert infer_option("the answer is d", {**options, "D": "pink"}) == "D"  # "answer is" ignores case
    assert infer_option("Z", options) == "Z"
    assert infer_option("a blue circle", options) == "C"  # the one option text in the reply
    assert infer_option("red or green", options) == "Z"  # two option texts
    assert infer_option("blue circle " * 10, options) == "Z"  # longer than twice the options' text
    assert infer_option("Failed to obtain answer via API", options) == "Z"
    assert infer_option("", options) == "Z"


def test_na_cells_are_no_options_and_bad_rows_are_errors():
    row = {"index": "5", "question": "q", "A": "yes", "B": "None", "C": "NA", "D": "", "answer": "A"}
    assert question(row, "5", "w").options == {"A": "yes"}  # pandas reads None / NA / empty as NaN
    with pytest.raises(ValueError, match=r"w: no value for key 'answer'"):
        question({**row, "answer": "nan"}, "5", "w")
    with pytest.raises(ValueError, match=r"w: key 'index' 'x5' is not an integer"):
        question(row, "x5", "w", circular=True)


def test_converted_rows_group_by_index_and_copies_share_images(tmp_path):
    out = convert_benchmark("mmbench", write_mmbench(tmp_path), tmp_path / "cache")
    rows = [json.loads(line) for line in out.open()]
    assert [r["id"] for r in rows] == [r[0] for r in MMBENCH_ROWS]
    assert rows[1]["image"] == rows[0]["image"]  # the copy's image cell "1" is row 1's image
    result = score_completions("mmbench", [(row, MMBENCH_COMPLETIONS.get(row["id"])) for row in rows])
    assert (result["correct"], result["count"], result["rows"]) == (1, 3, 7)
    assert list(result["categories"]) == ["category"]
