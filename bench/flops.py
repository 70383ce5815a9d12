"""Model FLOPs of one GRPO update on Qwen2.5-VL, for MFU. Pure functions of the config and the token counts.

Counted (multiply-adds x 2): every linear layer of the vision tower over the image patches and of the language
model over the tokens it processes, attention scores and weighted sums (vision: full-attention blocks over the whole
image, windowed blocks over their window; language: causal, so each token attends to its prefix), the patch merger,
and the LM head over the completion tokens only (we never compute it elsewhere). Backward = 2 x forward. Not counted:
norms, activations, rotary embeddings, softmax (small), and recomputation under activation checkpointing (MFU counts
the model's FLOPs, not the hardware's).

Work follows the log-prob forward: ``shared_prefix`` runs each prompt's image and tokens once and each completion's
tokens once; ``grouped`` each image once but every completion with its own copy of the prompt's tokens; ``per_row``
(and TRL) every completion with its own copy of image and prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks (SXM)


@dataclass
class UpdateShape:
    prompts: int  # U distinct prompts
    group_size: int  # G completions per prompt
    prompt_tokens: int  # P per prompt, image tokens included
    completion_tokens: int  # C per completion
    patches_per_image: int  # vision patches (before the 2x2 merge) of each prompt's single image
    forward: str = "shared_prefix"  # per_row (TRL too), grouped (images once) or shared_prefix (prompts once)


def vision_forward_flops(vision, patches: int) -> float:
    d, f = vision.hidden_size, vision.intermediate_size
    window = (vision.window_size // vision.patch_size) ** 2  # patches in one attention window
    linear = 2 * patches * (4 * d * d + 3 * d * f)  # qkv + proj; gated MLP (gate, up, down)
    attention = 0.0
    for block in range(vision.depth):
        span = patches if block in vision.fullatt_block_indexes else min(window, patches)
        attention += 4 * patches * span * d  # scores and weighted sum
    merged = patches // vision.spatial_merge_size**2
    merger = 2 * merged * (4 * d) * (4 * d) + 2 * merged * (4 * d) * vision.out_hidden_size
    return vision.depth * linear + attention + merger


def language_forward_flops(text, tokens: int, attended: float) -> float:
    """``tokens`` processed, ``attended`` = the sum over them of the number of keys each attends to."""
    d, f = text.hidden_size, text.intermediate_size
    kv = text.num_key_value_heads * (d // text.num_attention_heads)
    linear = 2 * tokens * (2 * d * d + 2 * d * kv + 3 * d * f)  # q, o; k, v; gated MLP
    attention = 4 * attended * d
    return text.num_hidden_layers * (linear + attention)


def update_flops(config, shape: UpdateShape, with_reference: bool = True) -> float:
    """FLOPs of one update: policy forward + backward (3x forward) and, with a reference, its forward (1x)."""
    text, vision = config.text_config, config.vision_config
    n, p, c = shape.prompts * shape.group_size, shape.prompt_tokens, shape.completion_tokens
    images = n if shape.forward == "per_row" else shape.prompts
    forward = vision_forward_flops(vision, shape.patches_per_image) * images
    prompt_rows = shape.prompts if shape.forward == "shared_prefix" else n
    prompt_attended = prompt_rows * p * (p + 1) / 2  # causal: token i attends to i + 1 keys
    completion_attended = n * (c * p + c * (c + 1) / 2)  # the whole prompt, then its own prefix
    forward += language_forward_flops(text, prompt_rows * p + n * c, prompt_attended + completion_attended)
    forward += 2 * n * c * text.hidden_size * text.vocab_size  # LM head on completion tokens
    return forward * (3 + (1 if with_reference else 0))


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU, by name; None when unknown (no MFU then)."""
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return value
    return None
