"""Image loading and resizing shared by every datamodule.

Images may arrive as paths (absolute or relative to the data file), raw bytes, ``{"bytes": ..., "path": ...}``
dicts (the ``datasets`` Image feature undecoded) or PIL images. Every image is converted to RGB and resized once,
here, to the size Qwen2.5-VL's processor would choose for the configured ``min_pixels``/``max_pixels`` (both sides
multiples of 28). Training (HF) and rollouts (vLLM) then see identical pixels and the number of image tokens is
known before any model runs: ``(h / 28) * (w / 28)``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

PATCH = 14
MERGE = 2
FACTOR = PATCH * MERGE  # 28: each image token covers a 28x28 pixel block


class BadImageError(ValueError):
    """An image that cannot be used; the message names the row and the file."""


def smart_resize_hw(height: int, width: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule: sides multiples of 28, area within [min_pixels, max_pixels], aspect kept."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    return smart_resize(height, width, factor=FACTOR, min_pixels=min_pixels, max_pixels=max_pixels)


def num_image_tokens(image: Image.Image) -> int:
    """Tokens an already-resized image occupies in the prompt."""
    return (image.height // FACTOR) * (image.width // FACTOR)


def load_image(value: Any, root: str | Path | None = None, where: str = "") -> Image.Image:
    """Open ``value`` as an RGB PIL image or raise BadImageError naming ``where`` (e.g. "row 12 of train.jsonl")."""
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict):
            if value.get("bytes") is not None:
                image = Image.open(io.BytesIO(value["bytes"]))
            elif value.get("path"):
                return load_image(value["path"], root, where)
            else:
                raise BadImageError(f"{where}: image dict has neither 'bytes' nor 'path'")
        elif isinstance(value, (bytes, bytearray)):
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, (str, Path)):
            path = Path(value)
            if not path.is_absolute() and root is not None:
                path = Path(root) / path
            if not path.is_file():
                raise BadImageError(f"{where}: image file not found: {path}")
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy()
            image.info["vlrl_source"] = str(path)  # named in later errors about this image
        else:
            raise BadImageError(f"{where}: unsupported image value of type {type(value).__name__}")
        image.load()
    except BadImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"{where}: cannot read image {_describe(value)}: {e}") from e
    if image.mode != "RGB":
        source = image.info.get("vlrl_source")
        image = _to_rgb(image)
        if source:
            image.info["vlrl_source"] = source
    return image


def fit_image(image: Image.Image, min_pixels: int, max_pixels: int, where: str = "") -> Image.Image:
    """Resize to the processor's target size (a no-op when it already has it)."""
    try:
        h, w = smart_resize_hw(image.height, image.width, min_pixels, max_pixels)
    except ValueError as e:  # aspect ratio over 200, or a degenerate size
        source = image.info.get("vlrl_source")
        name = f" {source}" if source else ""
        raise BadImageError(f"{where}: image{name} of size {image.width}x{image.height} cannot be used: {e}") from e
    if (h, w) != (image.height, image.width):
        image = image.resize((w, h), Image.Resampling.BICUBIC)
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.split()[-1])
        return background
    return image.convert("RGB")


def _describe(value: Any) -> str:
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return f"<{type(value).__name__}>"
