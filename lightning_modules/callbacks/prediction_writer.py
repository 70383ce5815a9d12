"""``vlrl predict`` output: one JSON line per prompt, written as batches finish, one file per rank, and the gather of
evaluation records across ranks.

Each record: ``id``, ``problem``, ``completion``, ``answer`` (the ``<answer>`` block, None without one, as the
accuracy reward reads it by default), ``completion_tokens``, ``truncated``, and when the row has a solution,
``solution`` and ``score`` (the accuracy reward for its problem type).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_modules.run_state import resolve_log_dir


def gather_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's rows (on every rank), in dataset order; the local rows when not distributed. A collective."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, rows)
        rows = [row for part in parts for row in part]
    return sorted(rows, key=lambda row: row["index"])


class JSONLPredictionWriter(BasePredictionWriter):
    """Args: path: the output file (default ``<log dir>/predictions.jsonl``); rank r > 0 writes ``*.rank{r}.jsonl``."""

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.path = path
        self.written = 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.log_dir = resolve_log_dir(trainer)  # a collective under DDP/FSDP: every rank, here

    def output_path(self, trainer) -> Path:
        base = Path(self.path) if self.path else self.log_dir / "predictions.jsonl"
        if trainer.global_rank > 0:
            base = base.with_suffix(f".rank{trainer.global_rank}.jsonl")
        return base

    def on_predict_start(self, trainer, pl_module) -> None:
        path = self.output_path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")  # a new prediction run replaces the file
        self.written = 0

    def write_on_batch_end(
        self,
        trainer,
        pl_module,
        prediction: list[dict[str, Any]],
        batch_indices,
        batch,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        with self.output_path(trainer).open("a") as f:
            for record in prediction or []:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.written += len(prediction or [])

    def on_predict_end(self, trainer, pl_module) -> None:
        print(f"wrote {self.written} predictions to {self.output_path(trainer)}")
