"""The skipped-rows report names each row with its own reason, also when one batch mixes reasons."""

import json
from types import SimpleNamespace

from datamodules.config import PromptConfig
from datamodules.vqa import SkippedRow, VQADataset, collate_rows
from lightning_modules.outputs import SkippedRowsReport


def test_each_skipped_row_keeps_its_own_reason(synthetic_dir, tokenizer, tmp_path):
    rows = [json.loads(x) for x in (synthetic_dir / "train.jsonl").open()][:3]
    good = (synthetic_dir / rows[0]["image"]).read_bytes()
    for name in ("nowhere.png", "gone.png"):  # headers intact, bodies cut: unreadable, seen only when read
        (tmp_path / name).write_bytes(good[: len(good) // 2])
    rows[0]["image"] = str(tmp_path / "nowhere.png")
    rows[2]["image"] = str(tmp_path / "gone.png")  # after a row that is too long
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = PromptConfig(
        image_root=str(synthetic_dir), skip_bad_rows=True, max_prompt_length=20, min_pixels=56 * 56, max_pixels=56 * 56
    )
    ds = VQADataset(path, tokenizer, prompts)
    batch = collate_rows([ds[i] for i in range(3)])
    assert batch["skipped"] == {"bad_row": 2, "prompt_too_long": 1}
    report = SkippedRowsReport()
    trainer = SimpleNamespace(global_rank=0, global_step=4, log_dir=str(tmp_path), default_root_dir=str(tmp_path))
    report.setup(trainer, None, "fit")
    report.record(trainer, "train", batch)
    lines = [json.loads(x) for x in (tmp_path / "skipped_rows.jsonl").read_text().splitlines()]
    assert [(r["reason"], r["message"].split(":")[0].endswith(f"row index {i}")) for i, r in enumerate(lines)] == [
        ("bad_row", True),
        ("prompt_too_long", True),
        ("bad_row", True),
    ]
    assert "nowhere.png" in lines[0]["message"] and "max_prompt_length" in lines[1]["message"]
    assert report.summary(trainer).startswith("skipped 3 rows (train: bad_row 2, prompt_too_long 1)")


def test_rows_the_scan_dropped_are_reported_first_once_by_rank_0(tmp_path):
    dropped = {"train": [SkippedRow("missing_image", 5, "d.jsonl row index 5, column 'image': image file not found")]}
    datamodule = SimpleNamespace(dropped_rows=lambda split: dropped.get(split, []))
    trainer = SimpleNamespace(global_rank=0, global_step=0, log_dir=str(tmp_path), datamodule=datamodule)
    report = SkippedRowsReport()
    report.setup(trainer, None, "fit")
    lines = [json.loads(x) for x in (tmp_path / "skipped_rows.jsonl").read_text().splitlines()]
    assert lines == [{"stage": "train", "step": 0, "reason": "missing_image", "message": dropped["train"][0].message}]
    assert report.summary(trainer).startswith("skipped 1 rows (train: missing_image 1)")
    other_rank = SimpleNamespace(global_rank=1, global_step=0, log_dir=str(tmp_path / "r1"), datamodule=datamodule)
    report.setup(other_rank, None, "fit")
    assert report.summary(other_rank) is None and not (tmp_path / "r1").exists()
