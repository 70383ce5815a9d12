"""RL data: image-question rows with a verifiable solution, turned into chat prompts for rollouts.

Accepted rows (column names remappable with ``prompts.columns``):
- Visionary-R1 style: ``image`` (one), ``problem``, ``solution`` (``<answer> X </answer>`` or plain),
  ``problem_type`` (numerical | multiple_choice | math | OCR | free-form, aliases accepted);
- Visionary-R1 as its README shows a row: ``prompt`` (a chat conversation: system turn, then a user turn of
  ``{"type": "image"}`` and ``{"type": "text", "text": question}`` parts), ``solution``, ``problem_type``, with the
  image in ``image``. Without a ``problem`` column the question is the text of the conversation's last user turn;
  the conversation's own system turn is not used (Visionary-R1's training script also rebuilds the prompt from
  the question, with its system prompt; ours comes from ``prompts.template``);
- geometry3k style: ``images`` (a list), ``problem`` (may hold ``<image>`` placeholders), ``answer``; with no
  problem type column, ``prompts.default_problem_type`` applies.
Images may be paths (relative to the data file's folder or ``prompts.image_root``), bytes, or PIL images.

How a row becomes a prompt is one group of settings, ``datamodules.config.PromptConfig`` (``VQADataset`` and
``VQADataModule`` both take it); how rows are batched another, ``LoaderConfig``.

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

from datamodules.config import (
    DEFAULT_COLUMNS,
    MAX_PIXELS,
    MIN_PIXELS,
    LoaderConfig,
    PromptConfig,
    from_plain,
    plain_hparams,
)
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
        prompts: PromptConfig = PromptConfig(),
        split: str = "train",
        limit: int | None = None,
        labelled: bool = True,
        image_factor: int = FACTOR,
    ) -> None:
        """``prompts``: how a row becomes a prompt (an unset image bound: ``PromptConfig``'s default). ``tokenizer``
        None: rows only, no prompt text (the cold-start pipeline renders its own). ``limit``: the first rows only.
        ``labelled=False`` (prediction): no solution or problem type needed; rows without a problem type get no
        answer hint. ``image_factor``: the side in pixels of one image token (``datamodules.images.image_factor``)."""
        prompts = prompts.with_image_bounds(MIN_PIXELS, MAX_PIXELS)
        self.source = str(source)
        self.labelled = labelled
        loaded = read_table(source, split, skip_bad_lines=prompts.skip_bad_rows)
        self.table, root = loaded.dataset, loaded.root
        if limit is not None:
            self.table = self.table.select(range(min(limit, len(self.table))))
        if len(self.table) == 0:
            raise ValueError(f"{self.source}: the dataset is empty")
        self.bad_lines = bad_line_skips(loaded.bad_lines, len(self.table))  # logged here
        if limit is not None:  # the first rows only: which bad lines fall among them is unknown, so none count
            self.bad_lines = []
        required = REQUIRED if labelled else ("image", "problem")
        self.columns = resolve_columns(self.table.column_names, prompts.columns, self.source, required)
        self.image_root = Path(prompts.image_root) if prompts.image_root else root
        self.tokenizer = tokenizer
        self.template = get_template(prompts.template).name
        self.min_pixels, self.max_pixels, self.factor = prompts.min_pixels, prompts.max_pixels, image_factor
        self.max_prompt_length = prompts.max_prompt_length
        self.skip_long_prompts, self.skip_bad_rows = prompts.skip_long_prompts, prompts.skip_bad_rows
        self.answer_hints = prompts.answer_hints
        self.problem_types = self._problem_types(prompts.default_problem_type)
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
        train_data: the training rows: a JSON/JSONL/parquet/CSV file, a folder of them, a ``save_to_disk`` folder, or
            a hub name (the row shapes: ``datamodules.vqa``).
        val_data: the validation rows (as ``train_data``), or a mapping of names to sources: one validation set per
            name, each logged under ``val/<name>/...`` (e.g. in-distribution and held-out splits tracked over
            training). None: a fit trains without validation.
        test_data: the rows ``vlrl test`` scores (as ``train_data``).
        predict_data: rows for ``vlrl predict`` (same shapes; solution and problem type optional).
        model_name_or_path: checkpoint whose tokenizer renders and counts prompts (linked to the model's in the CLI).
        prompts: how a row becomes a prompt (``datamodules.config.PromptConfig``).
        loader: how the rows are batched (``datamodules.config.LoaderConfig``).
    """

    def __init__(
        self,
        train_data: str | None = None,
        val_data: str | dict[str, str] | None = None,
        test_data: str | None = None,
        predict_data: str | None = None,
        model_name_or_path: str = "Qwen/Qwen2.5-VL-3B-Instruct",
        prompts: PromptConfig = PromptConfig(),
        loader: LoaderConfig = LoaderConfig(),
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # a checkpoint's or a notebook's groups are dicts: rebuilt (and checked) here; an unset image bound: the default
        self.prompt_config = from_plain(PromptConfig, prompts).with_image_bounds(MIN_PIXELS, MAX_PIXELS)
        self.loader_config = from_plain(LoaderConfig, loader)
        self.hparams.update(prompts=self.prompt_config, loader=self.loader_config)
        plain_hparams(self.hparams)  # checkpoints hold plain values: they load with torch.load(weights_only=True)
        self.datasets: dict[str, VQADataset] = {}
        self.tokenizer = None
        self.image_factor = FACTOR

    # what the training modules read of the data (the rollout engine's step shape, the template the rewards check)
    @property
    def template(self) -> str:
        """The output template the prompts ask for (``prompts.template``)."""
        return self.prompt_config.template

    @property
    def batch_size(self) -> int:
        """Prompts per training step per device (``loader.batch_size``)."""
        return self.loader_config.batch_size

    @property
    def max_prompt_length(self) -> int:
        """The most tokens a prompt takes, images included (``prompts.max_prompt_length``)."""
        return self.prompt_config.max_prompt_length

    @property
    def min_pixels(self) -> int:
        """The smallest image area in pixels (``prompts.min_pixels``, an unset one resolved)."""
        return self.prompt_config.min_pixels

    @property
    def max_pixels(self) -> int:
        """The largest image area in pixels (``prompts.max_pixels``, an unset one resolved)."""
        return self.prompt_config.max_pixels

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
                    self.tokenizer,
                    self.prompt_config,
                    split=kind,
                    limit=self.loader_config.limit_val if kind == "val" else None,
                    labelled=split != "predict",
                    image_factor=self.image_factor,
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
        loader = self.loader_config
        return ResumableDataLoader(
            self._dataset("train"),
            batch_size=loader.batch_size,
            shuffle=loader.shuffle,
            seed=loader.seed,
            num_workers=loader.num_workers,
            collate_fn=collate_rows,
            persistent_workers=loader.num_workers > 0,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        loader = self.loader_config
        return DataLoader(
            self._dataset(split),
            batch_size=loader.val_batch_size or loader.batch_size,
            shuffle=False,
            num_workers=loader.num_workers,
            collate_fn=collate_rows,
            persistent_workers=loader.num_workers > 0,
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


# The synthetic module's default prompts: the image bounds unset, so that they follow ``image_size``.
SYNTHETIC_PROMPTS = PromptConfig(min_pixels=None, max_pixels=None)


class SyntheticVQADataModule(VQADataModule):
    """The embedded default: the synthetic task of ``datamodules.synthetic`` written to ``data_dir`` on first use,
    then read back through the same file path as any user dataset.

    Args:
        data_dir: where the rows (``train.jsonl``, ``val.jsonl``, also the validation, test and default predict
            data) and their images are written; rows already there with the same settings are not rewritten.
        train_size: training rows.
        val_size: validation rows (drawn with ``data_seed + 10000``: held out from training).
        data_seed: the seed the rows are drawn from.
        image_size: the side in pixels of the square images.
        tasks: the synthetic tasks drawn from (default: all of ``datamodules.synthetic.TASKS``).
        prompts: how a row becomes a prompt, as ``VQADataModule``'s, except that the image bounds are unset by
            default: an unset bound is ``image_size``², so the images are read at the size they were drawn.
        kwargs: ``VQADataModule``'s other arguments (``model_name_or_path``, ``loader``; its data paths are set here).
    """

    def __init__(
        self,
        data_dir: str = "runs/data/synthetic",
        train_size: int = 512,
        val_size: int = 64,
        data_seed: int = 0,
        image_size: int = 112,
        tasks: list[str] | None = None,
        prompts: PromptConfig = SYNTHETIC_PROMPTS,
        **kwargs: Any,
    ) -> None:
        area = image_size * image_size
        prompts = from_plain(PromptConfig, prompts, SYNTHETIC_PROMPTS).with_image_bounds(area, area)
        super().__init__(prompts=prompts, **kwargs)
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
