"""vlrl-score: benchmark files as published + vlrl predict JSON Lines -> the results JSON and a table."""

import json

import pytest

from datamodules.benchmarks import read_published
from evaluation import answer_text, score_predictions
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
    assert "mmbench: accuracy 0.3333 (1/3 questions)" in printed.out and "row accuracy 0.7143" in printed.out
    assert "1 row(s) without a prediction" in printed.out and f"wrote {out}" in printed.out
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
    assert "prediction id '77'" in capsys.readouterr().err
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
