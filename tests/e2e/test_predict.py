"""``vlrl predict`` over a dataset (labelled and unlabelled rows) and one image + question from the command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vlrl_cli import main

ROOT = Path(__file__).parents[2]
DEMO = ROOT / "configs" / "demo_grpo.yaml"


def _predict(tiny_checkpoint, tmp_path, predict_data: Path) -> list[dict]:
    out = tmp_path / "predictions.jsonl"
    main(
        [
            "predict",
            "-c",
            str(DEMO),
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
            '--model.init_args.engine={"class_path": "rollout.hf.HFEngine"}',
            "--model.init_args.evaluation.max_new_tokens=5",
            f"--model.init_args.evaluation.predictions_path={out}",
            f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.train_size=4",
            "--data.init_args.val_size=4",
            "--data.init_args.image_size=56",
            f"--data.init_args.predict_data={predict_data}",
            "--data.init_args.loader.val_batch_size=2",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
        ]
    )
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_predict_writes_one_scored_record_per_labelled_row(tiny_checkpoint, synthetic_dir, tmp_path):
    source = synthetic_dir / "train.jsonl"
    rows = [json.loads(line) for line in source.read_text().splitlines()][:3]
    subset = tmp_path / "subset.jsonl"
    subset.write_text("".join(json.dumps({**r, "image": str(synthetic_dir / r["image"])}) + "\n" for r in rows))
    records = _predict(tiny_checkpoint, tmp_path, subset)
    assert [r["id"] for r in records] == [r["id"] for r in rows]
    for record, row in zip(records, rows):
        assert record["solution"] == row["solution"] and 0.0 <= record["score"] <= 1.0
        assert 1 <= record["completion_tokens"] <= 5 and isinstance(record["completion"], str)


def test_predict_accepts_rows_without_answers(tiny_checkpoint, synthetic_dir, tmp_path):
    image = synthetic_dir / "images" / "train" / "000000.png"
    unlabelled = tmp_path / "questions.jsonl"
    unlabelled.write_text(json.dumps({"image": str(image), "question": "What is shown?"}) + "\n")
    (record,) = _predict(tiny_checkpoint, tmp_path, unlabelled)
    assert record["problem"] == "What is shown?" and "score" not in record and "solution" not in record


@pytest.mark.slow
def test_one_image_and_question_from_the_command_line(tiny_checkpoint, tmp_path):
    image = tmp_path / "red.png"
    Image.new("RGB", (56, 56), "red").save(image)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlrl_cli",
            "predict-one",
            str(tiny_checkpoint),
            "--image",
            str(image),
            "--question",
            "What colour is the image?",
            "--max-new-tokens",
            "4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads(run.stdout.strip().splitlines()[-1])
    assert record["problem"] == "What colour is the image?" and 1 <= record["completion_tokens"] <= 4
