"""``vlrl fit`` on the demo config, shrunk: two real optimizer steps on the tiny model, then the export loads."""

import csv
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

DEMO = Path(__file__).parents[2] / "configs" / "demo_sft.yaml"


def test_sft_fit_two_steps_changes_weights_and_exports(tiny_checkpoint, synthetic_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    from vlrl_cli import main

    export = tmp_path / "export"
    main(
        [
            "fit",
            "-c",
            str(DEMO),
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
            f"--model.init_args.export_dir={export}",
            f"--data.init_args.train_data={synthetic_dir / 'train_sft_caption.jsonl'}",
            "--data.init_args.val_data=null",
            "--data.init_args.loader.batch_size=2",
            "--data.init_args.examples.min_pixels=3136",
            "--data.init_args.examples.max_pixels=3136",
            "--trainer.max_steps=2",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    before = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint)
    after = AutoModelForImageTextToText.from_pretrained(export)
    changed = [
        n for (n, a), (_, b) in zip(after.named_parameters(), before.named_parameters()) if not torch.equal(a, b)
    ]
    assert changed, "two AdamW steps at lr 1e-3 must change the weights"
    assert any("visual" in n for n in changed), "the vision tower is trained too"
    metrics = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    losses = [float(r["train/loss"]) for r in metrics if r.get("train/loss")]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses)
    assert list(tmp_path.rglob("config.yaml")), "the CLI saves the resolved config beside the logs"
