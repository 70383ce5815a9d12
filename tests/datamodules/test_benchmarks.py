"""Benchmarks in their published shapes: VLMEvalKit TSV (MMBench/MMStar), MathVista JSON, MathVision JSON; scored as
those benchmarks score; per-category results from ``vlrl test``."""

import base64
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from datamodules.benchmarks import (
    BenchmarkDataModule,
    choices_in_question,
    convert_benchmark,
    option_letter,
    read_published,
    strip_option_labels,
)
from rewards import AccuracyReward
from tests.e2e import HF_ENGINE
from vlrl_cli import main

DEMO = Path(__file__).parents[2] / "configs" / "demo_grpo.yaml"


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch) -> Path:
    """Conversions without ``cache_dir`` go to the user cache: here a temporary one, never the real ``~/.cache``."""
    monkeypatch.setenv("VLRL_CACHE", str(tmp_path / "user-cache"))
    return tmp_path / "user-cache"


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _b64(color) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (56, 56), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def write_tsv(path: Path) -> Path:
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]
    rows = [
        ["10", "What colour is the square?", "A square.", "red", "green", "blue", "", "A", "colour", _b64("red")],
        ["11", "Which shape is shown?", "nan", "circle", "square", "", "", "B", "shape", _b64("green")],
        ["12", "What colour is it?", "", "red", "green", "blue", "yellow", "C", "colour", _b64("blue")],
    ]
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    return path


def test_vlmevalkit_tsv_becomes_rows_with_options_hint_and_category(tmp_path):
    out = convert_benchmark("mmbench", write_tsv(tmp_path / "mmbench.tsv"), tmp_path / "cache")
    rows = [json.loads(x) for x in out.open()]
    assert [r["id"] for r in rows] == ["10", "11", "12"]
    assert rows[0]["problem"] == "A square.\nWhat colour is the square?\nOptions:\nA. red\nB. green\nC. blue"
    assert rows[1]["problem"].startswith("Which shape") and rows[1]["choices"] == ["circle", "square"]  # nan hint
    assert [r["solution"] for r in rows] == ["A", "B", "C"] and {r["problem_type"] for r in rows} == {"multiple_choice"}
    assert [r["category"] for r in rows] == ["colour", "shape", "colour"]
    assert Image.open(out.parent / rows[2]["image"]).getpixel((5, 5)) == (0, 0, 255)
    mtime = out.stat().st_mtime_ns
    assert convert_benchmark("mmbench", tmp_path / "mmbench.tsv", tmp_path / "cache").stat().st_mtime_ns == mtime


def test_mathvista_and_mathvision_json(tmp_path):
    Image.new("RGB", (56, 56), "white").save(tmp_path / "1.png")
    vista = {
        "1": {
            "pid": "1",
            "question": "Which is larger?",
            "image": "1.png",
            "choices": ["the cat", "the dog"],
            "answer": "the dog",
            "question_type": "multi_choice",
            "answer_type": "text",
            "precision": None,
            "unit": None,
            "metadata": {"category": "general-vqa", "skills": ["comparison"]},
        },
        "2": {
            "pid": "2",
            "question": "How long is the bar?",
            "image": "1.png",
            "choices": None,
            "answer": "1.5",
            "question_type": "free_form",
            "answer_type": "float",
            "precision": 1,
            "unit": "cm",
            "metadata": {"category": "math-targeted-vqa"},
        },
    }
    (tmp_path / "testmini.json").write_text(json.dumps(vista))
    rows = [json.loads(x) for x in convert_benchmark("mathvista", tmp_path / "testmini.json", tmp_path / "v").open()]
    assert rows[0]["solution"] == "B" and rows[0]["problem"].endswith("A. the cat\nB. the dog")
    assert rows[1] == {
        **rows[1],
        "problem": "How long is the bar? (unit: cm)",
        "problem_type": "numerical",
        "precision": 1,
        "category": "math-targeted-vqa",
    }
    vision = [
        {
            "id": "7",
            "question": "<image1>Which option?",
            "options": ["1", "2"],
            "answer": "A",
            "image": "1.png",
            "subject": "counting",
        },
        {
            "id": "8",
            "question": "Find x.",
            "options": [],
            "answer": "\\frac{1}{2}",
            "image": "1.png",
            "subject": "algebra",
        },
    ]
    (tmp_path / "mathvision.json").write_text(json.dumps(vision))
    rows = [json.loads(x) for x in convert_benchmark("mathvision", tmp_path / "mathvision.json", tmp_path / "m").open()]
    assert rows[0]["problem"] == "Which option?\nOptions:\nA. 1\nB. 2" and rows[1]["problem_type"] == "math"
    with pytest.raises(ValueError, match="unknown benchmark"):
        convert_benchmark("nope", tmp_path / "mathvision.json", tmp_path / "x")


def test_existing_option_labels_are_stripped_only_when_every_option_has_its_own():
    assert strip_option_labels(["(A) red", "(B) green"]) == ["red", "green"]
    assert strip_option_labels(["A. red", "B) green", "C: blue", "(d) pink"]) == ["red", "green", "blue", "pink"]
    # a mix of labelled and unlabelled, labels out of position, or text that starts with a letter: unchanged
    assert strip_option_labels(["(A) red", "green"]) == ["(A) red", "green"]
    assert strip_option_labels(["(B) red", "(A) green"]) == ["(B) red", "(A) green"]
    assert strip_option_labels(["A red circle", "B-movie"]) == ["A red circle", "B-movie"]
    assert strip_option_labels(["A.5", "B.7"]) == ["A.5", "B.7"]  # no space after the dot: numbers, not labels
    assert strip_option_labels(["(A)", "(B)"]) == ["(A)", "(B)"]  # a label with nothing after it is the text
    assert strip_option_labels([]) == []


def test_labelled_options_render_once_and_keep_their_letters(tmp_path):
    Image.new("RGB", (56, 56), "white").save(tmp_path / "1.png")
    vista = [
        {
            "pid": "5",
            "question": "Which colour?",
            "image": "1.png",
            "choices": ["(A) red", "(B) green"],
            "answer": "(B) green",
            "question_type": "multi_choice",
            "metadata": {},
        }
    ]
    (tmp_path / "vista.json").write_text(json.dumps(vista))
    row = json.loads(convert_benchmark("mathvista", tmp_path / "vista.json").read_text())
    assert row["problem"] == "Which colour?\nOptions:\nA. red\nB. green"
    assert row["solution"] == "B" and row["choices"] == ["red", "green"]
    tsv = write_tsv(tmp_path / "mmbench.tsv")
    tsv.write_text(tsv.read_text().replace("\tred\tgreen\tblue\t\t", "\tA: red\tB: green\tC: blue\t\t"))
    row = json.loads(convert_benchmark("mmbench", tsv).read_text().splitlines()[0])
    assert row["problem"].endswith("Options:\nA. red\nB. green\nC. blue") and row["choices"] == ["red", "green", "blue"]


def test_tsv_image_cells_may_name_the_index_of_the_row_holding_the_image(tmp_path):
    """VLMEvalKit stores MMBench's rotated copies with an image cell of at most 64 characters: another row's index."""
    tsv = write_tsv(tmp_path / "mmbench.tsv")
    lines = tsv.read_text().splitlines()
    lines.append(
        "\t".join(
            ["1000010", "What colour is the square?", "A square.", "green", "blue", "red", "", "C", "colour", "10"]
        )
    )
    tsv.write_text("\n".join(lines) + "\n")
    rows = [json.loads(x) for x in convert_benchmark("mmbench", tsv, tmp_path / "cache").open()]
    assert rows[-1]["id"] == "1000010" and rows[-1]["image"] == rows[0]["image"]
    tsv.write_text(tsv.read_text().replace("\tcolour\t10\n", "\tcolour\t99\n"))
    with pytest.raises(ValueError, match=r"row index 3: column 'image' refers to index '99', which has no image"):
        convert_benchmark("mmbench", tsv, tmp_path / "cache2")


def test_read_published_gives_the_converted_ids_without_decoding_images(tmp_path):
    tsv = write_tsv(tmp_path / "mmbench.tsv")
    published = read_published("mmbench", tsv)
    assert [id for id, _ in published] == ["10", "11", "12"] and published[1][1]["hint"] == "nan"
    converted = [json.loads(x)["id"] for x in convert_benchmark("mmbench", tsv, tmp_path / "c").open()]
    assert converted == [id for id, _ in published]
    Image.new("RGB", (56, 56), "white").save(tmp_path / "1.png")
    vista = {
        "7": {
            "pid": "7",
            "question": "q",
            "image": "1.png",
            "choices": None,
            "answer": "3",
            "question_type": "free_form",
            "answer_type": "integer",
            "metadata": {},
        }
    }
    (tmp_path / "vista.json").write_text(json.dumps(vista))
    assert [id for id, _ in read_published("mathvista", tmp_path / "vista.json")] == ["7"]
    (tmp_path / "vision.jsonl").write_text('{"id": "3", "answer": "1"}\n\n{"answer": "2"}\n')
    assert [id for id, _ in read_published("mathvision", tmp_path / "vision.jsonl")] == ["3", "1"]  # else position
    (tmp_path / "broken.jsonl").write_text('{"id": "3"}\n{"id": \n')
    with pytest.raises(ValueError, match=r"broken.jsonl: line 2 is not valid JSON"):
        read_published("mathvision", tmp_path / "broken.jsonl")
    with pytest.raises(FileNotFoundError, match="mathverse: no file at"):
        read_published("mathverse", tmp_path / "absent.json")


def test_mathverse_choices_and_answer_letters():
    assert choices_in_question("Find x.\nChoices:\nA:40°\nB.60°\n(C) 120°") == ["40°", "60°", "120°"]
    assert choices_in_question("Find x.\nChoices:\nB:40°\nC:60°") is None  # not from A
    assert choices_in_question("Find x.") is None
    assert [option_letter(x) for x in ("C", "(C)", " c. ", "CD", "")] == ["C", "C", "C", None, None]


def test_benchmark_datamodule_serves_the_converted_rows_to_vlrl_predict(tmp_path):
    dm = BenchmarkDataModule("mmbench", str(write_tsv(tmp_path / "mmbench.tsv")), cache_dir=str(tmp_path / "c"))
    dm.tokenizer = object()  # not used until a row is read
    dm.setup("predict")
    assert dm.hparams.predict_data == dm.hparams.test_data and dm.hparams.predict_data.endswith("mmbench.jsonl")
    assert [row["id"] for row in dm.datasets["predict"].table] == ["10", "11", "12"]


def test_converted_rows_go_to_the_user_cache_not_beside_a_read_only_source(tmp_path, user_cache, monkeypatch):
    source_dir = tmp_path / "shared-datasets"
    source_dir.mkdir()
    tsv = write_tsv(source_dir / "mmbench.tsv")
    before = _listing(source_dir)
    source_dir.chmod(0o555)  # read-only (root ignores the mode, so the listing check below is what holds there)
    try:
        out = convert_benchmark("mmbench", tsv)
        assert out.parent.parent == user_cache / "benchmarks" and out.parent.name.startswith("mmbench-")
        assert _listing(source_dir) == before
        assert convert_benchmark("mmbench", tsv) == out  # reused
        monkeypatch.delenv("VLRL_CACHE")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert convert_benchmark("mmbench", tsv).is_relative_to(tmp_path / "xdg" / "vlrl" / "benchmarks")
    finally:
        source_dir.chmod(0o755)
    tsv.write_text(tsv.read_text().replace("What colour is it?", "What colour is this?"))  # changed: a new folder
    monkeypatch.setenv("VLRL_CACHE", str(user_cache))
    changed = convert_benchmark("mmbench", tsv)
    assert changed.parent != out.parent and "this?" in changed.read_text()


def test_scoring_as_the_benchmarks_score():
    reward = AccuracyReward()
    texts = [
        "<answer>(B)</answer>",
        "<answer>the dog</answer>",
        "<answer>The Dog.</answer>",
        "<answer>1.54</answer>",
        "<answer>1.46</answer>",
        "<answer>1.4</answer>",
        "<answer>1/2</answer>",
    ]
    choices, precision = [["the cat", "the dog"]] * 3 + [None] * 4, [None] * 3 + [1, 1, 1, None]
    scores = reward(
        texts,
        solution=["B", "B", "B", "1.5", "1.5", "1.5", "\\frac{1}{2}"],
        problem_type=["multiple_choice"] * 3 + ["numerical"] * 3 + ["math"],
        choices=choices,
        precision=precision,
    )
    # letters; option text counts as its letter; numbers rounded to the stated 1 decimal: 1.54 -> 1.5 right,
    # 1.46 -> 1.5 right, 1.4 wrong; math equivalence
    assert scores.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0]


def test_vlrl_test_writes_per_category_and_per_question_results(tiny_checkpoint, tmp_path, user_cache, monkeypatch):
    from dataclasses import replace

    from rollout.hf import HFEngine

    generate = HFEngine.generate

    def answer_a(self, *args, **kwargs):  # the random tiny model never answers: every reply says A instead
        out = generate(self, *args, **kwargs)
        return replace(out, texts=["<think>hm</think><answer>A</answer>"] * len(out.texts))

    monkeypatch.setattr(HFEngine, "generate", answer_a)
    source_dir = tmp_path / "read-only"
    source_dir.mkdir()
    tsv = write_tsv(source_dir / "mmbench.tsv")
    source_dir.chmod(0o555)
    data = json.dumps(
        {
            "class_path": "datamodules.benchmarks.BenchmarkDataModule",
            "init_args": {
                "benchmark": "mmbench",
                "source": str(tsv),
                "prompts": {"min_pixels": 3136, "max_pixels": 3136},
                "loader": {"val_batch_size": 2},
            },
        }
    )
    try:
        cli = main(
            [
                "test",
                "-c",
                str(DEMO),
                HF_ENGINE,
                f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
                f"--data={data}",
                "--model.init_args.evaluation.max_new_tokens=6",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={tmp_path}",
                f"--trainer.logger.init_args.save_dir={tmp_path}",
            ]
        )
    finally:
        source_dir.chmod(0o755)
    assert _listing(source_dir) == ["mmbench.tsv"] and (user_cache / "benchmarks").is_dir()
    # results_test.json is the benchmark's official score (evaluation.score, as vlrl-score computes it)
    results = json.loads((Path(cli.trainer.log_dir) / "results_test.json").read_text())
    assert (results["benchmark"], results["count"], results["correct"]) == ("mmbench", 3, 1)
    assert results["accuracy"] == pytest.approx(1 / 3)
    assert results["accuracy"] == pytest.approx(float(cli.trainer.callback_metrics["test/benchmark_accuracy"]))
    by_category = {k: (v["correct"], v["count"]) for k, v in results["categories"]["category"].items()}
    assert by_category == {"colour": (1, 2), "shape": (0, 1)}
    lines = (Path(cli.trainer.log_dir) / "results_test_questions.jsonl").read_text().splitlines()
    questions = [json.loads(line) for line in lines]
    assert [(q["id"], q["category"], q["solution"]) for q in questions] == [
        ("10", "colour", "A"),
        ("11", "shape", "B"),
        ("12", "colour", "C"),
    ]
    assert all(set(q) == {"id", "category", "solution", "answer", "score", "completion"} for q in questions)
    choices = [["red", "green", "blue"], ["circle", "square"], ["red", "green", "blue", "yellow"]]
    rescored = AccuracyReward()(
        [q["completion"] for q in questions],
        solution=["A", "B", "C"],
        problem_type=["multiple_choice"] * 3,
        choices=choices,
    )
    assert [q["score"] for q in questions] == rescored.tolist() == [1.0, 0.0, 0.0]  # A is right for row 10 only
    assert [q["answer"] for q in questions] == ["A"] * 3
    assert [q["correct"] for q in results["questions"]] == [1, 0, 0]


@pytest.mark.slow
def test_vlrl_test_on_two_ranks_merges_the_per_question_file(tiny_checkpoint, tmp_path):
    """DDP over gloo: each rank scores its share; rank 0 writes one file with every rank's questions, whose scores
    agree with the merged per-category results."""
    import subprocess
    import sys

    tsv = write_tsv(tmp_path / "mmbench.tsv")
    data = json.dumps(
        {
            "class_path": "datamodules.benchmarks.BenchmarkDataModule",
            "init_args": {
                "benchmark": "mmbench",
                "source": str(tsv),
                "prompts": {"min_pixels": 3136, "max_pixels": 3136},
                "loader": {"val_batch_size": 1},
            },
        }
    )
    args = [
        sys.executable,
        "-m",
        "vlrl_cli",
        "test",
        "-c",
        str(DEMO),
        HF_ENGINE,
        f"--data={data}",
        f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
        "--model.init_args.evaluation.max_new_tokens=4",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    env = {**os.environ, "VLRL_CACHE": str(tmp_path / "user-cache")}
    run = subprocess.run(args, cwd=DEMO.parents[1], capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    (log_dir,) = {p.parent for p in tmp_path.rglob("results_test.json")}
    results = json.loads((log_dir / "results_test.json").read_text())
    questions = [json.loads(line) for line in (log_dir / "results_test_questions.jsonl").read_text().splitlines()]
    assert not list(tmp_path.rglob("results_test_questions.rank*"))  # one file, written by rank 0
    assert {q["id"] for q in questions} == {"10", "11", "12"}  # both ranks' rows
    # the distributed sampler pads 3 rows to 4 (one row twice): the file has every scored row, the official score
    # counts each question once
    assert results["count"] == len({q["id"] for q in questions}) == 3
    assert results["correct"] == sum({q["id"]: q["score"] for q in questions}.values())
