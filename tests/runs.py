"""Run folders written by the project's own writers, without training: scalars through Lightning's ``CSVLogger`` /
``TensorBoardLogger`` (``log_metrics``, as the trainer calls it), samples through ``RolloutCallback``'s writer and
evaluation records through ``evaluation.records``. For the tests of ``tools.run_logs`` and the inspect_run notebook.

``LOGGED`` is a short GRPO run: three training steps and a validation at step 1 (logged as its own row, as Lightning
logs it). Every value is a binary fraction, exact in TensorBoard's float32.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image

from evaluation.records import question_rows, write_question_rows
from lightning_modules.callback import RolloutCallback

LOGGED: list[tuple[int, dict[str, float]]] = [
    (0, {"train/loss": 0.5, "train/kl": 0.0, "reward/total": 0.25, "reward/total_std": 0.5, "reward/format": 0.5}),
    (1, {"train/loss": 0.375, "train/kl": 0.125, "reward/total": 0.5, "reward/total_std": 0.5, "reward/format": 0.75}),
    (1, {"val/accuracy": 0.25, "val/completion_length": 12.0}),
    (2, {"train/loss": 0.25, "train/kl": 0.25, "reward/total": 0.75, "reward/total_std": 0.25, "reward/format": 1.0}),
]


def expected_scalars(logged: list[tuple[int, dict[str, float]]] = LOGGED) -> dict[str, list[tuple[int, float]]]:
    """What ``read_scalars`` should return for ``logged``: each key's ``(step, value)`` in order, keys sorted."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for step, metrics in logged:
        for key, value in metrics.items():
            scalars.setdefault(key, []).append((step, value))
    return dict(sorted(scalars.items()))


def write_run(
    logger: CSVLogger | TensorBoardLogger, logged: list[tuple[int, dict[str, float]]] = LOGGED, status: str = "success"
) -> Path:
    """``logged`` through ``logger.log_metrics``, then the logger finalized; returns its log folder (the run)."""
    for step, metrics in logged:
        logger.log_metrics(metrics, step=step)
    logger.finalize(status)
    return Path(logger.log_dir)


def write_samples(run_dir: Path, step: int, completions: list[str], rewards: dict[str, list[float]]) -> None:
    """One step's ``samples.jsonl`` records, written by ``RolloutCallback``'s own writer (one prompt, its group)."""
    image = Image.new("RGB", (4, 4))
    image.info["vlrl_source"] = "images/0.png"
    batch = {"id": ["q0"], "images": [[image]], "problem": ["What colour?"], "solution": ["<answer> red </answer>"]}
    info = {"texts": completions, "components": {k: torch.tensor(v) for k, v in rewards.items()}}
    callback = SimpleNamespace(log_dir=run_dir, settings=SimpleNamespace(num_logged_samples=len(completions)))
    RolloutCallback._write_samples(callback, SimpleNamespace(global_step=step), batch, info, len(completions))


def write_question_records(run_dir: Path, stage: str, completions: list[str], scores: list[float]) -> None:
    """An evaluation's ``results_<stage>_questions.jsonl``, by ``evaluation.records``' writer."""
    n = len(completions)
    batch = {"index": list(range(n)), "id": [f"q{i}" for i in range(n)], "solution": ["<answer> B </answer>"] * n}
    write_question_rows(question_rows(batch, completions, scores), run_dir, stage)
