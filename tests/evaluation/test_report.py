"""Per-question records -> the summary and its table, worked out by hand."""

from evaluation.report import format_table, summarise


def _record(id, question, correct, missing=False, category="a"):
    return {
        "id": id,
        "question": question,
        "categories": {"category": category},
        "correct": correct,
        "missing": missing,
    }


# question 1: three copies, one without a prediction, the two others right; question 2: its main row missing;
# question 3: one row, wrong; question 4: one row, right
RECORDS = [
    _record("1", "1", 1),
    _record("1000001", "1", 0, missing=True),
    _record("2000001", "1", 1),
    _record("2", "2", 0, missing=True, category="b"),
    _record("1000002", "2", 1, category="b"),
    _record("3", "3", 0),
    _record("4", "4", 1),
]


def test_answered_counts_what_the_official_scripts_score():
    summary = summarise(RECORDS, ["category"])
    # missing rows count wrong: question 1 (a copy missing) and 2 are wrong, 4 is right -> 1 of 4
    assert (summary["accuracy"], summary["correct"], summary["count"], summary["missing"]) == (0.25, 1, 4, 2)
    # as the official scripts count: question 2 is not scored (its main row has no prediction); question 1 is right
    # on the copies it has -> 2 of 3
    assert summary["answered"] == {"accuracy": 2 / 3, "correct": 2, "count": 3}
    assert (summary["rows"], summary["row_accuracy"]) == (7, 4 / 7)


def test_table_puts_the_missing_rows_beside_the_accuracy():
    result = {
        "benchmark": "mmbench",
        **summarise(RECORDS, ["category"]),
        "official_missing": "VLMEvalKit: present only",
    }
    lines = format_table(result).splitlines()
    assert lines[:3] == [
        "mmbench: accuracy 0.2500 (1/4 questions; 2 row(s) without a prediction, counted wrong)",
        "  officially 0.6667 (2/3 answered questions): VLMEvalKit: present only",
        "  7 rows (CircularEval copies), row accuracy 0.5714",
    ]
    complete = summarise([_record("1", "1", 1), _record("2", "2", 0)], ["category"])
    lines = format_table({"benchmark": "mathvision", "lenient": True, **complete}).splitlines()
    assert lines[0] == "mathvision (lenient): accuracy 0.5000 (1/2 questions)"  # nothing missing: no second line
    assert lines[1:4] == ["", "category      accuracy   correct/count", "  a             0.5000             1/2"]
