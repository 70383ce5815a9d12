"""Cold-start chain-of-thought data the Vision-R1 way (modality bridging), from any RL-format dataset.

Stages, each over every row:
1. ``pseudo_cot``: the VLM looks at the image and question and writes a description plus step-by-step reasoning;
2. ``description``: given its own notes, the VLM writes a detailed description of the image with every detail the
   question needs (no answer);
3. ``reasoning``: a text-only reasoning model solves the question from that description alone, thinking inside
   ``<think>`` and answering inside ``<answer>``.
Then each row's reasoning is filtered (``filters.rejection_reason``: think format, length, repetition, the accuracy
reward against the ground truth) and the kept rows are written as ShareGPT conversations (system prompt and
question exactly as RL prompts them, ``<think>`` template) that ``datamodules.sft.SFTDataModule`` reads unchanged.

Resumable: every stage appends ``{"id", "text"}`` lines to ``<out>/stages/<stage>.jsonl`` as batches finish; a rerun
reads them and sends only the rows still missing (a torn last line from a kill is ignored; rows whose model call
failed are retried). The outputs ``cold_start.jsonl``, ``rejected.jsonl`` and ``report.json`` are rebuilt from the
caches on every run. Departure from the paper: Vision-R1 used its own prompts and a 7B/72B VLM with DeepSeek-R1; the
prompts here are ours and live in the config, the models are whatever the chat clients point at.

The models are ``clients.ChatClient``s (``clients.VLLMChatClient``, ``HFChatClient``, ``OpenAIChatClient``). Built
with ``keep_reasoning=True`` (as the shipped config does), a reasoning model's chain of thought (a
``reasoning_content`` field, or a ``<think>`` the chat template opened) comes back as ``<think>..</think>`` text, so
the format filter sees the whole reasoning; without it every reasoning reply is rejected for its format.

Run: ``vlrl-cold-start -c configs/cold_start/vision_r1_bridge.yaml --data train.jsonl --out runs/cold_start``
(exit status 0 when every row went through every stage; see ``main``). From Python: ``run_pipeline(...)``, or
``run_cli([...command-line arguments])``; both return the report.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from clients.base import ChatClient, ChatRequest
from datamodules.config import PromptConfig
from datamodules.errors import UserError
from datamodules.prompts import sharegpt_row as sft_example
from datamodules.vqa import SkippedRow, VQADataset
from rewards.templates import get_template
from tools.cold_start.filters import FilterConfig, rejection_reason

log = logging.getLogger(__name__)
STAGES = ("pseudo_cot", "description", "reasoning")
TEMPLATE = "think"  # the kept rows' template: Vision-R1's cold start teaches <think> .. </think> <answer> .. </answer>


@dataclass
class Prompts:
    """Our wording of the three requests. Fields in braces: ``{question}`` (with its answer hint), ``{pseudo_cot}``,
    ``{description}``."""

    pseudo_cot: str = (
        "{question}\n\nFirst describe what the image shows that matters for this question, then reason step by "
        "step to the answer."
    )
    description: str = (
        "Question about this image: {question}\n\nYour earlier notes on it:\n{pseudo_cot}\n\nUsing the image and "
        "the notes, write a detailed description of the image that contains every object, number, text and "
        "relation needed to answer the question, so that someone who cannot see the image could answer it. "
        "Describe only; do not answer the question."
    )
    reasoning: str = (
        "An image is described below; you cannot see it. Solve the question from the description alone.\n\n"
        "Description: {description}\n\nQuestion: {question}\n\nThink it through step by step inside <think> "
        "</think>, then give only the final answer inside <answer> </answer>. Use exactly this format: "
        "<think> ... </think> <answer> ... </answer>"
    )


class StageCache:
    """``id -> text`` for one stage, backed by an append-only JSONL file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, str] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # the last line of a killed run may be torn
                    continue
                self.done[record["id"]] = record["text"]
        path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, batch: dict[str, str]) -> None:
        with self.path.open("a") as f:
            for row_id, text in batch.items():
                f.write(json.dumps({"id": row_id, "text": text}, ensure_ascii=False) + "\n")
            f.flush()
        self.done.update(batch)


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _question(row: dict[str, Any]) -> str:
    """The question as RL prompts it (with its answer hint), without image placeholders."""
    return get_template(TEMPLATE).question(row["problem"], row["problem_type"])


def _request(stage: str, row: dict[str, Any], prompts: Prompts, caches: dict[str, StageCache]) -> ChatRequest:
    fields = {"question": _question(row), **{s: caches[s].done.get(row["id"], "") for s in STAGES}}
    text = getattr(prompts, stage).format(**fields)
    return ChatRequest(text=text, images=[] if stage == "reasoning" else list(row["images"]))


def sharegpt_row(row: dict[str, Any], reasoning: str, image_paths: list[str]) -> dict[str, Any]:
    """A kept row in the SFT datamodule's ShareGPT shape (the ``think`` template's system prompt and question)."""
    example = sft_example(row["problem"], row["problem_type"], image_paths, TEMPLATE, reasoning.strip())
    return {"id": row["id"], **example}


def run_pipeline(
    data: str,
    out: str,
    vlm: ChatClient,
    reasoner: ChatClient | None = None,
    prompts: Prompts | None = None,
    filters: FilterConfig | None = None,
    batch_size: int = 16,
    columns: dict[str, str] | None = None,
    default_problem_type: str | None = None,
    image_root: str | None = None,
    min_pixels: int = 3136,
    max_pixels: int = 1003520,
    limit: int | None = None,
    skip_bad_rows: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or continue) the pipeline on ``data`` into folder ``out``; returns the report (also ``report.json``).

    Args:
        data: RL-format rows (any file or folder ``VQADataModule`` reads; solution and problem type required).
        vlm: chat client for the image stages; reasoner: chat client for the text stage (default: ``vlm``).
        batch_size: requests per ``chat`` call (and per cache write).
        min_pixels, max_pixels: image size sent to the models (and saved with the output).
        limit: only the first rows (a trial run; a later run without it continues).
        skip_bad_rows: count and skip unreadable rows instead of stopping on the first.
    """
    prompts, filters = prompts or Prompts(), filters or FilterConfig()
    reasoner = reasoner or vlm
    root = Path(out)
    row_settings = PromptConfig(  # how the rows are read (VQADataset), as RL data
        template=TEMPLATE,
        columns=columns,
        default_problem_type=default_problem_type,
        image_root=image_root,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        skip_bad_rows=skip_bad_rows,
    )
    dataset = VQADataset(data, None, row_settings, limit=limit)
    rows, bad = [], list(dataset.dropped)  # the rows the scan left out (skip_bad_rows), then those unreadable
    for i in range(len(dataset)):
        item = dataset[i]
        (bad if isinstance(item, SkippedRow) else rows).append(item)
    caches = {stage: StageCache(root / "stages" / f"{stage}.jsonl") for stage in STAGES}
    report: dict[str, Any] = {"rows": len(dataset) + len(dataset.dropped), "bad_rows": len(bad), "stages": {}}
    for stage in STAGES:
        client = reasoner if stage == "reasoning" else vlm
        previous = STAGES[STAGES.index(stage) - 1] if stage != STAGES[0] else None
        pending = [
            r
            for r in rows
            if r["id"] not in caches[stage].done and (previous is None or r["id"] in caches[previous].done)
        ]
        failed = 0
        bar = tqdm(total=len(pending), desc=stage, disable=not progress)
        for batch in _batches(pending, batch_size):
            replies = client.chat([_request(stage, r, prompts, caches) for r in batch])
            finished = {r["id"]: text for r, text in zip(batch, replies) if text is not None}
            failed += len(batch) - len(finished)
            caches[stage].add(finished)
            bar.update(len(batch))
        bar.close()
        report["stages"][stage] = {"done": len(caches[stage].done), "new": len(pending) - failed, "failed": failed}

    kept, rejected, reasons = [], [], Counter()
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for row in rows:
        text = caches["reasoning"].done.get(row["id"])
        if text is None:
            reasons["unfinished"] += 1
            continue
        reason = rejection_reason(text, row["solution"], row["problem_type"], filters)
        if reason:
            reasons[reason] += 1
            rejected.append({"id": row["id"], "reason": reason, "text": text})
            continue
        paths = []
        for k, image in enumerate(row["images"]):
            path = images_dir / f"{row['index']:07d}_{k}.png"
            if not path.exists():
                image.save(path)
            paths.append(f"images/{path.name}")
        kept.append(sharegpt_row(row, text, paths))
    _write_jsonl(root / "cold_start.jsonl", kept)
    _write_jsonl(root / "rejected.jsonl", rejected)
    (root / "bad_rows.txt").write_text("".join(b.message + "\n" for b in bad))
    report.update(kept=len(kept), rejected=dict(sorted(reasons.items())))
    (root / "report.json").write_text(json.dumps(report, indent=2))
    log.info(
        "cold start: %d rows, %d kept, rejected %s, bad rows %d", report["rows"], len(kept), dict(reasons), len(bad)
    )
    return report


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".jsonl.partial")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(path)


def run_cli(args: list[str] | None = None) -> dict[str, Any]:
    """Parse ``vlrl-cold-start`` arguments (YAML ``-c`` and the command line, jsonargparse) and run the pipeline;
    returns its report. The importable form of the command, for notebooks and tests."""
    from jsonargparse import CLI

    return CLI(run_pipeline, args=args, as_positional=False, prog="vlrl cold-start")


def main(args: list[str] | None = None) -> int:
    """``vlrl-cold-start``: prints the report; the exit status says whether the run finished.

    0: every row went through every stage. 1: a request failed (the outputs hold the rows that finished; rerun to
    retry the rest), or the data, a model or an output folder could not be used (one line on stderr). 2: bad
    arguments (jsonargparse's usage message), or a path that is not there (a ``UserError``, one line on stderr).
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[vlrl-cold-start] %(message)s"))
    for name in ("tools.cold_start", "clients"):  # the pipeline's progress lines and the models' start-up, on stderr
        if not logging.getLogger(name).handlers:
            logging.getLogger(name).addHandler(handler)
            logging.getLogger(name).setLevel(logging.INFO)
    try:
        report = run_cli(args)
    except UserError as e:
        print(f"vlrl-cold-start: error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError) as e:
        log.debug("cold start failed", exc_info=True)
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"vlrl-cold-start: error: {type(e).__name__}: {message}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    failed = {stage: counts["failed"] for stage, counts in report["stages"].items() if counts["failed"]}
    if failed:
        print(
            f"vlrl-cold-start: error: requests failed {failed}; rerun the same command to retry those rows",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
