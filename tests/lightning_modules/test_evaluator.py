"""Evaluator: the tallies and records of validation, test and predict, their per-stage files and logged values.
Generation is real (the tiny model through the HF engine); scoring is the real evaluation copies of the rewards."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from lightning_modules.config import EvalConfig
from lightning_modules.evaluator import Evaluator, file_stage, val_stages
from lightning_modules.metrics import EvalScorers
from lightning_modules.policy import load_policy
from rewards import AccuracyReward, CombinedReward, FormatReward
from rollout.hf import HFEngine


class Logged:
    """The module's ``self.log`` as the evaluator calls it: key -> (value, options)."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[float, dict]] = {}

    def __call__(self, key, value, **options) -> None:
        self.values[key] = (float(value), options)


def held_out(processor, categories: list[str]) -> dict:
    n = len(categories)
    question = "What colour is the shape? Options: A. red B. blue"
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    return {
        "prompt": [prompt] * n,
        "images": [[Image.new("RGB", (56, 56), (200, 0, 0))] for _ in range(n)],
        "id": [f"q{i}" for i in range(n)],
        "index": list(range(n)),
        "problem": [question] * n,
        "solution": ["<answer>A</answer>"] * n,
        "problem_type": ["multiple choice"] * n,
        "category": categories,
    }


def evaluator_for(engine=None, config: EvalConfig = EvalConfig(), max_new_tokens: int = 4):
    logged = Logged()
    scorers = EvalScorers.of(CombinedReward([AccuracyReward(), FormatReward(template="caption")]))
    return Evaluator(config, scorers, engine or HFEngine(), max_new_tokens, logged), logged


@pytest.fixture(scope="module")
def engine(tiny_checkpoint, processor):
    engine = HFEngine()
    engine.setup(load_policy(str(tiny_checkpoint), dtype="float32"), processor)
    return engine


def test_stages_and_their_file_names():
    class Named:
        val_names = ["indist", "heldout"]

    assert val_stages(Named()) == ["val/indist", "val/heldout"] and val_stages(None) == ["val"]
    assert val_stages(object()) == ["val"] and file_stage("val/indist") == "val_indist"


def test_evaluate_logs_accuracy_format_and_length_and_records_each_question(engine, processor):
    evaluator, logged = evaluator_for(engine)
    batch = held_out(processor, ["colour", "colour", "shape"])
    torch.manual_seed(0)
    evaluator.evaluate(batch, "val/indist")
    accuracy, options = logged.values["val/indist/accuracy"]
    assert options == {"add_dataloader_idx": False, "batch_size": 3, "prog_bar": True}
    assert {"val/indist/format_rate", "val/indist/completion_length"} <= set(logged.values)
    rows = evaluator.rows["val/indist"]
    assert [row["id"] for row in rows] == ["q0", "q1", "q2"] and accuracy == sum(r["score"] for r in rows) / 3
    assert 0 < logged.values["val/indist/completion_length"][0] <= 4  # greedy, at most the rollout's 4 tokens
    assert evaluator.tallies["val/indist"]["all"][1] == 3 and evaluator.tallies["val/indist"]["shape"][1] == 1


def test_report_writes_per_category_results_and_forgets_the_epoch(tmp_path, processor):
    evaluator, logged = evaluator_for()
    batch = held_out(processor, ["colour", "colour", "shape"])
    # right, wrong, right: colour 1/2, shape 1/1, all 2/3
    texts = ["<answer>A</answer>", "<answer>B</answer>", "<answer>A</answer>"]
    evaluator.record(batch, texts, evaluator.scorers.accuracy(texts, **evaluator.scorers.columns(batch)), "test")
    evaluator.report("test", datamodule=None, log_dir=tmp_path, is_global_zero=True)
    results = json.loads((tmp_path / "results_test.json").read_text())
    assert results == {
        "all": {"accuracy": 2 / 3, "count": 3},
        "colour": {"accuracy": 0.5, "count": 2},
        "shape": {"accuracy": 1.0, "count": 1},
    }
    assert logged.values["test/accuracy/colour"] == (0.5, {"rank_zero_only": True}) and "test/accuracy/all" not in (
        logged.values
    )
    questions = [json.loads(line) for line in (tmp_path / "results_test_questions.jsonl").read_text().splitlines()]
    assert [(q["id"], q["answer"], q["score"]) for q in questions] == [
        ("q0", "A", 1.0),
        ("q1", "B", 0.0),
        ("q2", "A", 1.0),
    ]
    assert evaluator.tallies == {} and evaluator.rows == {}  # the next epoch starts empty


def test_start_drops_what_an_interrupted_epoch_left(processor):
    evaluator, _ = evaluator_for()
    batch = held_out(processor, ["colour"])
    evaluator.record(batch, ["<answer>A</answer>"], torch.tensor([1.0]), "val")
    evaluator.start(["val"])
    assert "val" not in evaluator.tallies and "val" not in evaluator.rows


def test_predict_scores_rows_with_a_solution_and_not_the_others(engine, processor):
    evaluator, _ = evaluator_for(engine)
    batch = held_out(processor, ["colour", "colour"])
    batch["solution"][1], batch["problem_type"][1] = "", None  # an unlabelled row
    records = evaluator.predict(batch)
    assert [r["id"] for r in records] == ["q0", "q1"] and "score" in records[0] and "score" not in records[1]
    assert all(r["completion_tokens"] <= 4 for r in records)
    assert evaluator.predict({"prompt": []}) == []


def test_generation_length_is_the_evaluation_s_or_the_rollout_s(engine, processor):
    batch = held_out(processor, ["colour"])
    own, _ = evaluator_for(engine, EvalConfig(max_new_tokens=2), max_new_tokens=6)
    rollout_s, _ = evaluator_for(engine, EvalConfig(), max_new_tokens=1)
    assert int(own.generate(batch).lengths.max()) <= 2 and int(rollout_s.generate(batch).lengths.max()) == 1
