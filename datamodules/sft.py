"""Cold-start SFT data: ShareGPT conversations with LLaMA-Factory-style column and tag mapping (the format
Vision-R1's cold-start set is published in), tokenised with the model's processor and an assistant-only loss mask.

A ``<image>`` placeholder in a turn marks where the row's next image goes; a row with images but no placeholders
gets them at the start of its first user turn. Labels are -100 everywhere except the assistant replies (their text
and the closing ``<|im_end|>``). Sequences longer than ``max_length`` are skipped and counted (or an error with
``skip_long=False``): cutting could split an image's tokens from its pixels or drop the whole reply.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from datamodules.images import BadImageError, fit_image, load_image
from datamodules.resumable import ResumableDataLoader
from datamodules.tables import load_table
from datamodules.vqa import SkippedRow

IGNORE_INDEX = -100


@dataclass
class ShareGPTFormat:
    """Column and tag names, as in a LLaMA-Factory ``dataset_info.json`` entry with ``formatting: sharegpt``."""

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
    """ShareGPT turns -> chat messages with image parts at the placeholders."""
    turns = row.get(fmt.messages)
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"{where}: column {fmt.messages!r} must be a non-empty list of turns")
    roles = {fmt.user_tag: "user", fmt.assistant_tag: "assistant", fmt.system_tag: "system"}
    roles.update({t: "user" for t in fmt.extra_user_tags})
    roles.update({t: "assistant" for t in fmt.extra_assistant_tags})
    messages: list[dict[str, Any]] = []
    system = row.get(fmt.system) if fmt.system else None
    if system:
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
        pieces = str(turn[fmt.content_tag]).split("<image>")
        content: list[dict[str, Any]] = []
        for j, piece in enumerate(pieces):
            if j > 0:
                content.append({"type": "image"})
                placed += 1
            if piece.strip():
                content.append({"type": "text", "text": piece.strip() if role != "assistant" else piece})
        messages.append({"role": role, "content": content})
    if placed == 0 and num_images:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise ValueError(f"{where}: has images but no user turn")
        first_user["content"][:0] = [{"type": "image"} for _ in range(num_images)]
    elif placed != num_images:
        raise ValueError(f"{where}: {placed} <image> placeholders for {num_images} images")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"{where}: no assistant turn to learn from")
    return messages


def assistant_mask(input_ids: list[int], start_ids: list[int], end_id: int) -> list[bool]:
    """True on the tokens of each assistant reply: after ``<|im_start|>assistant\\n`` up to and including
    ``<|im_end|>``. Pure, so it is tested without a model."""
    mask = [False] * len(input_ids)
    n, k = len(input_ids), len(start_ids)
    i = 0
    while i <= n - k:
        if input_ids[i : i + k] == start_ids:
            j = i + k
            while j < n and input_ids[j] != end_id:
                mask[j] = True
                j += 1
            if j < n:
                mask[j] = True  # learn to stop
            i = j + 1
        else:
            i += 1
    return mask


class ShareGPTDataset(Dataset):
    """Tokenised SFT examples: input_ids, attention_mask, labels, pixel_values, image_grid_thw."""

    def __init__(
        self,
        source: str | Path,
        processor: Any,
        fmt: ShareGPTFormat | dict | None = None,
        split: str = "train",
        min_pixels: int = 3136,
        max_pixels: int = 12845056,
        max_length: int = 4096,
        image_root: str | Path | None = None,
        skip_long: bool = True,
        skip_bad_rows: bool = False,
    ) -> None:
        self.source = str(source)
        self.table, root = load_table(source, split)
        if len(self.table) == 0:
            raise ValueError(f"{self.source}: the dataset is empty")
        self.fmt = ShareGPTFormat(**fmt) if isinstance(fmt, dict) else (fmt or ShareGPTFormat())
        if self.fmt.messages not in self.table.column_names:
            raise KeyError(f"{self.source}: no column {self.fmt.messages!r} (messages); have {self.table.column_names}")
        self.processor = processor
        self.image_root = Path(image_root) if image_root else root
        self.min_pixels, self.max_pixels, self.max_length = min_pixels, max_pixels, max_length
        self.skip_long, self.skip_bad_rows = skip_long, skip_bad_rows
        tok = processor.tokenizer
        self.start_ids = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        self.end_id = tok.convert_tokens_to_ids("<|im_end|>")

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedRow:
        row = self.table[index]
        where = f"{self.source} row {index}"
        try:
            raw = row.get(self.fmt.images) if self.fmt.images else None
            raw = [] if raw is None else (raw if isinstance(raw, list) else [raw])
            images = [fit_image(load_image(v, self.image_root, where), self.min_pixels, self.max_pixels, where)
                      for v in raw]  # fmt: skip
            messages = to_chat_messages(row, self.fmt, len(images), where)
        except (BadImageError, ValueError) as e:
            if self.skip_bad_rows:
                return SkippedRow("bad_row", index, str(e))
            raise
        text = self.processor.apply_chat_template(messages, tokenize=False)
        enc = self.processor(text=[text], images=images or None, return_tensors="pt")
        ids = enc["input_ids"][0]
        if len(ids) > self.max_length:
            message = f"{where}: {len(ids)} tokens (images included) > max_length {self.max_length}"
            if self.skip_long:
                return SkippedRow("too_long", index, message)
            raise ValueError(message)
        mask = torch.tensor(assistant_mask(ids.tolist(), self.start_ids, self.end_id))
        out = {
            "input_ids": ids,  # [T]
            "attention_mask": enc["attention_mask"][0],  # [T]
            "labels": torch.where(mask, ids, torch.full_like(ids, IGNORE_INDEX)),  # [T]
        }
        if "mm_token_type_ids" in enc:  # marks image tokens; M-RoPE position ids depend on it
            out["mm_token_type_ids"] = enc["mm_token_type_ids"][0]  # [T]
        if images:
            out["pixel_values"] = enc["pixel_values"]  # [patches, C*tp*p*p]
            out["image_grid_thw"] = enc["image_grid_thw"]  # [num_images, 3]
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
        train_data, val_data: ShareGPT files/folders (see ``datamodules.tables.load_table``).
        model_name_or_path: checkpoint whose processor tokenises (linked to the model's in the CLI).
        format: column and tag names (LLaMA-Factory ``columns``/``tags`` merged into one mapping).
        max_length: longer examples are skipped and counted.
    """

    def __init__(
        self,
        train_data: str,
        val_data: str | None = None,
        model_name_or_path: str = "Qwen/Qwen2.5-VL-3B-Instruct",
        format: ShareGPTFormat | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        min_pixels: int = 3136,
        max_pixels: int = 12845056,
        max_length: int = 4096,
        image_root: str | None = None,
        skip_long: bool = True,
        skip_bad_rows: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.processor = None
        self.datasets: dict[str, ShareGPTDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        from transformers import AutoProcessor

        h = self.hparams
        if self.processor is None:
            self.processor = AutoProcessor.from_pretrained(h.model_name_or_path)
        for split, source in (("train", h.train_data), ("val", h.val_data)):
            if source and split not in self.datasets:
                self.datasets[split] = ShareGPTDataset(
                    source, self.processor, h.format, split, h.min_pixels, h.max_pixels, h.max_length, h.image_root,
                    h.skip_long, h.skip_bad_rows,
                )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        """Resumable: a run restarted from a checkpoint continues at the next batch in the same order."""
        pad_id = self.processor.tokenizer.pad_token_id
        return ResumableDataLoader(
            self.datasets["train"], batch_size=self.hparams.batch_size, shuffle=True, seed=self.hparams.seed,
            num_workers=self.hparams.num_workers, collate_fn=partial(collate_sft, pad_id=pad_id),
        )  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        if "val" not in self.datasets:
            return []
        pad_id = self.processor.tokenizer.pad_token_id
        return DataLoader(
            self.datasets["val"], batch_size=self.hparams.batch_size, shuffle=False,
            num_workers=self.hparams.num_workers, collate_fn=partial(collate_sft, pad_id=pad_id),
        )  # fmt: skip
