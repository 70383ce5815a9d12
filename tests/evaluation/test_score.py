"""vlrl-score: benchmark files as published + vlrl predict JSON Lines -> the results JSON and a table."""

import json

import pytest

from datamodules.benchmarks import read_published
from evaluation import SCORERS, answer_text, score_predictions
from evaluation.score import main
from tests.evaluation import test_mathverse, test_mathvision, test_mathvista, test_vlmevalkit
from tests.evaluation.published import write_predictions


def test_answer_text_reads_the_answer_block_else_the_whole_reply():
    assert answer_text("<think>A?</think><answer> B </answer>") == "B"
    assert answer_text("<answer>A</answer> then <ANSWER>C</ANSWER>") == "C"  # the last block, tags in any case
    assert answer_text("  The answer is C.\n") == "The answer is C."  # no block: the whole reply
    assert answer_text("<answer></answer>") == ""  # an empty block stays empty
    assert answer_text("<answer>unclosed") == "<answer>unclosed"


def test_cli_on_mmbench_writes_the_results_json(tmp_path, capsys):
    tsv = test_vlmevalkit.write_mmbench(tmp_path)
    completions = test_vlmevalkit.MMBENCH_COMPLETIONS
    ids = list(completions)
    # vlrl predict on two ranks: predictions.jsonl and predictions.rank1.jsonl; rank 1 repeats a row (sampler padding)
    rank0 = write_predictions(tmp_path / "predictions.jsonl", {i: completions[i] for i in ids[:3]})
    rank1 = write_predictions(tmp_path / "predictions.rank1.jsonl", {i: completions[i] for i in ids[2:]})
    out = tmp_path / "scores" / "mmbench.json"
    assert (
        main(
            ["--benchmark", "mmbench", "--source", str(tsv), "--predictions", str(rank0), str(rank1), "--out", str(out)]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["accuracy"] == pytest.approx(1 / 3) and (result["correct"], result["count"]) == (1, 3)
    assert (result["missing"], result["rows"], result["row_accuracy"]) == (1, 7, pytest.approx(5 / 7))
    assert result["categories"]["l2-category"]["perception"] == {"accuracy": 0.5, "correct": 1, "count": 2}
    assert result["source"] == str(tsv) and result["predictions"] == [str(rank0), str(rank1)]
    assert [q["id"] for q in result["questions"]] == [id for id, _ in read_published("mmbench", tsv)]
    printed = capsys.readouterr()
    # the missing row beside the accuracy, and the figure VLMEvalKit would give: question 3 scored on its one copy
    headline = "mmbench: accuracy 0.3333 (1/3 questions; 1 row(s) without a prediction, counted wrong)"
    assert printed.out.startswith(headline + "\n  officially 0.6667 (2/3 answered questions): VLMEvalKit scores only")
    assert result["answered"] == {"accuracy": pytest.approx(2 / 3), "correct": 2, "count": 3}
    assert "row accuracy 0.7143" in printed.out and f"wrote {out}" in printed.out
    assert "1000003" in printed.err and "repeat an id" in printed.err  # missing and repeated, on stderr


@pytest.mark.parametrize(
    ("benchmark", "module", "writer", "completions", "accuracy"),
    [
        ("mathvista", test_mathvista, "write_mathvista", "COMPLETIONS", 0.6),
        ("mathvision", test_mathvision, "write_mathvision", "COMPLETIONS", 5 / 6),
        ("mathverse", test_mathverse, "write_mathverse", "COMPLETIONS", 6 / 9),
        ("mmstar", test_vlmevalkit, "write_mmstar", "MMSTAR_COMPLETIONS", 2 / 3),
    ],
)
def test_score_predictions_on_each_published_file(tmp_path, benchmark, module, writer, completions, accuracy):
    source = getattr(module, writer)(tmp_path)
    predictions = write_predictions(tmp_path / "predictions.jsonl", getattr(module, completions))
    result = score_predictions(benchmark, source, predictions)
    assert result["accuracy"] == pytest.approx(accuracy)
    assert result["count"] == len(read_published(benchmark, source))


def test_unknown_ids_and_bad_lines_are_errors_naming_the_file(tmp_path, capsys):
    tsv = test_vlmevalkit.write_mmstar(tmp_path)
    stray = write_predictions(tmp_path / "stray.jsonl", {"0": "<answer>C</answer>", "77": "<answer>A</answer>"})
    with pytest.raises(ValueError, match=rf"{stray} line 2: prediction id '77' is not a question of {tsv}"):
        score_predictions("mmstar", tsv, stray)
    assert main(["--benchmark", "mmstar", "--source", str(tsv), "--predictions", str(stray)]) == 2
    assert (
        capsys.readouterr().err
        == f"vlrl score: error: {stray} line 2: prediction id '77' is not a question of {tsv} (mmstar)\n"
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "0", "completion": "A"}\n{"id": "1"}\n')
    with pytest.raises(ValueError, match=rf"{bad} line 2: no key 'completion'"):
        score_predictions("mmstar", tsv, bad)
    bad.write_text('{"id": "0", "completion": "A"}\nnot json\n')
    with pytest.raises(ValueError, match=rf"{bad} line 2: not valid JSON"):
        score_predictions("mmstar", tsv, bad)
    with pytest.raises(FileNotFoundError, match="no predictions file"):
        score_predictions("mmstar", tsv, tmp_path / "absent.jsonl")
    with pytest.raises(ValueError, match="unknown benchmark 'mmmu'"):
        score_predictions("mmmu", tsv, bad)


def test_bad_benchmark_rows_are_errors_naming_the_file_and_question(tmp_path):
    path = test_mathvista.write_mathvista(tmp_path)
    problems = json.loads(path.read_text())
    del problems["4"]["precision"]
    path.write_text(json.dumps(problems))
    predictions = write_predictions(tmp_path / "p.jsonl", {"1": "<answer>B</answer>"})
    with pytest.raises(ValueError, match=rf"{path} question 4: answer_type float needs an integer 'precision'"):
        score_predictions("mathvista", path, predictions)


def _one_line_error(capsys, argv: list[str]) -> str:
    """Run ``vlrl score``; assert exit status 2, nothing on stdout, one line on stderr; return that line."""
    assert main(argv) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.count("\n") == 1 and "Traceback" not in printed.err
    return printed.err


def test_an_empty_or_unmatched_predictions_file_is_one_clear_error(tmp_path, capsys):
    tsv = test_vlmevalkit.write_mmstar(tmp_path)
    good = write_predictions(tmp_path / "good.jsonl", {"0": "<answer>C</answer>"})
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")  # blank lines only
    args = ["--benchmark", "mmstar", "--source", str(tsv), "--predictions"]
    assert _one_line_error(capsys, [*args, str(empty)]) == (
        f"vlrl score: error: {empty}: no predictions in the file (vlrl predict writes one JSON line per question)\n"
    )
    assert f"error: {empty}: no predictions" in _one_line_error(capsys, [*args, str(good), str(empty)])  # any file
    # ids of another benchmark (MathVista's pids): the file is named as a whole, with ids from both sides
    other = write_predictions(tmp_path / "mathvista.jsonl", {"pid-1": "A", "pid-2": "B"})
    assert _one_line_error(capsys, [*args, str(other)]) == (
        f"vlrl score: error: {other}: none of its 2 prediction ids is a question of {tsv} (mmstar): "
        "it has 'pid-1', 'pid-2', the benchmark file '0', '1', '2' ...\n"
    )


# each published shape given as every benchmark of another shape
WRITERS = {
    "mathvista": (test_mathvista.write_mathvista, "a MathVista JSON (keys 'pid', 'question_type')", "mathvista"),
    "mathvision": (test_mathvision.write_mathvision, "a MathVision JSON (keys 'id', 'options')", "mathvision"),
    "mathverse": (
        test_mathverse.write_mathverse,
        "a MathVerse JSON (keys 'sample_index', 'problem_version')",
        "mathverse",
    ),
    "mmstar": (
        test_vlmevalkit.write_mmstar,
        "a VLMEvalKit TSV (keys 'index', 'answer')",
        "mmbench / mmstar / vlmevalkit",
    ),
}
MISMATCHES = [
    (shape, benchmark)
    for shape in WRITERS
    for benchmark in SCORERS
    if benchmark != shape and not (shape == "mmstar" and benchmark in ("mmbench", "vlmevalkit"))
]


@pytest.mark.parametrize(("shape", "benchmark"), MISMATCHES)
def test_a_file_of_another_benchmark_is_named_as_such(tmp_path, capsys, shape, benchmark):
    write, description, names = WRITERS[shape]
    source = write(tmp_path)
    predictions = write_predictions(tmp_path / "p.jsonl", {"1": "<answer>A</answer>"})
    line = _one_line_error(
        capsys, ["--benchmark", benchmark, "--source", str(source), "--predictions", str(predictions)]
    )
    assert line == (
        f"vlrl score: error: {source} looks like {description}, not a file of {benchmark}: "
        f"score it with --benchmark {names}\n"
    )


def test_a_benchmark_file_that_is_no_list_of_records_is_one_clear_error(tmp_path, capsys):
    number = tmp_path / "number.json"
    number.write_text("5")
    predictions = write_predictions(tmp_path / "p.jsonl", {"1": "<answer>A</answer>"})
    line = _one_line_error(
        capsys, ["--benchmark", "mathvista", "--source", str(number), "--predictions", str(predictions)]
    )
    assert line == f"vlrl score: error: {number}: not a mathvista file ('int' object is not iterable)\n"


def test_lenient_reads_mathvision_answers_mathematically(tmp_path, capsys):
    source = test_mathvision.write_mathvision(tmp_path)
    # answers \frac{1}{2}, 6 and 12: MATH-V reads 0\frac{1}{2} as 0 * 1/2 and gives 3×4 (U+00D7) no value
    replies = {"3": "<answer>0\\frac{1}{2}</answer>", "4": "<answer>6</answer>", "5": "<answer>3\u00d74</answer>"}
    predictions = write_predictions(tmp_path / "p.jsonl", replies)
    args = ["--benchmark", "mathvision", "--source", str(source), "--predictions", str(predictions)]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("mathvision: accuracy 0.1667 (1/6 questions; 3 row(s) without")
    assert main([*args, "--lenient"]) == 0  # a mixed number 0 + 1/2, and 3 × 4 = 12
    assert capsys.readouterr().out.startswith("mathvision (lenient): accuracy 0.5000 (3/6 questions;")
    assert score_predictions("mathvision", source, predictions, lenient=True)["lenient"] is True
    capsys.readouterr()  # the warning about missing rows
    tsv = test_vlmevalkit.write_mmstar(tmp_path)
    mmstar = write_predictions(tmp_path / "m.jsonl", {"0": "<answer>C</answer>"})
    line = _one_line_error(
        capsys, ["--benchmark", "mmstar", "--source", str(tsv), "--predictions", str(mmstar), "--lenient"]
    )
    assert line == "vlrl score: error: mmstar has no lenient reading (lenient scoring is offered for mathvision)\n"
