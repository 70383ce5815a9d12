"""The skipped-rows report names each row with its own reason, also when one batch mixes reasons."""

import json
from types import SimpleNamespace

from datamodules.vqa import VQADataset, collate_rows
from lightning_modules.outputs import SkippedRowsReport


def test_each_skipped_row_keeps_its_own_reason(synthetic_dir, tokenizer, tmp_path):
    rows = [json.loads(x) for x in (synthetic_dir / "train.jsonl").open()][:3]
    rows[0]["image"] = "images/nowhere.png"  # unreadable
    rows[2]["image"] = "images/gone.png"  # unreadable, after a row that is too long
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = VQADataset(
        path,
        tokenizer,
        image_root=synthetic_dir,
        skip_bad_rows=True,
        max_prompt_length=20,
        min_pixels=56 * 56,
        max_pixels=56 * 56,
    )
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
