"""RL data: image-question rows with a verifiable solution, turned into chat prompts for rollouts.

Accepted rows (column names remappable with ``columns``):
- Visionary-R1 style: ``image`` (one), ``problem``, ``solution`` (``<answer> X </answer>`` or plain),
  ``problem_type`` (numerical | multiple_choice | math | OCR | free-form, aliases accepted);
- Visionary-R1 as its README shows a row: ``prompt`` (a chat conversation: system turn, then a user turn of
  ``{"type": "image"}`` and ``{"type": "text", "text": question}`` parts), ``solution``, ``problem_type``, with the
  image in ``image``. Without a ``problem`` column the question is the text of the conversation's last user turn;
  the conversation's own system turn is not used (Visionary-R1's training script also rebuilds the prompt from
  the question, with its system prompt; ours comes from ``template``);
- geometry3k style: ``images`` (a list), ``problem`` (may hold ``<image>`` placeholders), ``answer``; with no
  problem type column, ``default_problem_type`` applies.
Images may be paths (relative to the data file's folder or ``image_root``), bytes, or PIL images.

Checked when the data loads (an error names the source and column): missing columns, an empty dataset, a JSON
file that does not parse (the error names the file and the line; with ``skip_bad_rows`` the unreadable lines of a
JSON Lines file are skipped, logged, and counted as ``bad_row`` skips like any other). Then every row is scanned
(``datamodules.scan``): missing or unreadable images (the file and its header; an image too elongated to resize),
empty or non-text problems, unknown problem types and solutions the accuracy reward cannot score. A bad row stops
the load with one ``BadDataError`` naming the file, the row index (the row's place in the table, from 0), the column
and the problem; with ``skip_bad_rows`` the bad rows are left out of the dataset, logged in one line, and listed in
``dropped`` (the training modules log their count per reason, ``data/skipped_<reason>``, each epoch). Checked per
row when it is read: what only decoding shows (a truncated image body: an error naming the file and the row index,
or a counted ``bad_row`` skip with ``skip_bad_rows``) and prompts longer than ``max_prompt_length`` (counted skip,
or an error with ``skip_long_prompts=False``). A prompt is never cut: cutting would split an image's tokens from its
pixels.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from datamodules.images import (
    FACTOR,
    BadImageError,
    checkpoint_image_factor,
    fit_image,
    load_image,
    num_image_tokens,
    smart_resize_hw,
)
from datamodules.model_path import require_model
from datamodules.prompts import build_messages
from datamodules.resumable import ResumableDataLoader
from datamodules.scan import Check, ImageCheck, Problem, keep_rows, problem_type_check, scan_table, solution_check
from datamodules.synthetic import TASKS, write_synthetic_dataset
from datamodules.tables import BadLine, read_table
from rewards.problem_types import canonical_problem_type
from rewards.templates import get_template

log = logging.getLogger(__name__)

# Our field -> the column names tried in order when ``columns`` does not name one.
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "image": ("image", "images"),
    "problem": ("problem", "question", "query", "prompt"),  # prompt: a conversation (Visionary-R1's README)
    "solution": ("solution", "answer"),
    "problem_type": ("problem_type",),
    "id": ("id",),
}
REQUIRED = ("image", "problem", "solution")


class SkippedRow:
    """A row left out of a batch, with the reason; the collate function counts them."""

    def __init__(self, reason: str, index: int, message: str):
        self.reason, self.index, self.message = reason, index, message


def bad_line_skips(bad_lines: Sequence[BadLine], start: int) -> list[SkippedRow]:
    """Unreadable lines of JSON Lines files (left out of the table) as ``bad_row`` skips at dataset indices
    ``start``, ``start + 1``, ...: counted in the batches they fall into like any other skip; logged here once."""
    if bad_lines:
        files = sorted({str(b.path) for b in bad_lines})
        log.warning(
            "skipping %d unreadable line(s) of %s: %s",
            len(bad_lines),
            ", ".join(files),
            "; ".join(f"{b.path.name} {b.message}" for b in bad_lines[:10]),
        )
    return [SkippedRow("bad_row", start + k, f"{b.path}: {b.message}") for k, b in enumerate(bad_lines)]


def question_from_conversation(value: Any, where: str) -> str:
    """The question of a chat-format prompt: the text parts of its last user turn (image parts dropped: the row's
    images are placed by ``build_messages``)."""
    if isinstance(value, str):
        return value
    users = [m for m in value or [] if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ValueError(f"{where}: the prompt conversation has no user turn")
    content = users[-1].get("content")
    if isinstance(content, str):
        return content
    texts = [part.get("text") for part in content or [] if isinstance(part, dict) and part.get("type") == "text"]
    return "\n".join(t.strip() for t in texts if isinstance(t, str) and t.strip())


def resolve_columns(
    available: Sequence[str], columns: dict[str, str] | None, source: str, required: Sequence[str] = REQUIRED
) -> dict[str, str | None]:
    """Map our fields to dataset columns; a missing required column is an error naming the source."""
    columns = dict(columns or {})
    unknown = set(columns) - set(DEFAULT_COLUMNS)
    if unknown:
        raise ValueError(f"columns: unknown field(s) {sorted(unknown)}; known: {sorted(DEFAULT_COLUMNS)}")
    resolved: dict[str, str | None] = {}
    for field, candidates in DEFAULT_COLUMNS.items():
        if field in columns:
            if columns[field] not in available:
                raise KeyError(f"{source}: column {columns[field]!r} (for {field!r}) not found; have {list(available)}")
            resolved[field] = columns[field]
        else:
            resolved[field] = next((c for c in candidates if c in available), None)
        if field in required and resolved[field] is None:
            raise KeyError(
                f"{source}: no column for {field!r} (tried {list(candidates)}); have {list(available)}. "
                f"Map one with columns: {{{field}: <name>}}"
            )
    return resolved


class VQADataset(Dataset):
    """Rows of one split as dicts ready for a rollout engine (see ``__getitem__``)."""

    def __init__(
        self,
        source: str | Path,
        tokenizer: Any,
        template: str = "caption",
        split: str = "train",
        columns: dict[str, str] | None = None,
        default_problem_type: str | None = None,
        image_root: str | Path | None = None,
        min_pixels: int = 56 * 56,
        max_pixels: int = 112 * 112,
        max_prompt_length: int = 1024,
        skip_long_prompts: bool = True,
        skip_bad_rows: bool = False,
        answer_hints: bool = True,
        limit: int | None = None,
        labelled: bool = True,
        image_factor: int = FACTOR,
    ) -> None:
        """``labelled=False`` (prediction): no solution or problem type needed; rows without a problem type get no
        answer hint. ``image_factor``: the side in pixels of one image token (``datamodules.images.image_factor``)."""
        self.source = str(source)
        self.labelled = labelled
        loaded = read_table(source, split, skip_bad_lines=skip_bad_rows)
        self.table, root = loaded.dataset, loaded.root
        if limit is not None:
            self.table = self.table.select(range(min(limit, len(self.table))))
        if len(self.table) == 0:
            raise ValueError(f"{self.source}: the dataset is empty")
        self.bad_lines = bad_line_skips(loaded.bad_lines, len(self.table))  # logged here
        if limit is not None:  # the first rows only: which bad lines fall among them is unknown, so none count
            self.bad_lines = []
        required = REQUIRED if labelled else ("image", "problem")
        self.columns = resolve_columns(self.table.column_names, columns, self.source, required)
        self.image_root = Path(image_root) if image_root else root
        self.tokenizer = tokenizer
        self.template = get_template(template).name
        self.min_pixels, self.max_pixels, self.factor = min_pixels, max_pixels, image_factor
        self.max_prompt_length = max_prompt_length
        self.skip_long_prompts, self.skip_bad_rows = skip_long_prompts, skip_bad_rows
        self.answer_hints = answer_hints
        self.problem_types = self._problem_types(default_problem_type)
        self.rows, self.dropped = self._scan()  # the table rows used; the rows the scan left out (skip_bad_rows)

    def _problem_types(self, default: str | None) -> list[str | None]:
        col = self.columns["problem_type"]
        if col is None:
            if default is None and not self.labelled:
                return [None] * len(self.table)
            if default is None:
                raise KeyError(
                    f"{self.source}: no 'problem_type' column; set default_problem_type "
                    f"(one of numerical, multiple_choice, math, ocr, free_form)"
                )
            return [canonical_problem_type(default)] * len(self.table)
        raw = self.table[col][:]  # a list (iterating the column would read rows one by one)
        canon: dict[Any, str | None] = {}
        for value in set(map(_hashable, raw)):
            try:
                canon[value] = canonical_problem_type(value)
            except ValueError:
                canon[value] = None  # unknown: the scan names the rows (a row without one, in predict data, is kept)
        return [canon[_hashable(v)] for v in raw]

    def scan_checks(self) -> dict[str, Check]:
        """The scan's check per column (``datamodules.scan``); unlabelled rows (predict) may lack a problem type."""
        c = self.columns
        checks: dict[str, Check] = {
            c["image"]: ImageCheck(
                self.image_root,
                size_rule=partial(
                    smart_resize_hw, min_pixels=self.min_pixels, max_pixels=self.max_pixels, factor=self.factor
                ),
            ),
            c["problem"]: problem_check,
        }
        if c["problem_type"]:
            checks[c["problem_type"]] = problem_type_check if self.labelled else _unless_none(problem_type_check)
        if c["solution"] and self.labelled:
            checks[c["solution"]] = solution_check
        return checks

    def _scan(self) -> tuple[list[int], list[SkippedRow]]:
        """Every row scanned before use: a bad row is a ``BadDataError``, or with ``skip_bad_rows`` left out (and
        returned as a skip, to be counted)."""
        self.scan = scan_table(self.table, self.scan_checks(), self.source)
        rows = keep_rows(self.scan, self.skip_bad_rows)
        return rows, [SkippedRow(b.reason, b.row, b.line()) for b in self.scan.bad]

    def __len__(self) -> int:
        return len(self.rows) + len(self.bad_lines)

    def prompt_length(self, prompt: str, images: Sequence[Any]) -> int:
        """Tokens of the prompt once each image placeholder is expanded to its image tokens."""
        text_tokens = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return text_tokens - len(images) + sum(num_image_tokens(im, self.factor) for im in images)

    def __getitem__(self, position: int) -> dict[str, Any] | SkippedRow:
        if position >= len(self.rows):  # an unreadable line of a JSON Lines file (skip_bad_rows)
            return self.bad_lines[position - len(self.rows)]
        index = self.rows[position]  # the table row: messages, ids and records name it
        row = self.table[index]
        where = f"{self.source} row index {index}"
        value = row[self.columns["image"]]
        values = value if isinstance(value, (list, tuple)) else [value]
        try:
            if not values or any(v is None for v in values):
                raise BadImageError(f"{where}: no image")
            images = [
                fit_image(load_image(v, self.image_root, where), self.min_pixels, self.max_pixels, where, self.factor)
                for v in values
            ]
            problem = row[self.columns["problem"]]
            if isinstance(problem, list):  # a chat-format prompt column (Visionary-R1's README rows)
                problem = question_from_conversation(problem, where)
            solution = row[self.columns["solution"]] if self.columns["solution"] else None
            if not isinstance(problem, str) or not problem.strip():
                raise BadImageError(f"{where}: empty or non-text problem {problem!r}")
            if solution is None and self.labelled:
                raise BadImageError(f"{where}: missing solution")
            problem_type = self.problem_types[index]
            messages = build_messages(problem, len(images), self.template, problem_type, self.answer_hints)
        except (BadImageError, ValueError) as e:
            if self.skip_bad_rows:
                return SkippedRow("bad_row", index, str(e))
            raise
        if self.tokenizer is None:  # rows only (the cold-start pipeline renders its own prompts)
            prompt, length = None, 0
        else:
            prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            length = self.prompt_length(prompt, images)
        if length > self.max_prompt_length:
            message = (
                f"{where}: prompt has {length} tokens (images included) > max_prompt_length {self.max_prompt_length}"
            )
            if self.skip_long_prompts:
                return SkippedRow("prompt_too_long", index, message)
            raise ValueError(message + "; raise max_prompt_length, lower max_pixels, or set skip_long_prompts")
        id_col = self.columns["id"]
        return {
            "id": str(row[id_col]) if id_col else f"{Path(self.source).name}:{index}",
            "index": index,
            "prompt": prompt,
            "messages": messages,
            "images": images,
            "problem": problem,
            "solution": "" if solution is None else str(solution),
            "problem_type": problem_type,
            "prompt_length": length,
            **{k: row.get(k) for k in PASSTHROUGH if k in row},
        }


# Optional columns carried from the data to the batch unchanged: a benchmark's category (per-category accuracy),
# option texts (multiple-choice answers given as text) and stated numeric precision (``datamodules.benchmarks``).
PASSTHROUGH = ("category", "choices", "precision")


def collate_rows(items: Sequence[dict[str, Any] | SkippedRow]) -> dict[str, Any]:
    """Column lists of the kept rows, plus ``skipped`` (reason -> count) and their messages.

    A batch may come out smaller than the batch size, or empty, when rows were skipped; the consumer counts and
    logs ``skipped`` so the loss of data is never silent.
    """
    kept = [x for x in items if not isinstance(x, SkippedRow)]
    skipped = [x for x in items if isinstance(x, SkippedRow)]
    keys = ("id", "index", "prompt", "messages", "images", "problem", "solution", "problem_type", "prompt_length")
    batch: dict[str, Any] = {k: [x[k] for x in kept] for k in keys}
    for key in PASSTHROUGH:  # benchmark columns, when every kept row has them
        if kept and all(key in x for x in kept):
            batch[key] = [x[key] for x in kept]
    batch["skipped"] = dict(Counter(x.reason for x in skipped))
    batch["skipped_messages"] = [x.message for x in skipped]
    batch["skipped_reasons"] = [x.reason for x in skipped]  # aligned with the messages
    return batch


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, type(None))) else repr(value)


def problem_check(value: Any) -> Problem | None:
    """The scan's check of a problem cell: text, or a conversation whose last user turn has text."""
    try:
        question = question_from_conversation(value, "prompt") if isinstance(value, list) else value
    except (ValueError, TypeError, AttributeError) as e:
        return "bad_problem", str(e)
    if not isinstance(question, str) or not question.strip():
        return "bad_problem", f"empty or non-text problem {value!r}"[:200]
    return None


def _unless_none(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


class VQADataModule(LightningDataModule):
    """RL prompts for GRPO from local files (or a hub name when online).

    Args:
        train_data, val_data, test_data: a JSON/JSONL/parquet/CSV file, a folder of them, a ``save_to_disk``
            folder, or a hub name. ``val_data`` may also map names to sources: one validation set per name, each
            logged under ``val/<name>/...`` (e.g. in-distribution and held-out splits tracked over training).
        predict_data: rows for ``vlrl predict`` (same shapes; solution and problem type optional).
        model_name_or_path: checkpoint whose tokenizer renders and counts prompts (linked to the model's in the CLI).
        template: ``caption`` (Visionary-R1), ``think`` (R1/Vision-R1) or ``plain``.
        batch_size: prompts per step per device (each gets G completions in the rollout).
        min_pixels, max_pixels: image area bounds, as in Qwen2.5-VL's processor; images are resized here.
        max_prompt_length: prompts over this many tokens (images included) are skipped and counted.
        columns: our field -> dataset column (fields: image, problem, solution, problem_type, id).
        default_problem_type: for datasets without a problem type column (e.g. ``math`` for geometry3k).
        skip_bad_rows: leave out the rows the scan at setup finds bad (``datamodules.scan``), and skip rows found
            unreadable when read, counting both, instead of stopping with an error naming the row.
    """

    def __init__(
        self,
        train_data: str | None = None,
        val_data: str | dict[str, str] | None = None,
        test_data: str | None = None,
        predict_data: str | None = None,
        model_name_or_path: str = "Qwen/Qwen2.5-VL-3B-Instruct",
        template: str = "caption",
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        min_pixels: int = 3136,
        max_pixels: int = 12845056,
        max_prompt_length: int = 1024,
        columns: dict[str, str] | None = None,
        default_problem_type: str | None = None,
        image_root: str | None = None,
        skip_long_prompts: bool = True,
        skip_bad_rows: bool = False,
        answer_hints: bool = True,
        shuffle: bool = True,
        seed: int = 0,
        limit_val: int | None = None,
    ) -> None:
        super().__init__()
        get_template(template)  # an unknown template fails here, naming the known ones
        self.save_hyperparameters()
        self.datasets: dict[str, VQADataset] = {}
        self.tokenizer = None
        self.image_factor = FACTOR

    def dataset_kwargs(self) -> dict[str, Any]:
        h = self.hparams
        return dict(
            tokenizer=self.tokenizer,
            image_factor=self.image_factor,
            template=h.template,
            columns=h.columns,
            default_problem_type=h.default_problem_type,
            image_root=h.image_root,
            min_pixels=h.min_pixels,
            max_pixels=h.max_pixels,
            max_prompt_length=h.max_prompt_length,
            skip_long_prompts=h.skip_long_prompts,
            skip_bad_rows=h.skip_bad_rows,
            answer_hints=h.answer_hints,
        )

    def setup(self, stage: str | None = None) -> None:
        from transformers import AutoTokenizer

        if self.tokenizer is None:
            self.tokenizer = AutoTokenizer.from_pretrained(require_model(self.hparams.model_name_or_path))
            self.image_factor = checkpoint_image_factor(self.hparams.model_name_or_path)
        h = self.hparams
        sources = {"train": h.train_data, "test": h.test_data, "predict": h.predict_data}
        sources.update(
            {f"val/{name}": src for name, src in h.val_data.items()}
            if isinstance(h.val_data, dict)
            else {"val": h.val_data}
        )
        val_splits = tuple(s for s in sources if s.startswith("val"))
        wanted = {"fit": ("train", *val_splits), "validate": val_splits, "test": ("test",), "predict": ("predict",)}
        for split in wanted.get(stage, tuple(sources)):
            if sources[split] and split not in self.datasets:
                kind = "val" if split.startswith("val") else "test" if split == "predict" else split
                self.datasets[split] = VQADataset(
                    sources[split],
                    split=kind,
                    labelled=split != "predict",
                    limit=self.hparams.limit_val if kind == "val" else None,
                    **self.dataset_kwargs(),
                )

    def dropped_rows(self, split: str) -> list[SkippedRow]:
        """The rows the scan left out of ``split`` (``train``, ``val`` (every validation set), ``test``, ``predict``)
        with ``skip_bad_rows``; empty before ``setup``."""
        return [r for name, ds in self.datasets.items() if name.split("/")[0] == split for r in ds.dropped]

    @property
    def val_names(self) -> list[str]:
        """Names of the validation sets when ``val_data`` maps names to sources (empty for a single set)."""
        return list(self.hparams.val_data) if isinstance(self.hparams.val_data, dict) else []

    def _dataset(self, split: str) -> VQADataset:
        if split not in self.datasets:
            raise RuntimeError(f"no {split} data: set {split}_data in the datamodule config")
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        """Resumable: a run restarted from a checkpoint continues at the next batch in the same order."""
        return ResumableDataLoader(
            self._dataset("train"),
            batch_size=self.hparams.batch_size,
            shuffle=self.hparams.shuffle,
            seed=self.hparams.seed,
            num_workers=self.hparams.num_workers,
            collate_fn=collate_rows,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(
            self._dataset(split),
            batch_size=self.hparams.val_batch_size or self.hparams.batch_size,
            shuffle=False,
            num_workers=self.hparams.num_workers,
            collate_fn=collate_rows,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """No validation data: no loaders, so a fit trains without validation (``vlrl validate`` refuses to start
        without it, see ``lightning_modules.preflight``)."""
        if self.val_names:
            return [self._eval_loader(f"val/{name}") for name in self.val_names]
        return self._eval_loader("val") if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")


class SyntheticVQADataModule(VQADataModule):
    """The embedded default: the synthetic task of ``datamodules.synthetic`` written to ``data_dir`` on first use,
    then read back through the same file path as any user dataset."""

    def __init__(
        self,
        data_dir: str = "runs/data/synthetic",
        train_size: int = 512,
        val_size: int = 64,
        data_seed: int = 0,
        image_size: int = 112,
        tasks: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("min_pixels", image_size * image_size)
        kwargs.setdefault("max_pixels", image_size * image_size)
        super().__init__(**kwargs)
        self.synthetic = dict(
            data_dir=data_dir,
            train_size=train_size,
            val_size=val_size,
            data_seed=data_seed,
            image_size=image_size,
            tasks=list(tasks or TASKS),
        )
        self.hparams.train_data = str(Path(data_dir) / "train.jsonl")
        self.hparams.val_data = self.hparams.test_data = str(Path(data_dir) / "val.jsonl")
        self.hparams.predict_data = self.hparams.predict_data or self.hparams.val_data

    def prepare_data(self) -> None:
        s = self.synthetic
        # Different seeds per split: validation images are held out from training.
        write_synthetic_dataset(s["data_dir"], s["train_size"], s["data_seed"], "train", s["image_size"], s["tasks"])
        write_synthetic_dataset(
            s["data_dir"], s["val_size"], s["data_seed"] + 10_000, "val", s["image_size"], s["tasks"]
        )

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # idempotent; makes setup() alone enough in notebooks
        super().setup(stage)
