"""Cold-start SFT data: ShareGPT conversations with LLaMA-Factory-style column and tag mapping (the format
Vision-R1's cold-start set is published in), tokenised with the model's processor and an assistant-only loss mask.

Two ways to name the data:
- ``train_data`` (+ ``val_data``): one file or folder with one ``format`` (column and tag names);
- ``dataset_dir`` + ``datasets`` (+ ``val_datasets``): names of entries in ``<dataset_dir>/dataset_info.json``, read
  as LLaMA-Factory reads them (``file_name``, ``formatting: sharegpt``, ``columns``, ``tags``, ``num_samples``; its
  defaults: messages ``conversations``, no images or system column unless named, tags from/value/human/gpt/system).
  Each entry keeps its own mapping; the entries are concatenated, then shuffled. Image paths are relative to
  ``dataset_dir`` (LLaMA-Factory's ``media_dir`` default). Vision-R1-cold is two such entries with different
  schemas (``vision_r1_llava_cot_full``: one ``image`` path per row, human/gpt; ``vision_r1_mulberry_sft_full``:
  ``images``, user/assistant).

By default the examples equal LLaMA-Factory's (0.9.5, template ``qwen2_vl``, ``train_on_prompt: false``) token
for token, labels, image grids and pixel values included (``tests/datamodules/test_sft.py`` checks them against
its own output, stored in ``tests/fixtures/llamafactory``):
- A ``<image>`` placeholder in a turn marks where the row's next image goes; the text around it is kept as written
  (``"<image>\\nWhat..."`` gives ``<|vision_end|>`` then ``"\\nWhat..."``).
- The model's chat template renders the conversation, and each prompt (up to and including
  ``<|im_start|>assistant\\n``) and each reply (through ``<|im_end|>\\n``) is tokenised on its own, as LLaMA-Factory
  encodes turns: a reply that opens with a newline keeps it as its own token instead of merging it into the header's.
- Labels are -100 everywhere except the assistant replies: their text, ``<|im_end|>`` and the newline after it.
- Images: ``examples.min_pixels``/``examples.max_pixels`` are LLaMA-Factory's ``image_min_pixels``/
  ``image_max_pixels`` (and take its defaults): ``datamodules.images.resize_like_llamafactory`` scales the image into
  them, then the processor's own rule (the checkpoint's bounds) rounds each side to the nearest multiple of 28, so an
  image can take a little more than ``max_pixels / 784`` tokens (1280x720 at 589824: 777).

Where this departs from LLaMA-Factory (and why):
- Sequences longer than ``examples.max_length`` are skipped and counted (or an error with ``skip_long=False``), where
  LLaMA-Factory cuts them to ``cutoff_len`` (the prompt, the reply, or both in proportion): cutting can split an
  image's tokens from its pixels or drop the final answer and ``<|im_end|>`` the model should learn to stop with.
- A row with images but no ``<image>`` placeholder gets them at the start of its first user turn (LLaMA-Factory
  stops with "The number of images does not match the number of <image> tokens").
- A row whose roles are unknown or do not alternate user/assistant (after an optional leading system turn) is an
  error naming the file and row index (from 0), or a counted skip with ``skip_bad_rows``; LLaMA-Factory drops it
  with a log line.
  A missing or unreadable image (its file and header: ``datamodules.scan``, for every row when the data loads) is
  one error naming the file, row and column, or with ``skip_bad_rows`` the row is left out and logged (LLaMA-Factory
  stops when it reaches the row); an image whose body turns out corrupt when read is the same kind of error, or a
  counted skip.
- Hub, script and cloud entries, tool/video/audio columns and formattings other than ``sharegpt`` are refused with
  an error naming the entry and key (LLaMA-Factory reads them; these recipes have no use for them).
- ``num_samples`` draws its rows with the run's ``loader.seed`` (LLaMA-Factory: numpy's global random state).

Departures kept as options, off by default: ``mask_newline_after_reply`` (the newline after each reply's
``<|im_end|>`` is not a label: generation stops at ``<|im_end|>``, so the model never produces it) and
``image_resize="qwen"`` (Qwen's rule within ``[min_pixels, max_pixels]``, the area never over ``max_pixels``, as the
RL data resizes).

How a conversation becomes an example is one group of settings, ``datamodules.config.SFTExampleConfig``
(``ShareGPTDataset`` and ``SFTDataModule`` both take it); how examples are batched another, ``SFTLoaderConfig``.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from datasets import concatenate_datasets
from lightning import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from datamodules.config import SFTExampleConfig, SFTLoaderConfig, from_plain, plain_hparams
from datamodules.errors import MissingPathError
from datamodules.images import (
    BadImageError,
    fit_image,
    image_factor,
    load_image,
    resize_like_llamafactory,
    smart_resize_hw,
)
from datamodules.model_path import require_model
from datamodules.resumable import ResumableDataLoader
from datamodules.scan import ImageCheck, keep_rows, scan_table
from datamodules.tables import read_table
from datamodules.vqa import SkippedRow, bad_line_skips

IGNORE_INDEX = -100


@dataclass
class ShareGPTFormat:
    """Column and tag names, as in a LLaMA-Factory ``dataset_info.json`` entry with ``formatting: sharegpt``.

    Args:
        messages: the column of the conversation (a list of turns).
        images: the column of the row's images (a list, or one path); None: the rows have none.
        system: the column of the system prompt; None: none (a leading system turn still counts).
        role_tag: the key of a turn's role.
        content_tag: the key of a turn's text.
        user_tag: the role of a user turn.
        assistant_tag: the role of an assistant turn.
        system_tag: the role of a system turn (the first turn only).
        extra_user_tags: more roles read as user turns (OpenAI-style ``user``).
        extra_assistant_tags: more roles read as assistant turns (OpenAI-style ``assistant``).
    """

    messages: str = "conversations"
    images: str | None = "images"
    system: str | None = "system"
    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    system_tag: str = "system"
    extra_user_tags: list[str] = field(default_factory=lambda: ["user"])
    extra_assistant_tags: list[str] = field(default_factory=lambda: ["assistant"])


def to_chat_messages(row: dict[str, Any], fmt: ShareGPTFormat, num_images: int, where: str) -> list[dict[str, Any]]:
    """ShareGPT turns -> chat messages with image parts at the placeholders.

    After an optional leading system turn (which takes the place of the system column) the turns must alternate
    user, assistant, user, ... and end with an assistant reply, as LLaMA-Factory requires."""
    turns = row.get(fmt.messages)
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"{where}: column {fmt.messages!r} must be a non-empty list of turns")
    roles = {fmt.user_tag: "user", fmt.assistant_tag: "assistant", fmt.system_tag: "system"}
    roles.update({t: "user" for t in fmt.extra_user_tags})
    roles.update({t: "assistant" for t in fmt.extra_assistant_tags})
    messages: list[dict[str, Any]] = []
    system = row.get(fmt.system) if fmt.system else None
    if system and not (isinstance(turns[0], dict) and roles.get(turns[0].get(fmt.role_tag)) == "system"):
        messages.append({"role": "system", "content": [{"type": "text", "text": str(system)}]})
    placed = 0
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or fmt.role_tag not in turn or fmt.content_tag not in turn:
            raise ValueError(
                f"{where}: turn {i} needs keys {fmt.role_tag!r} and {fmt.content_tag!r}, got {turn!r}"[:300]
            )
        role = roles.get(turn[fmt.role_tag])
        if role is None:
            raise ValueError(f"{where}: turn {i} has unknown role {turn[fmt.role_tag]!r}; map it with the tag settings")
        if role == "system" and i > 0:
            raise ValueError(f"{where}: turn {i} is a system turn; only the first turn may be one")
        pieces = str(turn[fmt.content_tag]).split("<image>")
        content: list[dict[str, Any]] = []
        for j, piece in enumerate(pieces):
            if j > 0:
                content.append({"type": "image"})
                placed += 1
            if piece:  # as written: LLaMA-Factory keeps the whitespace around a placeholder
                content.append({"type": "text", "text": piece})
        messages.append({"role": role, "content": content})
    if placed == 0 and num_images:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise ValueError(f"{where}: has images but no user turn")
        first_user["content"][:0] = [{"type": "image"} for _ in range(num_images)]
    elif placed != num_images:
        raise ValueError(f"{where}: {placed} <image> placeholders for {num_images} images")
    first = 1 if roles.get(turns[0][fmt.role_tag]) == "system" else 0
    dialogue = [roles[t[fmt.role_tag]] for t in turns[first:]]
    if "assistant" not in dialogue:
        raise ValueError(f"{where}: no assistant turn to learn from")
    for k, role in enumerate(dialogue):
        if role != ("user", "assistant")[k % 2]:
            raise ValueError(
                f"{where}: turns must alternate user/assistant from a user turn; turn {k + first} is "
                f"{turns[k + first][fmt.role_tag]!r} ({role})"
            )
    if dialogue[-1] != "assistant":
        raise ValueError(f"{where}: the last turn is a user turn with no reply")
    return messages


def conversation_pieces(processor: Any, messages: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """The chat template's text cut where LLaMA-Factory cuts a conversation: each prompt up to and including the
    assistant header (``False``), then that reply through its closing tokens (``True``)."""
    render = partial(processor.apply_chat_template, tokenize=False)
    pieces: list[tuple[str, bool]] = []
    done = ""
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt, whole = render(messages[:k], add_generation_prompt=True), render(messages[: k + 1])
        if not (prompt.startswith(done) and whole.startswith(prompt)):
            raise ValueError(
                "the chat template does not render a conversation as its turns one after another; "
                "the prompt and reply of each turn cannot be cut apart"
            )
        pieces += [(prompt[len(done) :], False), (whole[len(prompt) :], True)]
        done = whole
    return pieces


def piece_labels(pieces: list[list[int]], replies: list[bool], end_id: int, mask_after_end: bool = False) -> list[int]:
    """Labels for the concatenated token pieces: -100 on prompts, a reply's own ids on replies; with
    ``mask_after_end``, -100 on a reply's tokens after its last ``end_id`` (the newline after ``<|im_end|>``).
    Pure, so it is tested without a model."""
    labels: list[int] = []
    for ids, reply in zip(pieces, replies):
        if not reply:
            labels += [IGNORE_INDEX] * len(ids)
            continue
        keep = len(ids)
        if mask_after_end and end_id in ids:
            keep = len(ids) - ids[::-1].index(end_id)
        labels += ids[:keep] + [IGNORE_INDEX] * (len(ids) - keep)
    return labels


@dataclass
class LlamaFactoryEntry:
    """One ``formatting: sharegpt`` entry of a LLaMA-Factory ``dataset_info.json``, resolved to local files."""

    name: str
    files: list[Path]
    fmt: ShareGPTFormat
    num_samples: int | None = None


_LF_COLUMNS = ("messages", "images", "system")  # the columns read here
_LF_TAGS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "system_tag")
_LF_TOOL_TAGS = ("observation_tag", "function_tag")  # accepted; a row with tool turns fails as an unknown role
_LF_REMOTE = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
_LF_KEYS = (
    "file_name",
    "formatting",
    "ranking",
    "subset",
    "split",
    "folder",
    "num_samples",
    "columns",
    "tags",
    *_LF_REMOTE,
)
_LF_FILE_TYPES = (".json", ".jsonl", ".parquet", ".csv", ".arrow")


def read_dataset_info(dataset_dir: str | Path, names: list[str]) -> list[LlamaFactoryEntry]:
    """The named entries of ``<dataset_dir>/dataset_info.json``; every problem is an error naming the file and key."""
    info_path = Path(dataset_dir).expanduser() / "dataset_info.json"
    if not info_path.is_file():
        raise MissingPathError(
            f"{info_path}: not found; dataset_dir must be a LLaMA-Factory data folder with a "
            f"dataset_info.json naming the datasets"
        )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{info_path}: line {e.lineno} is not valid JSON ({e.msg}, column {e.colno})") from e
    if not isinstance(info, dict):
        raise ValueError(f"{info_path}: must be a JSON object mapping dataset names to entries")
    if not names:
        raise ValueError(f"datasets: name at least one entry of {info_path} (it defines {sorted(info)})")
    return [_lf_entry(info_path, info, name) for name in names]


def _lf_entry(info_path: Path, info: dict[str, Any], name: str) -> LlamaFactoryEntry:
    where = f"{info_path}: dataset {name!r}"
    if name not in info:
        raise KeyError(f"{info_path}: no dataset named {name!r}; it defines {sorted(info)}")
    attr = info[name]
    if not isinstance(attr, dict):
        raise ValueError(f"{where}: must be a JSON object, got {type(attr).__name__}")
    unknown = sorted(set(attr) - set(_LF_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; LLaMA-Factory's keys are {list(_LF_KEYS)}")
    remote = [k for k in _LF_REMOTE if k in attr]
    if remote:
        raise ValueError(
            f"{where}: {remote[0]} loads from a hub, a script or cloud storage; only local files "
            f"(file_name, relative to {info_path.parent}) are read here"
        )
    if "file_name" not in attr:
        raise KeyError(f"{where}: no 'file_name'")
    formatting = attr.get("formatting", "alpaca")  # LLaMA-Factory's default when the key is absent
    if formatting != "sharegpt":
        raise ValueError(
            f"{where}: formatting {formatting!r}"
            + ("" if "formatting" in attr else " (the default)")
            + "; only 'sharegpt' conversations are read here"
        )
    if attr.get("ranking"):
        raise ValueError(f"{where}: ranking: true marks preference (chosen/rejected) data, not SFT data")
    if attr.get("split", "train") != "train":
        raise ValueError(f"{where}: split {attr['split']!r}; a local file has only the 'train' split")
    columns, tags = attr.get("columns") or {}, attr.get("tags") or {}
    for key, value, known in (("columns", columns, _LF_COLUMNS), ("tags", tags, _LF_TAGS + _LF_TOOL_TAGS)):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {key} must be a JSON object, got {type(value).__name__}")
        extra = sorted(set(value) - set(known))
        if extra:
            raise ValueError(f"{where}: {key} {extra} not supported here; read: {list(known)}")
        for k, v in value.items():
            optional = k in ("images", "system", "system_tag", *_LF_TOOL_TAGS)
            if not (isinstance(v, str) or (v is None and optional)):
                raise ValueError(f"{where}: {key}.{k} must be a " + ("string or null" if optional else "string"))
    num_samples = attr.get("num_samples")
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
        raise ValueError(f"{where}: num_samples must be a positive integer, got {num_samples!r}")
    fmt = ShareGPTFormat(
        messages=columns.get("messages", "conversations"),
        images=columns.get("images"),
        system=columns.get("system"),
        extra_user_tags=[],
        extra_assistant_tags=[],
        **{k: tags[k] for k in _LF_TAGS if k in tags},
    )
    path = info_path.parent / attr["file_name"]
    if path.is_dir():  # every file in the folder, as LLaMA-Factory does
        files = sorted(p for p in path.iterdir() if p.is_file())
        odd = [p.name for p in files if p.suffix.lower() not in _LF_FILE_TYPES]
        if not files or odd or len({p.suffix.lower().replace(".jsonl", ".json") for p in files}) != 1:
            raise ValueError(
                f"{where}: folder {path} must hold files of one type ({', '.join(_LF_FILE_TYPES)}); "
                + (f"found {odd}" if odd else "found none" if not files else "found mixed types")
            )
    elif path.is_file():
        files = [path]
    else:
        raise MissingPathError(f"{where}: file_name {attr['file_name']!r} not found ({path})")
    return LlamaFactoryEntry(name, files, fmt, num_samples)


class ShareGPTDataset(Dataset):
    """Tokenised SFT examples: input_ids, attention_mask, labels, pixel_values, image_grid_thw.

    ``source`` is a file or folder (``datamodules.tables``), or a list of files read as one table. ``name`` (a
    LLaMA-Factory entry) makes every column the format names required. ``num_samples`` draws that many rows
    (a permutation, repeated rows beyond the table's size, as LLaMA-Factory does), with ``seed``. ``examples``: how
    a conversation becomes an example (``datamodules.config.SFTExampleConfig``)."""

    def __init__(
        self,
        source: str | Path | list[Path],
        processor: Any,
        fmt: ShareGPTFormat | dict | None = None,
        examples: SFTExampleConfig = SFTExampleConfig(),
        split: str = "train",
        name: str | None = None,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        sources = source if isinstance(source, list) else [source]
        self.source = ", ".join(str(s) for s in sources)
        tables = [read_table(s, split, skip_bad_lines=examples.skip_bad_rows) for s in sources]
        self.files = [str(s) for s in sources]
        self.offsets = [0]
        for t in tables:
            self.offsets.append(self.offsets[-1] + len(t.dataset))
        self.table = tables[0].dataset if len(tables) == 1 else concatenate_datasets([t.dataset for t in tables])
        root = tables[0].root
        label = f"{name} ({', '.join(self.files)})" if name else self.source
        if len(self.table) == 0:
            raise ValueError(f"{label}: the dataset is empty")
        self.fmt = ShareGPTFormat(**fmt) if isinstance(fmt, dict) else (fmt or ShareGPTFormat())
        if self.fmt.messages not in self.table.column_names:
            raise KeyError(f"{label}: no column {self.fmt.messages!r} (messages); have {self.table.column_names}")
        for key in ("images", "system") if name else ():
            column = getattr(self.fmt, key)
            if column and column not in self.table.column_names:
                raise KeyError(
                    f"{label}: columns.{key} names {column!r}, which is not a column; have {self.table.column_names}"
                )
        self.rows: list[int] | None = None  # table index of each example when num_samples draws them
        if num_samples is not None:
            order = torch.randperm(len(self.table), generator=torch.Generator().manual_seed(seed)).tolist()
            extra = torch.randint(
                len(self.table), (max(num_samples - len(order), 0),), generator=torch.Generator().manual_seed(seed + 1)
            ).tolist()
            self.rows = (order + extra)[:num_samples]
        self.bad_lines = bad_line_skips([b for t in tables for b in t.bad_lines], len(self.rows or self.table))
        self.processor = processor
        self.factor = image_factor(processor.image_processor)
        self.image_root = Path(examples.image_root) if examples.image_root else root
        self.min_pixels, self.max_pixels = examples.min_pixels, examples.max_pixels
        self.max_length = examples.max_length
        self.skip_long, self.skip_bad_rows = examples.skip_long, examples.skip_bad_rows
        self.image_resize, self.mask_newline_after_reply = examples.image_resize, examples.mask_newline_after_reply
        self.end_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.dropped = self._scan(label)

    def _scan(self, label: str) -> list[SkippedRow]:
        """Every row's images checked before use (``datamodules.scan``): a bad one is a ``BadDataError``; with
        ``skip_bad_rows`` its row is left out (of the rows ``num_samples`` drew too) and returned as a skip."""
        if not self.fmt.images or self.fmt.images not in self.table.column_names:
            return []
        size_rule = (
            partial(smart_resize_hw, min_pixels=self.min_pixels, max_pixels=self.max_pixels, factor=self.factor)
            if self.image_resize == "qwen"
            else None
        )
        check = ImageCheck(self.image_root, required=False, size_rule=size_rule)
        self.scan = scan_table(self.table, {self.fmt.images: check}, label, where=self.where)
        kept = keep_rows(self.scan, self.skip_bad_rows)
        if self.scan.bad:
            bad = {b.row for b in self.scan.bad}
            self.rows = [r for r in self.rows if r not in bad] if self.rows is not None else kept
        return [SkippedRow(b.reason, b.row, b.line()) for b in self.scan.bad]

    def __len__(self) -> int:
        return len(self.rows if self.rows is not None else self.table) + len(self.bad_lines)

    def where(self, row: int) -> str:
        """The file and row index (0-based, within that file) of a table row, for messages."""
        k = bisect_right(self.offsets, row) - 1
        return f"{self.files[k]} row index {row - self.offsets[k]}"

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedRow:
        size = len(self.rows if self.rows is not None else self.table)
        if index >= size:  # an unreadable line of a JSON Lines file (skip_bad_rows)
            return self.bad_lines[index - size]
        row_index = self.rows[index] if self.rows is not None else index
        row = self.table[row_index]
        where = self.where(row_index)
        try:
            raw = row.get(self.fmt.images) if self.fmt.images else None
            images = [
                self.prepare_image(v, where) for v in ([] if raw is None else raw if isinstance(raw, list) else [raw])
            ]
            messages = to_chat_messages(row, self.fmt, len(images), where)
        except (BadImageError, ValueError) as e:
            if self.skip_bad_rows:
                return SkippedRow("bad_row", index, str(e))
            raise
        out = self.encode(messages, images)
        if len(out["input_ids"]) > self.max_length:
            message = f"{where}: {len(out['input_ids'])} tokens (images included) > max_length {self.max_length}"
            if self.skip_long:
                return SkippedRow("too_long", index, message)
            raise ValueError(message)
        return out

    def prepare_image(self, value: Any, where: str) -> Any:
        """One image, loaded and resized by ``image_resize``'s rule."""
        if self.image_resize == "qwen":
            image = load_image(value, self.image_root, where)
            return fit_image(image, self.min_pixels, self.max_pixels, where, self.factor)
        image = load_image(value, self.image_root, where, rgb=False)
        try:
            return resize_like_llamafactory(image, self.min_pixels, self.max_pixels, self.factor)
        except (ValueError, OSError) as e:  # a degenerate size, a mode Pillow cannot resample
            name = f" {image.info['vlrl_source']}" if image.info.get("vlrl_source") else ""
            raise BadImageError(f"{where}: image{name} of size {image.width}x{image.height} cannot be used: {e}") from e

    def encode(self, messages: list[dict[str, Any]], images: list[Any]) -> dict[str, Any]:
        """Tokens, labels and pixels of one conversation, each prompt and reply tokenised on its own."""
        texts, replies = zip(*conversation_pieces(self.processor, messages))
        # the template writes every special token itself; the images are spread over the pieces in order
        enc = self.processor(text=list(texts), images=images or None, add_special_tokens=False)
        pieces = [list(ids) for ids in enc["input_ids"]]
        labels = piece_labels(pieces, list(replies), self.end_id, self.mask_newline_after_reply)
        ids = torch.tensor([t for piece in pieces for t in piece])
        out = {
            "input_ids": ids,  # [T]
            "attention_mask": torch.ones_like(ids),  # [T]
            "labels": torch.tensor(labels),  # [T]
        }
        if "mm_token_type_ids" in enc:  # marks image tokens; M-RoPE position ids depend on it
            out["mm_token_type_ids"] = torch.tensor([t for piece in enc["mm_token_type_ids"] for t in piece])  # [T]
        if images:
            out["pixel_values"] = torch.as_tensor(enc["pixel_values"])  # [patches, C*tp*p*p]
            out["image_grid_thw"] = torch.as_tensor(enc["image_grid_thw"])  # [num_images, 3]
        return out


def collate_sft(items: list[dict[str, Any] | SkippedRow], pad_id: int) -> dict[str, Any]:
    """Right-pad to the longest kept example; images concatenated in order. Skips are counted in ``skipped``."""
    kept = [x for x in items if not isinstance(x, SkippedRow)]
    skipped_rows = [x for x in items if isinstance(x, SkippedRow)]
    skipped = dict(Counter(x.reason for x in skipped_rows))
    messages, reasons = [x.message for x in skipped_rows], [x.reason for x in skipped_rows]
    if not kept:
        return {"skipped": skipped, "skipped_messages": messages, "skipped_reasons": reasons, "num_examples": 0}
    length = max(len(x["input_ids"]) for x in kept)

    def pad(key: str, value: int) -> torch.Tensor:
        out = torch.full((len(kept), length), value, dtype=kept[0][key].dtype)
        for i, x in enumerate(kept):
            out[i, : len(x[key])] = x[key]
        return out

    batch: dict[str, Any] = {
        "input_ids": pad("input_ids", pad_id),  # [B, T]
        "attention_mask": pad("attention_mask", 0),  # [B, T]
        "labels": pad("labels", IGNORE_INDEX),  # [B, T]
        "skipped": skipped,
        "skipped_messages": messages,
        "skipped_reasons": reasons,
        "num_examples": len(kept),
    }
    if all("mm_token_type_ids" in x for x in kept):
        batch["mm_token_type_ids"] = pad("mm_token_type_ids", 0)  # [B, T]
    with_images = [x for x in kept if "pixel_values" in x]
    if with_images:
        batch["pixel_values"] = torch.cat([x["pixel_values"] for x in with_images])
        batch["image_grid_thw"] = torch.cat([x["image_grid_thw"] for x in with_images])
    return batch


class SFTDataModule(LightningDataModule):
    """ShareGPT SFT data (Vision-R1 cold start, the SFT baseline).

    Args:
        train_data: a ShareGPT file or folder (see ``datamodules.tables.load_table``), read with ``format``.
        val_data: the validation conversations (as ``train_data``); None: no validation.
        model_name_or_path: checkpoint whose processor tokenises (linked to the model's in the CLI).
        format: column and tag names for ``train_data``/``val_data`` (LLaMA-Factory ``columns``/``tags`` merged into
            one mapping; default ``ShareGPTFormat()``: columns conversations, images and system; keys from and
            value; roles human, gpt and system, user and assistant too).
        dataset_dir: a LLaMA-Factory data folder (``dataset_info.json``, the data files, the images).
        datasets: entry names in ``<dataset_dir>/dataset_info.json`` to train on, each read with its own mapping and
            then concatenated (instead of ``train_data``).
        val_datasets: entry names in ``<dataset_dir>/dataset_info.json`` to validate on (instead of ``val_data``).
        examples: how a conversation becomes a tokenised example (``datamodules.config.SFTExampleConfig``).
        loader: how the examples are batched (``datamodules.config.SFTLoaderConfig``).
    """

    def __init__(
        self,
        train_data: str | None = None,
        val_data: str | None = None,
        model_name_or_path: str = "Qwen/Qwen2.5-VL-3B-Instruct",
        format: ShareGPTFormat | None = None,
        dataset_dir: str | None = None,
        datasets: list[str] | None = None,
        val_datasets: list[str] | None = None,
        examples: SFTExampleConfig = SFTExampleConfig(),
        loader: SFTLoaderConfig = SFTLoaderConfig(),
    ) -> None:
        super().__init__()
        if train_data and datasets:
            raise ValueError(
                f"set train_data (one file, read with format) or datasets (entries of "
                f"{dataset_dir}/dataset_info.json), not both; to train on {train_data} with a recipe "
                f"that names datasets, also pass --data.init_args.datasets=null"
            )
        if val_data and val_datasets:
            raise ValueError("set val_data or val_datasets, not both")
        if not train_data and not datasets:
            raise ValueError("no training data: set train_data (a ShareGPT file) or dataset_dir and datasets")
        if (datasets or val_datasets) and not dataset_dir:
            raise ValueError("datasets/val_datasets name entries of <dataset_dir>/dataset_info.json: set dataset_dir")
        if format is not None and not (train_data or val_data):
            raise ValueError(
                "format applies to train_data/val_data; named datasets take their columns and tags "
                "from dataset_info.json"
            )
        self.save_hyperparameters()
        # a checkpoint's or a notebook's groups are dicts: rebuilt (and checked) here
        self.format = from_plain(ShareGPTFormat, format)
        self.example_config = from_plain(SFTExampleConfig, examples)
        self.loader_config = from_plain(SFTLoaderConfig, loader)
        plain_hparams(self.hparams)  # checkpoints hold plain values: they load with torch.load(weights_only=True)
        self.processor = None
        self.datasets: dict[str, Dataset] = {}

    @property
    def batch_size(self) -> int:
        """Examples per micro-batch per device (``loader.batch_size``)."""
        return self.loader_config.batch_size

    def _dataset(self, source: str | list[str], split: str) -> Dataset:
        h, examples = self.hparams, self.example_config
        if isinstance(source, str):
            return ShareGPTDataset(source, self.processor, self.format, examples, split=split)
        named = replace(examples, image_root=examples.image_root or h.dataset_dir)  # LLaMA-Factory's media_dir
        parts = [
            ShareGPTDataset(
                entry.files,
                self.processor,
                entry.fmt,
                named,
                split=split,
                name=entry.name,
                num_samples=entry.num_samples,
                seed=self.loader_config.seed,
            )
            for entry in read_dataset_info(h.dataset_dir, source)
        ]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def setup(self, stage: str | None = None) -> None:
        from transformers import AutoProcessor

        h = self.hparams
        if self.processor is None:
            self.processor = AutoProcessor.from_pretrained(require_model(h.model_name_or_path))
        for split, source in (("train", h.train_data or h.datasets), ("val", h.val_data or h.val_datasets)):
            if source and split not in self.datasets:
                self.datasets[split] = self._dataset(source if isinstance(source, str) else list(source), split)

    def dropped_rows(self, split: str) -> list[SkippedRow]:
        """The rows the scan left out of ``split`` (``train`` or ``val``) with ``skip_bad_rows``."""
        ds = self.datasets.get(split)
        parts = ds.datasets if isinstance(ds, ConcatDataset) else [ds] if ds is not None else []
        return [r for part in parts for r in part.dropped]

    def train_dataloader(self) -> DataLoader:
        """Resumable: a run restarted from a checkpoint continues at the next batch in the same order."""
        pad_id = self.processor.tokenizer.pad_token_id
        loader = self.loader_config
        return ResumableDataLoader(
            self.datasets["train"],
            batch_size=loader.batch_size,
            shuffle=True,
            seed=loader.seed,
            num_workers=loader.num_workers,
            collate_fn=partial(collate_sft, pad_id=pad_id),
        )

    def val_dataloader(self) -> DataLoader:
        if "val" not in self.datasets:
            return []
        pad_id = self.processor.tokenizer.pad_token_id
        return DataLoader(
            self.datasets["val"],
            batch_size=self.loader_config.batch_size,
            shuffle=False,
            num_workers=self.loader_config.num_workers,
            collate_fn=partial(collate_sft, pad_id=pad_id),
        )
