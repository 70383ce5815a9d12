"""``vlrl predict`` output: one JSON line per prompt, written as batches finish, one file per rank.

Each record: ``id``, ``problem``, ``completion``, ``answer`` (the ``<answer>`` block, None without one, as the
accuracy reward reads it by default), ``completion_tokens``, ``truncated``, and when the row has a solution,
``solution`` and ``score`` (the accuracy reward for its problem type). ``predict_one`` with ``--template plain``
takes the whole reply as the answer, since that template asks for no tags.

``vlrl validate`` / ``vlrl test`` write ``results_{stage}_questions.jsonl`` in the log dir: one line per evaluated
question (``id``, ``category``, ``solution``, ``answer`` as extracted, ``score``, ``completion``), all ranks merged in
dataset order, beside ``results_{stage}.json``; its mean score is the logged ``{stage}/accuracy``.

One image and one question from the command line, without a config:
``python -m lightning_modules.predictions MODEL_DIR --image cat.png --question "How many cats?" [--template think]``
prints the same record as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_modules.run_dir import resolve_log_dir


def write_results(results: dict[str, dict[str, float]], folder: Path, stage: str) -> None:
    """``category -> {accuracy, count}`` (with ``all``) as ``results_{stage}.json`` and ``.csv``, and a table."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"results_{stage}.json").write_text(json.dumps(results, indent=2))
    with (folder / f"results_{stage}.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["category", "accuracy", "count"])
        for key, value in results.items():
            writer.writerow([key, f"{value['accuracy']:.4f}", value["count"]])
    width = max(len(k) for k in results) + 2
    lines = [f"{'category':<{width}}{'accuracy':>10}{'count':>8}"]
    lines += [f"{k:<{width}}{v['accuracy']:>10.3f}{v['count']:>8}" for k, v in results.items()]
    print("\n".join(lines) + f"\n({folder / f'results_{stage}.json'})")


def write_benchmark_results(datamodule: Any, rows: list[dict[str, Any]], folder: Path, stage: str) -> dict | None:
    """When the evaluated data is a benchmark (``BenchmarkDataModule``): score the completions by that benchmark's
    official rules (``evaluation.score``, the code ``vlrl-score`` runs on ``vlrl predict`` output), against the
    records as published (all their category fields); write the same JSON as ``results_{stage}.json`` and print its
    table. Returns the result, or None for other data.

    Every question of the file is scored, as the official scripts do: one that was not evaluated (skipped at loading,
    or left out by ``limit_test_batches``) counts as wrong and is reported as ``missing``. A row repeated by the
    distributed sampler's padding is scored once."""
    benchmark, source = getattr(datamodule, "benchmark", None), getattr(datamodule, "source", None)
    if benchmark is None or source is None:
        return None
    from datamodules.benchmarks import read_published
    from evaluation.report import format_table
    from evaluation.score import score_completions

    published = read_published(benchmark, source)
    ids = [id for id, _ in published]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: question ids repeat, so completions cannot be matched to questions")
    completions: dict[str, str] = {}
    for row in rows:
        completions.setdefault(str(row["id"]), row["completion"])
    unknown = sorted(set(completions) - set(ids))
    if unknown:
        raise ValueError(f"{source}: evaluated ids {unknown[:5]} are not questions of the file ({benchmark})")
    result = score_completions(benchmark, [(record, completions.get(id)) for id, record in published])
    result = {**result, "source": str(source), "evaluated": len(completions)}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"results_{stage}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"{format_table(result)}\n({path})")
    return result


def question_rows(batch: dict[str, Any], texts: Sequence[str], scores: Sequence[float],
                  answer_fallbacks: Sequence[str] = ()) -> list[dict[str, Any]]:  # fmt: skip
    """One row per evaluated question of ``batch`` (see the module docstring); ``index`` (the dataset row) orders
    the merged file and is not written."""
    from rewards.parsing import extract_answer

    categories = batch.get("category") or [None] * len(texts)
    return [{"index": batch["index"][i], "id": batch["id"][i], "category": categories[i],
             "solution": batch["solution"][i], "answer": extract_answer(text, answer_fallbacks), "score": float(score),
             "completion": text} for i, (text, score) in enumerate(zip(texts, scores))]  # fmt: skip


def gather_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's rows (on every rank), in dataset order; the local rows when not distributed. A collective."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, rows)
        rows = [row for part in parts for row in part]
    return sorted(rows, key=lambda row: row["index"])


def write_question_rows(rows: list[dict[str, Any]], folder: Path, stage: str) -> Path:
    """``rows`` (from ``question_rows``) as ``results_{stage}_questions.jsonl`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"results_{stage}_questions.jsonl"
    lines = (json.dumps({k: v for k, v in row.items() if k != "index"}, ensure_ascii=False) + "\n" for row in rows)
    path.write_text("".join(lines))
    print(f"wrote {len(rows)} per-question results to {path}")
    return path


def completion_record(out: Any, row: int, answer_fallbacks: Sequence[str] = ()) -> dict[str, Any]:
    """The generated part of a prediction record for row ``row`` of a rollout ``out``; ``answer_fallbacks`` as
    ``AccuracyReward``'s (default: the ``<answer>`` block only)."""
    from rewards.parsing import extract_answer

    text = out.texts[row]
    return {"completion": text, "answer": extract_answer(text, answer_fallbacks),
            "completion_tokens": int(out.lengths[row]), "truncated": bool(out.truncated[row])}  # fmt: skip


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

    def write_on_batch_end(self, trainer, pl_module, prediction: list[dict[str, Any]], batch_indices, batch,
                           batch_idx: int, dataloader_idx: int) -> None:  # fmt: skip
        with self.output_path(trainer).open("a") as f:
            for record in prediction or []:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.written += len(prediction or [])

    def on_predict_end(self, trainer, pl_module) -> None:
        print(f"wrote {self.written} predictions to {self.output_path(trainer)}")


def predict_one(model: str, image: str, question: str, template: str = "caption", max_new_tokens: int = 512,
                temperature: float = 0.0, top_p: float = 1.0, dtype: str = "float32") -> dict[str, Any]:  # fmt: skip
    """Answer one question about one image with a checkpoint (HF engine; greedy unless ``temperature`` > 0)."""
    from transformers import AutoProcessor

    from datamodules.images import fit_image, load_image
    from datamodules.prompts import build_messages
    from lightning_modules.policy import load_policy
    from rollout.engine import SamplingConfig
    from rollout.hf import HFEngine

    processor = AutoProcessor.from_pretrained(model)
    ip = processor.image_processor
    pixels = getattr(ip, "size", None) or {}
    min_pixels = pixels.get("shortest_edge") or getattr(ip, "min_pixels", 3136)
    max_pixels = pixels.get("longest_edge") or getattr(ip, "max_pixels", 12845056)
    picture = fit_image(load_image(image, None, image), min_pixels, max_pixels, image)
    prompt = processor.apply_chat_template(build_messages(question, 1, template), add_generation_prompt=True,
                                           tokenize=False)  # fmt: skip
    engine = HFEngine()
    engine.setup(load_policy(model, dtype).eval(), processor)
    out = engine.generate([prompt], [[picture]], 1, SamplingConfig(temperature, top_p, 0, max_new_tokens))
    fallbacks = ("text",) if template == "plain" else ()  # the plain template asks for an untagged answer
    return {"image": image, "problem": question, **completion_record(out, 0, fallbacks)}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Answer one question about one image with a checkpoint.")
    parser.add_argument("model", help="a save_pretrained folder (e.g. an export) or hub id")
    parser.add_argument("--image", required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--template", default="caption", choices=["caption", "think", "plain"])
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    record = predict_one(args.model, args.image, args.question, args.template, args.max_new_tokens, args.temperature,
                         args.top_p, args.dtype)  # fmt: skip
    print(json.dumps(record, ensure_ascii=False))


if __name__ == "__main__":
    main()
