"""Shortcut diagnostics: the pure parts on hand-made rows, and on the tiny model a model made blind (its vision
merger zeroed, so every image embeds to zeros) answers identically with and without the image, so its visual
dependency is exactly 0, while the intact model's answers change when the image is blanked."""

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from evaluation.diagnostics import BLANK, blank_like, length_vs_correctness, reasoning_words
from tests.e2e import HF_ENGINE
from tests.forked import fork_server
from vlrl_cli import main

DEMO = Path(__file__).parents[2] / "configs" / "demo_grpo.yaml"


def test_blank_images_keep_sizes():
    rows = [[Image.new("RGB", (56, 84), "red"), Image.new("L", (28, 28))], []]
    blank = blank_like(rows)
    assert [[im.size for im in r] for r in blank] == [[(56, 84), (28, 28)], []]
    assert blank[0][0].getpixel((3, 3)) == BLANK and blank[0][1].mode == "RGB"


def test_reasoning_length_against_correctness():
    texts = [
        "<think>one two</think> <answer>A</answer>",
        "<think>a b c d e f</think> <answer>B</answer>",
        "no tags at all <answer>C</answer>",
        "<think>x</think> <answer>D</answer>",
    ]
    assert [reasoning_words(t) for t in texts] == [2, 6, 4, 1]
    stats = length_vs_correctness(texts, torch.tensor([1.0, 1.0, 0.0, 0.5]), short_words=3)
    assert stats["reasoning_words_correct"] == (4.0, 2)  # rows 0 and 1
    assert stats["short_correct_share"] == (0.5, 2)  # row 0 has fewer than 3 words
    assert stats["reasoning_words_wrong"] == (2.5, 2)  # rows 2 and 3 (partial credit is not correct)
    assert "reasoning_words_wrong" not in length_vs_correctness(texts[:1], torch.tensor([1.0]), 3)


def _blind_checkpoint(tiny_checkpoint, out: Path) -> Path:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        model.model.visual.merger.mlp[2].weight.zero_()
        model.model.visual.merger.mlp[2].bias.zero_()
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(tiny_checkpoint).save_pretrained(out)
    return out


def _validate(checkpoint, tmp_path, name):
    cli = main(
        [
            "validate",
            "-c",
            str(DEMO),
            HF_ENGINE,
            f"--model.init_args.policy.model_name_or_path={checkpoint}",
            "--model.init_args.evaluation.shortcut_diagnostics=true",
            "--model.init_args.evaluation.max_new_tokens=12",
            f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.val_size=8",
            "--data.init_args.loader.limit_val=8",
            "--data.init_args.train_size=8",
            "--data.init_args.loader.val_batch_size=4",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / name}",
            f"--trainer.logger.init_args.save_dir={tmp_path / name}",
        ]
    )
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items()}, cli


def _image_effect(module, batch) -> float:
    """Largest change of the next-token logits when the images are blanked."""
    from rollout.engine import encode_prompts

    with torch.no_grad():
        real = module.policy(**encode_prompts(module.processor, batch["prompt"], batch["images"])).logits[:, -1]
        blank = module.policy(**encode_prompts(module.processor, batch["prompt"], blank_like(batch["images"])))
    return float((real - blank.logits[:, -1]).abs().max())


@pytest.mark.slow
def test_a_model_that_ignores_the_image_has_zero_visual_dependency(tiny_checkpoint, tmp_path):
    blind_dir = _blind_checkpoint(tiny_checkpoint, tmp_path / "blind")
    metrics, cli = _validate(blind_dir, tmp_path, "blind_run")
    for key in ("val/blind_accuracy", "val/visual_dependency", "val/accuracy"):
        assert key in metrics, key
    assert metrics["val/visual_dependency"] == pytest.approx(metrics["val/accuracy"] - metrics["val/blind_accuracy"])
    assert metrics["val/visual_dependency"] == 0.0
    # greedy replies of a model that ignores the image are the same replies, so just as well formed
    assert metrics["val/blind_format_rate"] == metrics["val/format_rate"]

    # the model's next-token logits: identical for the blinded model, different for the intact one
    batch = next(iter(cli.datamodule.val_dataloader()))
    blind_gap = _image_effect(cli.model, batch)
    _, intact = _validate(tiny_checkpoint, tmp_path, "intact_run")
    assert blind_gap == 0.0 and _image_effect(intact.model, batch) > 1e-4
    logged = list(csv.DictReader(open(Path(intact.trainer.log_dir) / "metrics.csv")))
    assert any(r.get("val/visual_dependency") for r in logged)


def _gather_worker(rank: int, port: int, out: str) -> None:
    import json

    import torch.distributed as dist

    from evaluation.diagnostics import gather_tallies

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    local = {"all": [1.0, 2], "colour": [1.0, 2]} if rank == 0 else {"all": [2.0, 3], "shape": [2.0, 3]}
    Path(out, f"{rank}.json").write_text(json.dumps(gather_tallies(local)))
    dist.destroy_process_group()


def test_category_tallies_merge_across_ranks(tmp_path):
    """Two gloo processes with different categories each end with the same merged tally (no rank misses a key)."""
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fork_server()  # the ranks fork from it: no import of the stack again (tests.forked)
    mp.start_processes(_gather_worker, args=(port, str(tmp_path)), nprocs=2, start_method="forkserver")
    merged = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert merged[0] == merged[1] == {"all": [3.0, 5], "colour": [1.0, 2], "shape": [2.0, 3]}
