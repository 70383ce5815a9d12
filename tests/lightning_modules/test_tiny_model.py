import json

import torch
from PIL import Image

from lightning_modules.tiny_model import FIRST_SPECIAL_ID, SPECIAL_TOKENS, qwen2_5_vl_config, write_random_checkpoint


def test_checkpoint_has_hub_layout(tiny_checkpoint):
    names = {p.name for p in tiny_checkpoint.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    } <= names
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert config["image_token_id"] == 151655


def test_tokenizer_matches_qwen_ids(tokenizer):
    assert tokenizer.convert_tokens_to_ids("<|vision_start|>") == 151652
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id == 151645
    for offset, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.convert_tokens_to_ids(token) == FIRST_SPECIAL_ID + offset
    # Qwen2 splits digits one by one; "Hello world" are single BPE tokens
    assert tokenizer("Hello world 123", add_special_tokens=False)["input_ids"] == [9707, 1879, 220, 16, 17, 18]
    assert tokenizer.decode(tokenizer("naïve café 🙂")["input_ids"]) == "naïve café 🙂"


def test_loads_through_from_pretrained_and_generates_from_an_image(tiny_checkpoint, processor):
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLForConditionalGeneration

    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint)
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert processor.image_processor.size["shortest_edge"] == 56 * 56
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n") and "<|vision_start|><|image_pad|><|vision_end|>" in prompt
    image = Image.new("RGB", (84, 56), (200, 30, 30))
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    # 84x56 -> a 3x2 grid of 28px blocks -> 6 image tokens in place of the one placeholder
    assert (inputs["input_ids"] == 151655).sum().item() == 6
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=True)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 8)
    assert isinstance(processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True), str)


def test_rewriting_is_a_noop_and_sizes_are_real(tmp_path):
    first = write_random_checkpoint(tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    write_random_checkpoint(tmp_path)
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    config = qwen2_5_vl_config("3b")
    assert config.text_config.hidden_size == 2048 and config.vision_config.depth == 32
    assert config.text_config.num_key_value_heads == 2 and config.tie_word_embeddings
    tiny = qwen2_5_vl_config("tiny")
    assert tiny.text_config.hidden_size // tiny.text_config.num_attention_heads == 64  # vLLM CPU kernels need 64
