"""Benchmarks in their published shapes: VLMEvalKit TSV (MMBench/MMStar), MathVista JSON, MathVision JSON; scored as
those benchmarks score; per-category results from ``vlrl test``."""

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from datamodules.benchmarks import convert_benchmark
from rewards import AccuracyReward
from tests.e2e import HF_ENGINE
from vlrl_cli import main

DEMO = Path(__file__).parents[2] / "configs" / "demo_grpo.yaml"


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
    ]  # fmt: skip
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
        "1": {"pid": "1", "question": "Which is larger?", "image": "1.png", "choices": ["the cat", "the dog"],
              "answer": "the dog", "question_type": "multi_choice", "answer_type": "text", "precision": None,
              "unit": None, "metadata": {"category": "general-vqa", "skills": ["comparison"]}},
        "2": {"pid": "2", "question": "How long is the bar?", "image": "1.png", "choices": None, "answer": "1.5",
              "question_type": "free_form", "answer_type": "float", "precision": 1, "unit": "cm",
              "metadata": {"category": "math-targeted-vqa"}},
    }  # fmt: skip
    (tmp_path / "testmini.json").write_text(json.dumps(vista))
    rows = [json.loads(x) for x in convert_benchmark("mathvista", tmp_path / "testmini.json", tmp_path / "v").open()]
    assert rows[0]["solution"] == "B" and rows[0]["problem"].endswith("A. the cat\nB. the dog")
    assert rows[1] == {**rows[1], "problem": "How long is the bar? (unit: cm)", "problem_type": "numerical",
                       "precision": 1, "category": "math-targeted-vqa"}  # fmt: skip
    vision = [{"id": "7", "question": "<image1>Which option?", "options": ["1", "2"], "answer": "A", "image": "1.png",
               "subject": "counting"},
              {"id": "8", "question": "Find x.", "options": [], "answer": "\\frac{1}{2}", "image": "1.png",
               "subject": "algebra"}]  # fmt: skip
    (tmp_path / "mathvision.json").write_text(json.dumps(vision))
    rows = [json.loads(x) for x in convert_benchmark("mathvision", tmp_path / "mathvision.json", tmp_path / "m").open()]
    assert rows[0]["problem"] == "Which option?\nOptions:\nA. 1\nB. 2" and rows[1]["problem_type"] == "math"
    with pytest.raises(ValueError, match="unknown benchmark"):
        convert_benchmark("nope", tmp_path / "mathvision.json", tmp_path / "x")


def test_scoring_as_the_benchmarks_score():
    reward = AccuracyReward()
    texts = ["<answer>(B)</answer>", "<answer>the dog</answer>", "<answer>The Dog.</answer>", "<answer>1.54</answer>",
             "<answer>1.46</answer>", "<answer>1.4</answer>", "<answer>1/2</answer>"]  # fmt: skip
    choices, precision = [["the cat", "the dog"]] * 3 + [None] * 4, [None] * 3 + [1, 1, 1, None]
    scores = reward(texts, solution=["B", "B", "B", "1.5", "1.5", "1.5", "\\frac{1}{2}"],
                    problem_type=["multiple_choice"] * 3 + ["numerical"] * 3 + ["math"], choices=choices,
                    precision=precision)  # fmt: skip
    # letters; option text counts as its letter; numbers rounded to the stated 1 decimal: 1.54 -> 1.5 right,
    # 1.46 -> 1.5 right, 1.4 wrong; math equivalence
    assert scores.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0]


def test_vlrl_test_writes_per_category_results(tiny_checkpoint, tmp_path):
    tsv = write_tsv(tmp_path / "mmbench.tsv")
    data = (
        '{"class_path": "datamodules.benchmarks.BenchmarkDataModule", "init_args": {"benchmark": "mmbench", '
        f'"source": "{tsv}", "min_pixels": 3136, "max_pixels": 3136, "val_batch_size": 2}}}}'
    )
    cli = main(["test", "-c", str(DEMO), HF_ENGINE, f"--model.init_args.model_name_or_path={tiny_checkpoint}",
                f"--data={data}", "--model.init_args.val_max_new_tokens=6", "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={tmp_path}",
                f"--trainer.logger.init_args.save_dir={tmp_path}"])  # fmt: skip
    results = json.loads((Path(cli.trainer.log_dir) / "results_test.json").read_text())
    assert {k: v["count"] for k, v in results.items()} == {"all": 3, "colour": 2, "shape": 1}
    weighted = (results["colour"]["accuracy"] * 2 + results["shape"]["accuracy"]) / 3
    assert results["all"]["accuracy"] == pytest.approx(weighted)
    assert results["all"]["accuracy"] == pytest.approx(float(cli.trainer.callback_metrics["test/accuracy"]))
    assert (Path(cli.trainer.log_dir) / "results_test.csv").read_text().startswith("category,accuracy,count")
