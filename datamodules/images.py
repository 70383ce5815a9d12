"""Image loading and resizing shared by every datamodule.

Images may arrive as paths (absolute or relative to the data file), raw bytes, ``{"bytes": ..., "path": ...}``
dicts (the ``datasets`` Image feature undecoded) or PIL images.

Two resize rules:
- ``fit_image`` (RL data, ``vlrl predict``): converted to RGB and resized once, here, to the size the model's
  processor would choose for the configured ``min_pixels``/``max_pixels`` (both sides multiples of the image token's
  side ``factor``: 28 for Qwen2-VL and Qwen2.5-VL, 32 for Qwen3-VL; the area within the bounds). Training (HF) and
  rollouts (vLLM) then see identical pixels and the number of image tokens is known before any model runs:
  ``(h / factor) * (w / factor)``. ``image_factor`` reads the factor from the checkpoint's image processor.
- ``resize_like_llamafactory`` (SFT data, as LLaMA-Factory prepares images for Qwen2-VL-family templates): scaled
  into ``[min_pixels, max_pixels]`` with each side truncated to whole pixels, then the processor's own rule (its
  own bounds) rounds each side to the nearest multiple of ``factor``, so the final area can exceed ``max_pixels`` a
  little (1280x720 at 589824: 1036x588, 777 tokens, where ``fit_image`` gives 1008x560, 720 tokens).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

PATCH = 14
MERGE = 2
FACTOR = PATCH * MERGE  # 28: each image token of Qwen2-VL and Qwen2.5-VL covers a 28x28 pixel block


class BadImageError(ValueError):
    """An image that cannot be used; the message names the row and the file."""


def image_factor(image_processor: Any) -> int:
    """The side in pixels of one image token: the processor's patch size times its merge size (28 for Qwen2-VL and
    Qwen2.5-VL, 32 for Qwen3-VL)."""
    return int(getattr(image_processor, "patch_size", PATCH)) * int(getattr(image_processor, "merge_size", MERGE))


def checkpoint_image_factor(model_name_or_path: str | Path) -> int:
    """``image_factor`` of a checkpoint's image processor (its ``preprocessor_config.json``)."""
    from transformers import AutoImageProcessor

    return image_factor(AutoImageProcessor.from_pretrained(model_name_or_path))


def smart_resize_hw(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = FACTOR) -> tuple[int, int]:
    """Qwen2-VL's resize rule: sides multiples of ``factor``, area within [min_pixels, max_pixels], aspect kept."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    return smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)


def num_image_tokens(image: Image.Image, factor: int = FACTOR) -> int:
    """Tokens an already-resized image occupies in the prompt."""
    return (image.height // factor) * (image.width // factor)


def load_image(value: Any, root: str | Path | None = None, where: str = "", rgb: bool = True) -> Image.Image:
    """Open ``value`` as an RGB PIL image or raise BadImageError naming ``where`` (e.g. "row 12 of train.jsonl").

    ``rgb=False`` keeps the file's own mode (palette, greyscale, RGBA ...): the caller converts."""
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
    if rgb and image.mode != "RGB":
        source = image.info.get("vlrl_source")
        image = _to_rgb(image)
        if source:
            image.info["vlrl_source"] = source
    return image


def fit_image(
    image: Image.Image, min_pixels: int, max_pixels: int, where: str = "", factor: int = FACTOR
) -> Image.Image:
    """Resize to the processor's target size (a no-op when it already has it)."""
    try:
        h, w = smart_resize_hw(image.height, image.width, min_pixels, max_pixels, factor)
    except ValueError as e:  # aspect ratio over 200, or a degenerate size
        source = image.info.get("vlrl_source")
        name = f" {source}" if source else ""
        raise BadImageError(f"{where}: image{name} of size {image.width}x{image.height} cannot be used: {e}") from e
    if (h, w) != (image.height, image.width):
        image = image.resize((w, h), Image.Resampling.BICUBIC)
    return image


def resize_like_llamafactory(image: Image.Image, min_pixels: int, max_pixels: int, factor: int = FACTOR) -> Image.Image:
    """LLaMA-Factory's preparation of an image for a Qwen2-VL-family processor (its ``image_min_pixels`` and
    ``image_max_pixels``); the processor then applies its own resize rule. ``image`` in its file's own mode.

    An area over ``max_pixels`` (under ``min_pixels``) is scaled by ``sqrt(bound / area)`` with each side truncated
    to a whole pixel; Pillow's default filter (bicubic; nearest for palette and 1-bit images) resizes in the file's
    own mode, then the image is converted to RGB (an alpha channel is dropped, not blended). A side under ``factor``
    pixels is widened to ``factor``, and an aspect ratio over 200 is squeezed to 180."""
    if image.width * image.height > max_pixels:
        image = _scale(image, math.sqrt(max_pixels / (image.width * image.height)))
    if image.width * image.height < min_pixels:
        image = _scale(image, math.sqrt(min_pixels / (image.width * image.height)))
    if image.mode != "RGB":
        image = image.convert("RGB")
    if min(image.width, image.height) < factor:
        image = image.resize((max(image.width, factor), max(image.height, factor)))
    if image.width / image.height > 200:
        image = image.resize((image.height * 180, image.height))
    if image.height / image.width > 200:
        image = image.resize((image.width, image.width * 180))
    return image


def _scale(image: Image.Image, factor: float) -> Image.Image:
    return image.resize((int(image.width * factor), int(image.height * factor)))  # Pillow's default filter


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
