"""The data scan (``datamodules.scan``): each bad row named by file, row and column; one-line errors; skip mode's
counts and log line; images read by header only, each distinct file once; and ``vlrl fit`` stopping on a missing
image with one line before any training step (or, with ``skip_bad_rows``, training on the rest and counting it)."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import pytest
import yaml
from PIL import Image

from datamodules import scan
from datamodules.config import LoaderConfig, PromptConfig
from datamodules.errors import BadDataError
from datamodules.scan import BadRow, ImageCheck, keep_rows, problem_type_check, scan_rows, scan_table, solution_check
from datamodules.vqa import VQADataModule

DEMO = Path(__file__).parents[2] / "configs" / "demo_grpo.yaml"
CHECKS = {"problem_type": problem_type_check, "solution": solution_check}


def _png(path: Path, size=(56, 56)) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, "red").save(path)
    return path.read_bytes()


def _row(image: str = "imgs/good.png", **row) -> dict:
    return {"image": image, "problem": "Colour?", "solution": "<answer> A </answer>", "problem_type": "mc", **row}


def _scan(tmp_path: Path, rows: list[dict]):
    checks = {"image": ImageCheck(tmp_path), **CHECKS}
    return scan_rows(rows, checks, "train.jsonl")


def test_a_missing_image_is_named_by_file_row_and_column(tmp_path):
    _png(tmp_path / "imgs" / "good.png")
    report = _scan(tmp_path, [_row(), _row("imgs/x.png"), _row(str(tmp_path / "gone.png"))])
    assert report.rows == 3 and report.bad == [
        BadRow(
            1,
            "image",
            "missing_image",
            f"image file not found: imgs/x.png (under {tmp_path})",
            "train.jsonl row index 1",
        ),
        BadRow(
            2, "image", "missing_image", f"image file not found: {tmp_path / 'gone.png'}", "train.jsonl row index 2"
        ),
    ]
    assert report.bad[0].line() == (
        f"train.jsonl row index 1, column 'image': image file not found: imgs/x.png (under {tmp_path})"
    )
    (tmp_path / "imgs" / "dir.png").mkdir()  # not a file either
    assert ImageCheck(tmp_path)("imgs/dir.png") == (
        "missing_image",
        f"image file not found: imgs/dir.png (under {tmp_path})",
    )
    assert ImageCheck(tmp_path)(None) == ImageCheck(tmp_path)([]) == ("missing_image", "no image")
    assert ImageCheck(tmp_path, required=False)(None) is None  # an SFT row without images


def test_an_unreadable_image_is_named_and_a_cut_body_is_not_decoded(tmp_path):
    good = _png(tmp_path / "imgs" / "good.png")
    (tmp_path / "imgs" / "text.png").write_bytes(b"definitely not an image")
    (tmp_path / "imgs" / "head.png").write_bytes(good[:20])  # cut inside the header
    (tmp_path / "imgs" / "body.png").write_bytes(good[:-30])  # header whole, pixels cut: only decoding sees it
    _png(tmp_path / "imgs" / "sliver.png", (1, 400))  # aspect ratio 400: Qwen's resize refuses it
    rows = [_row(f"imgs/{name}.png") for name in ("text", "head", "body", "sliver")] + [_row(["imgs/good.png", 7])]
    checks = {"image": ImageCheck(tmp_path, size_rule=lambda h, w: scan_size(h, w)), **CHECKS}
    report = scan_rows(rows, checks, "train.jsonl")
    assert [(b.row, b.column, b.reason) for b in report.bad] == [
        (0, "image", "bad_image"),
        (1, "image", "bad_image"),
        (3, "image", "bad_image"),
        (4, "image", "bad_image"),
    ]
    assert report.bad[0].message == (
        f"cannot read image imgs/text.png: UnidentifiedImageError: cannot identify image file "
        f"'{tmp_path / 'imgs' / 'text.png'}'"
    )
    assert report.bad[1].message == "cannot read image imgs/head.png: OSError: Truncated File Read"
    assert report.bad[2].message.startswith("image imgs/sliver.png of size 1x400 cannot be used: ")
    assert report.bad[3].message == "unsupported image value of type int"


def scan_size(height: int, width: int) -> None:
    from datamodules.images import smart_resize_hw

    smart_resize_hw(height, width, 56 * 56, 112 * 112)


def test_images_as_bytes_and_the_image_feature_are_checked_undecoded(tmp_path):
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    buf = io.BytesIO()
    Image.new("RGB", (56, 56)).save(buf, format="PNG")
    cells = [
        {"bytes": buf.getvalue(), "path": None},
        {"bytes": b"garbage", "path": None},
        None,
    ]
    table = Dataset.from_dict(
        {"image": cells, "solution": ["1", "2", "3"]},
        features=Features({"image": ImageFeature(), "solution": Value("string")}),
    )
    report = scan_table(table, {"image": ImageCheck(), "solution": solution_check}, "hub")
    assert [(b.row, b.reason, b.message[:30]) for b in report.bad] == [
        (1, "bad_image", "cannot read image <7 bytes>: U"),
        (2, "missing_image", "no image"),
    ]


def test_unknown_problem_types_and_unscorable_solutions_are_named(tmp_path):
    _png(tmp_path / "imgs" / "good.png")
    rows = [
        _row(problem_type="multiple choice"),  # aliases as the rewards know them
        _row(problem_type="OCR", solution=12),  # a number is a solution
        _row(problem_type="astrology"),
        _row(problem_type=None),
        _row(solution="<answer>  </answer>"),
        _row(solution=None),
        _row(solution="<answer> 3"),
        _row(solution=["3"]),
        _row(solution=float("nan")),  # a CSV's empty cell
    ]
    report = _scan(tmp_path, rows)
    assert [(b.row, b.column, b.reason, b.message) for b in report.bad] == [
        (
            2,
            "problem_type",
            "unknown_problem_type",
            "unknown problem_type 'astrology'; known: numerical, multiple_choice, math, ocr, free_form (and aliases)",
        ),
        (3, "problem_type", "unknown_problem_type", "problem_type must be a string, got NoneType None"),
        (4, "solution", "bad_solution", "empty solution '<answer>  </answer>'"),
        (5, "solution", "bad_solution", "no solution"),
        (6, "solution", "bad_solution", "unbalanced <answer> tags in the solution '<answer> 3'"),
        (7, "solution", "bad_solution", "the solution is a list, not text or a number: \"['3']\""),
        (8, "solution", "bad_solution", "no solution"),
    ]
    assert report.counts() == {"bad_solution": 5, "unknown_problem_type": 2}


def test_without_skip_bad_rows_one_line_names_the_first_and_counts_the_rest(tmp_path):
    _png(tmp_path / "imgs" / "good.png")
    rows = [_row(), _row(), _row(), _row("imgs/x.png"), _row("imgs/y.png"), _row(problem_type="astro")]
    rows += [_row(solution=""), _row("imgs/x.png", problem_type="astro")]  # a row's first problem counts
    with pytest.raises(BadDataError) as error:
        keep_rows(_scan(tmp_path, rows), skip_bad_rows=False)
    assert str(error.value) == (
        f"train.jsonl row index 3, column 'image': image file not found: imgs/x.png (under {tmp_path}) "
        "(and 4 more bad rows: missing_image 3, unknown_problem_type 1, bad_solution 1; skip_bad_rows=true skips them)"
    )
    with pytest.raises(BadDataError) as error:
        keep_rows(_scan(tmp_path, [_row(), _row(solution="")]), skip_bad_rows=False)
    assert str(error.value) == (
        "train.jsonl row index 1, column 'solution': empty solution '' (skip_bad_rows=true skips such rows)"
    )
    newline = _scan(tmp_path, [_row(problem_type="a\nb")])
    assert "\n" not in str(newline.error()) and "'a\\nb'" in str(newline.error())


def test_skip_bad_rows_drops_them_and_logs_one_line(tmp_path, caplog):
    _png(tmp_path / "imgs" / "good.png")
    rows = [_row("imgs/x.png"), _row(), _row(problem_type="astro"), _row("imgs/y.png"), _row(), _row("imgs/z.png")]
    report = _scan(tmp_path, rows)
    with caplog.at_level(logging.WARNING, logger="datamodules.scan"):
        assert keep_rows(report, skip_bad_rows=True) == [1, 4]
    assert report.counts() == {"missing_image": 3, "unknown_problem_type": 1}
    [record] = caplog.records
    assert record.getMessage() == (
        "train.jsonl: skipping 4 of 6 rows found bad before training (missing_image 3, unknown_problem_type 1): "
        f"row index 0, column 'image': image file not found: imgs/x.png (under {tmp_path}); "
        "row index 2, column 'problem_type': unknown problem_type 'astro'; known: numerical, multiple_choice, math, "
        "ocr, free_form (and aliases); "
        f"row index 3, column 'image': image file not found: imgs/y.png (under {tmp_path}); ..."
    )
    with pytest.raises(BadDataError, match=r"train\.jsonl: no usable row: all 2 rows are bad \(missing_image 2\)"):
        keep_rows(_scan(tmp_path, [_row("imgs/x.png"), _row("imgs/y.png")]), skip_bad_rows=True)


def test_each_distinct_image_is_opened_once(tmp_path, monkeypatch):
    for name in ("a", "b", "c"):
        _png(tmp_path / "imgs" / f"{name}.png")
    opened = []
    real_open = scan.Image.open
    monkeypatch.setattr(scan.Image, "open", lambda fp, *a, **k: opened.append(fp) or real_open(fp, *a, **k))
    rows = [_row(f"imgs/{'abc'[i % 3]}.png") for i in range(999)] + [_row("imgs/none.png")] * 5
    report = _scan(tmp_path, rows)
    assert len(opened) == 3 and [b.row for b in report.bad] == [999, 1000, 1001, 1002, 1003]


def test_the_rl_datamodule_drops_bad_rows_at_setup_or_stops(tmp_path, tiny_checkpoint):
    _png(tmp_path / "imgs" / "good.png")
    rows = [_row(), _row("imgs/x.png"), _row(problem_type="astro"), _row()]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = dict(train_data=str(tmp_path / "train.jsonl"), model_name_or_path=str(tiny_checkpoint))
    with pytest.raises(BadDataError, match=r"train\.jsonl row index 1, column 'image': image file not found"):
        VQADataModule(**args, loader=LoaderConfig(batch_size=4)).setup("fit")
    dm = VQADataModule(
        **args, prompts=PromptConfig(skip_bad_rows=True), loader=LoaderConfig(batch_size=4, shuffle=False)
    )
    dm.setup("fit")
    assert [(r.reason, r.index) for r in dm.dropped_rows("train")] == [
        ("missing_image", 1),
        ("unknown_problem_type", 2),
    ]
    batch = next(iter(dm.train_dataloader()))
    assert batch["index"] == [0, 3] and batch["skipped"] == {}  # full batches of the rows left
    assert dm.dropped_rows("val") == []


# -- vlrl fit ------------------------------------------------------------------------------------------------------
def _fit_config(tmp_path: Path, skip_bad_rows: bool) -> Path:
    _png(tmp_path / "imgs" / "good.png")
    rows = [_row(), _row("imgs/missing.png"), _row(), _row()]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = yaml.safe_load(DEMO.read_text())
    config["model"]["init_args"].update(
        engine={"class_path": "rollout.hf.HFEngine"},
        rewards=[{"class_path": "tests.e2e.test_grpo_cli.TextLengthReward"}],  # varies: groups have advantages
        reward_weights=[1.0],
        rollout={"group_size": 2, "max_new_tokens": 4, "log_samples_every_n_steps": 0},
        update={**config["model"]["init_args"]["update"], "micro_batch_size": 4},
    )
    config["data"] = {
        "class_path": "datamodules.vqa.VQADataModule",
        "init_args": {
            "train_data": str(tmp_path / "train.jsonl"),
            "prompts": {"min_pixels": 56 * 56, "max_pixels": 56 * 56, "skip_bad_rows": skip_bad_rows},
            "loader": {"batch_size": 3, "shuffle": False},
        },
    }
    config["trainer"].update(
        max_steps=1,
        max_epochs=1,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
    )
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path)
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_vlrl_fit_stops_on_a_missing_image_with_one_line_before_any_step(tiny_checkpoint, tmp_path, capsys):
    from vlrl_cli import entry

    model = f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}"
    assert entry(["fit", "-c", str(_fit_config(tmp_path, skip_bad_rows=False)), model]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in err)
    assert (
        [line for line in err if line.startswith("vlrl fit: error:")]
        == [err[-1]]
        == [
            f"vlrl fit: error: {tmp_path / 'train.jsonl'} row index 1, column 'image': image file not found: "
            f"imgs/missing.png (under {tmp_path}) (skip_bad_rows=true skips such rows)"
        ]
    )
    assert not list(tmp_path.rglob("metrics.csv"))  # nothing was logged: no step ran


@pytest.mark.slow
def test_vlrl_fit_with_skip_bad_rows_trains_on_the_rest_and_counts_the_dropped_row(tiny_checkpoint, tmp_path):
    from vlrl_cli import main

    model = f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}"
    cli = main(["fit", "-c", str(_fit_config(tmp_path, skip_bad_rows=True)), model])
    assert cli.trainer.datamodule.datasets["train"].rows == [0, 2, 3]  # one full batch of the rows left
    log_dir = Path(cli.trainer.log_dir)
    metrics = list(csv.DictReader(open(log_dir / "metrics.csv")))
    assert [float(r["data/skipped_missing_image"]) for r in metrics if r.get("data/skipped_missing_image")] == [1.0]
    [report] = [json.loads(line) for line in (log_dir / "skipped_rows.jsonl").read_text().splitlines()]
    assert report["reason"] == "missing_image" and "row index 1, column 'image'" in report["message"]
