"""Evaluator: what validation, test and predict share in the GRPO module. It generates for held-out rows with the
rollout engine, scores them with the evaluation copies of the configured rewards (``EvalScorers``), keeps each
stage's per-question records and per-category tallies, and at the end of an epoch merges them across ranks and
writes the results files (``evaluation.records``).

A stage is the name its metrics are logged under: ``val``, ``val/<name>`` per named validation set, or ``test``.
Its files use the stage with ``/`` replaced by ``_`` (``results_val_indist_questions.jsonl``). The evaluator logs
through the ``log`` function it is given (the module's ``self.log``), so Lightning aggregates its metrics over the
epoch as it does the module's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from evaluation.diagnostics import blank_like, gather_tallies, length_vs_correctness
from evaluation.records import (
    completion_record,
    question_rows,
    write_benchmark_results,
    write_question_rows,
    write_results,
)
from lightning_modules.config import EvalConfig
from lightning_modules.metrics import EvalScorers
from lightning_modules.outputs import gather_rows
from rollout.engine import Rollout, RolloutEngine


def val_stages(datamodule: Any) -> list[str]:
    """``val``, or ``val/<name>`` per named validation set (``VQADataModule(val_data={name: source})``)."""
    names = getattr(datamodule, "val_names", None) if datamodule is not None else None
    return [f"val/{name}" for name in names] if names else ["val"]


def file_stage(stage: str) -> str:
    """The stage as it appears in file names: ``val/indist`` -> ``val_indist``."""
    return stage.replace("/", "_")


class Evaluator:
    """See the module docstring.

    Args:
        config: generation length and sampling, the shortcut diagnostics (``EvalConfig``).
        scorers: the evaluation copies of the configured rewards.
        engine: the rollout engine that generates.
        rollout_max_new_tokens: the generation length when ``config.max_new_tokens`` is not set (the rollout's).
        log: ``log(key, value, **options)``, the module's ``self.log``.
    """

    def __init__(
        self,
        config: EvalConfig,
        scorers: EvalScorers,
        engine: RolloutEngine,
        rollout_max_new_tokens: int,
        log: Callable[..., None],
    ) -> None:
        self.config, self.scorers, self.engine = config, scorers, engine
        self.rollout_max_new_tokens, self._log = rollout_max_new_tokens, log
        self.tallies: dict[str, dict[str, list]] = {}  # stage -> category -> [score sum, rows]
        self.rows: dict[str, list[dict[str, Any]]] = {}  # stage -> one record per question (this rank's)

    def generate(self, batch: dict[str, Any]) -> Rollout:
        """One completion per prompt (greedy unless ``config.sampling`` says otherwise)."""
        max_new = self.config.max_new_tokens or self.rollout_max_new_tokens
        sampling = replace(self.config.sampling, max_new_tokens=max_new)
        return self.engine.generate(batch["prompt"], batch["images"], 1, sampling)

    def log(self, key: str, value, **options) -> None:
        """Evaluation keys already name their validation set (``val/<name>/...``): no ``/dataloader_idx_N`` suffix."""
        self._log(key, value, add_dataloader_idx=False, **options)

    # -- an epoch --------------------------------------------------------------------------------------------------
    def start(self, stages: list[str]) -> None:
        """Forget what an earlier (or interrupted) epoch of these stages left."""
        for stage in stages:
            self.tallies.pop(stage, None)
            self.rows.pop(stage, None)

    def evaluate(self, batch: dict[str, Any], stage: str) -> None:
        """Completions for held-out rows: accuracy, format rate (if a format reward is configured), length, each
        question's record, and the shortcut diagnostics when they are on."""
        if not batch["prompt"]:
            return
        out = self.generate(batch)
        columns = self.scorers.columns(batch)
        size = len(out.texts)
        correct = self.scorers.accuracy(out.texts, **columns)  # [n]
        self.log(f"{stage}/accuracy", correct.mean(), batch_size=size, prog_bar=True)
        self.record(batch, out.texts, correct, stage)
        if self.config.shortcut_diagnostics:
            self.shortcut_diagnostics(batch, out.texts, correct, columns, stage)
        fmt = self.scorers.format
        if fmt is not None:
            key = "format_rate" if fmt.name == "format" else fmt.name
            self.log(f"{stage}/{key}", fmt(out.texts, **columns).mean(), batch_size=size)
        self.log(f"{stage}/completion_length", out.lengths.float().mean(), batch_size=size)

    def record(self, batch: dict[str, Any], texts: list[str], correct: torch.Tensor, stage: str) -> None:
        """Each question's record for ``results_{stage}_questions.jsonl`` and its score in the per-category tally."""
        rows = question_rows(batch, texts, correct.tolist(), self.scorers.accuracy.answer_fallbacks)
        self.rows.setdefault(stage, []).extend(rows)
        tally = self.tallies.setdefault(stage, {})
        for category, score in zip(batch.get("category") or ["all"] * len(texts), correct.tolist()):
            for key in {"all", str(category)}:
                total = tally.setdefault(key, [0.0, 0])
                total[0], total[1] = total[0] + score, total[1] + 1

    def shortcut_diagnostics(
        self, batch: dict[str, Any], texts: list[str], correct: torch.Tensor, columns: dict[str, Any], stage: str
    ) -> None:
        """See ``evaluation.diagnostics``: image-blind accuracy and visual dependency, caption sufficiency,
        reasoning length against correctness."""
        size = len(texts)
        blind = self.generate({**batch, "images": blank_like(batch["images"])})
        blind_correct = self.scorers.accuracy(blind.texts, **columns)  # [n]
        self.log(f"{stage}/blind_accuracy", blind_correct.mean(), batch_size=size)
        self.log(f"{stage}/visual_dependency", (correct - blind_correct).mean(), batch_size=size)
        if self.scorers.format is not None and self.scorers.format.name == "format":  # blind replies still answers?
            self.log(f"{stage}/blind_format_rate", self.scorers.format(blind.texts, **columns).mean(), batch_size=size)
        if self.scorers.caption is not None:
            self.log(f"{stage}/caption_sufficiency", self.scorers.caption(texts, **columns).mean(), batch_size=size)
        for name, (value, count) in length_vs_correctness(texts, correct, self.config.short_reasoning_words).items():
            self.log(f"{stage}/{name}", value, batch_size=count)

    def report(self, stage: str, datamodule: Any, log_dir: Path, is_global_zero: bool) -> None:
        """The epoch's per-question records, merged across ranks, as ``results_{stage}_questions.jsonl``; on a
        benchmark its official score as ``results_{stage}.json`` (logged as ``{stage}/benchmark_accuracy``),
        otherwise per-category accuracy (logged as ``{stage}/accuracy/<category>``, written as
        ``results_{stage}.json`` / ``.csv``) when there are categories. Collective: every rank calls it."""
        tally = gather_tallies(self.tallies.pop(stage, {}))
        rows = gather_rows(self.rows.pop(stage, []))
        if is_global_zero:
            write_question_rows(rows, log_dir, file_stage(stage))
            official = write_benchmark_results(datamodule, rows, log_dir, file_stage(stage))
            if official is not None:  # a benchmark: its official accuracy replaces the reward's per category
                self._log(f"{stage}/benchmark_accuracy", official["accuracy"], rank_zero_only=True)
        if len(tally) <= 1 or getattr(datamodule, "benchmark", None) is not None:
            return
        results = {key: {"accuracy": score / count, "count": count} for key, (score, count) in sorted(tally.items())}
        for key, value in results.items():
            if key != "all":
                self._log(f"{stage}/accuracy/{key}", value["accuracy"], rank_zero_only=True)
        if is_global_zero:
            write_results(results, log_dir, file_stage(stage))

    def log_counts(self, split: str) -> None:
        """The scorers' counters of the epoch (e.g. ``val/counts/caption/judge_failed``), summed over ranks; the
        training rewards' counters are logged per step under their own names."""
        for key, value in self.scorers.metrics().items():
            self._log(f"{split}/counts/{key}", value, reduce_fx="sum", sync_dist=True)

    # -- predict ---------------------------------------------------------------------------------------------------
    def predict(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """One record per prompt (see ``evaluation.records``); rows with a solution are also scored."""
        if not batch["prompt"]:
            return []
        out = self.generate(batch)
        accuracy = self.scorers.accuracy
        records = []
        for i, text in enumerate(out.texts):
            record = {"id": batch["id"][i], "problem": batch["problem"][i]}
            record.update(completion_record(out, i, accuracy.answer_fallbacks))
            if batch["solution"][i] and batch["problem_type"][i]:
                record["solution"] = batch["solution"][i]
                columns = {key: [values[i]] for key, values in self.scorers.columns(batch).items()}
                record["score"] = float(accuracy([text], **columns)[0])
            records.append(record)
        return records
