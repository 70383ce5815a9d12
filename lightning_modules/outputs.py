"""Callbacks that write what a run leaves besides checkpoints.

``JSONLPredictionWriter``: ``vlrl predict`` output, one JSON line per prompt, written as batches finish, one file per
rank. Each record: ``id``, ``problem``, ``completion``, ``answer`` (the ``<answer>`` block, None without one, as the
accuracy reward reads it by default), ``completion_tokens``, ``truncated``, and when the row has a solution,
``solution`` and ``score`` (the accuracy reward for its problem type). ``gather_rows`` merges evaluation records
across ranks.

``SkippedRowsReport``: the end-of-run account of every row a run did not use. Datamodules built with
``skip_bad_rows`` / ``skip_long_prompts`` drop unreadable rows and over-long prompts from their batches and say so in
``batch["skipped"]`` (reason -> count), ``batch["skipped_messages"]`` (one line per row naming the file and row) and
``batch["skipped_reasons"]`` (aligned with the messages). The modules log the counts as metrics; this callback keeps
the rows themselves: each skip is appended to ``<log dir>/skipped_rows.jsonl`` (stage, step, reason, message) as it
happens, so a killed run loses nothing, and when fit/validate/test ends a summary is printed:
``skipped 7 rows (train: bad_row 5, prompt_too_long 2); details: runs/x/logs/version_0/skipped_rows.jsonl``. The rows
the data scan left out at setup (``datamodules.scan``; ``dropped_rows``) are recorded first, once per run, by rank 0.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.utilities import rank_zero_info

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


def dropped_rows(trainer, split: str) -> list[Any]:
    """The rows the datamodule's scan left out of ``split`` at setup (``SkippedRow``: reason, index, message); empty
    for a datamodule without a scan or when the loaders were passed directly."""
    datamodule = getattr(trainer, "datamodule", None)
    return list(datamodule.dropped_rows(split)) if hasattr(datamodule, "dropped_rows") else []


# the datamodule's splits whose scans a stage reports
_SCANNED = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}


class SkippedRowsReport(Callback):
    def __init__(self) -> None:
        self.counts: dict[str, Counter] = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.counts = {}
        self.log_dir = resolve_log_dir(trainer)  # a collective under DDP/FSDP: every rank, here
        if trainer.global_rank == 0:  # every rank scanned the same rows
            for split in _SCANNED.get(stage, ()):
                self.record_rows(trainer, split, dropped_rows(trainer, split))

    def path(self, trainer) -> Path:
        name = "skipped_rows.jsonl" if trainer.global_rank == 0 else f"skipped_rows.rank{trainer.global_rank}.jsonl"
        return self.log_dir / name

    def record(self, trainer, stage: str, batch: Any) -> None:
        if not isinstance(batch, dict) or not batch.get("skipped"):
            return
        self.counts.setdefault(stage, Counter()).update(batch["skipped"])
        messages, reasons = batch.get("skipped_messages") or [], batch.get("skipped_reasons") or []
        if len(reasons) != len(messages):  # a datamodule that reports counts only
            reasons = [r for r, n in batch["skipped"].items() for _ in range(n)]
            messages = [""] * len(reasons)
        self._write(trainer, stage, reasons, messages)

    def record_rows(self, trainer, stage: str, rows: list[Any]) -> None:
        """Skipped rows given as ``SkippedRow`` (the scan's)."""
        if rows:
            self.counts.setdefault(stage, Counter()).update(r.reason for r in rows)
            self._write(trainer, stage, [r.reason for r in rows], [r.message for r in rows])

    def _write(self, trainer, stage: str, reasons: list[str], messages: list[str]) -> None:
        path = self.path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            for reason, message in zip(reasons, messages):
                f.write(
                    json.dumps({"stage": stage, "step": trainer.global_step, "reason": reason, "message": message})
                    + "\n"
                )

    def summary(self, trainer) -> str | None:
        total = sum(sum(c.values()) for c in self.counts.values())
        if not total:
            return None
        parts = "; ".join(
            f"{stage}: " + ", ".join(f"{r} {n}" for r, n in sorted(c.items())) for stage, c in self.counts.items() if c
        )
        return f"skipped {total} rows ({parts}); details: {self.path(trainer)}"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.record(trainer, "train", batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self.record(trainer, "val", batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.record(trainer, "test", batch)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.record(trainer, "predict", batch)

    def _report(self, trainer) -> None:
        line = self.summary(trainer)
        if line:
            rank_zero_info(line)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._report(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "validate":
            self._report(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self._report(trainer)

    def on_predict_end(self, trainer, pl_module) -> None:
        self._report(trainer)
