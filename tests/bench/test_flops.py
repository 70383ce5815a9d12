"""The FLOP counter behind MFU: its linear-layer terms equal 2 x the real model's weights x tokens."""

import torch

from bench.flops import UpdateShape, language_forward_flops, update_flops, vision_forward_flops
from tools.tiny_model import qwen2_5_vl_config


def _linear_weights(module: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def test_linear_terms_match_the_models_weights():
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = qwen2_5_vl_config("tiny")
    model = Qwen2_5_VLForConditionalGeneration(config)
    text, vision = config.text_config, config.vision_config
    tokens = 10
    assert language_forward_flops(text, tokens, attended=0) == 2 * tokens * _linear_weights(model.model.language_model)
    patches = 16  # 4 x 4 patches: one window, so the attention term is 4 x patches^2 x d per block
    blocks = 2 * patches * _linear_weights(model.model.visual.blocks)
    merger = 2 * (patches // 4) * _linear_weights(model.model.visual.merger)
    attention = vision.depth * 4 * patches * patches * vision.hidden_size
    assert vision_forward_flops(vision, patches) == blocks + merger + attention


def test_shared_prefix_counts_each_prompt_once():
    config = qwen2_5_vl_config("tiny")
    shape = dict(prompts=2, group_size=4, prompt_tokens=30, completion_tokens=5, patches_per_image=16)
    per_row = update_flops(config, UpdateShape(**shape, forward="per_row"), with_reference=False)
    shared = update_flops(config, UpdateShape(**shape, forward="shared_prefix"), with_reference=False)
    text = config.text_config
    # per row: 6 more copies of the prompt's tokens and 6 more images, forward + backward (3x)
    extra_tokens = 6 * 30
    extra = 3 * (
        language_forward_flops(text, extra_tokens, 6 * 30 * 31 / 2) + 6 * vision_forward_flops(config.vision_config, 16)
    )
    assert abs((per_row - shared) - extra) <= 1e-9 * per_row
    assert update_flops(config, UpdateShape(**shape), with_reference=True) == shared * 4 / 3
