import hashlib
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from tools.task_vocab import task_corpus
from tools.tiny_model import (
    FIRST_SPECIAL_ID,
    SPECIAL_TOKENS,
    _task_bpe_json,
    build_tokenizer,
    qwen2_5_vl_config,
    vocab_layout,
    write_random_checkpoint,
)


def test_checkpoint_has_hub_layout(qwen_checkpoint):
    names = {p.name for p in qwen_checkpoint.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    } <= names
    config = json.loads((qwen_checkpoint / "config.json").read_text())
    assert config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert config["image_token_id"] == 151655
    assert config["text_config"]["vocab_size"] == 151936


def test_tokenizer_matches_qwen_ids(qwen_checkpoint):
    tokenizer = AutoTokenizer.from_pretrained(qwen_checkpoint)
    assert tokenizer.convert_tokens_to_ids("<|vision_start|>") == 151652
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id == 151645
    for offset, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.convert_tokens_to_ids(token) == FIRST_SPECIAL_ID + offset
    # Qwen2 splits digits one by one; "Hello world" are single BPE tokens
    assert tokenizer("Hello world 123", add_special_tokens=False)["input_ids"] == [9707, 1879, 220, 16, 17, 18]
    assert tokenizer.decode(tokenizer("naïve café 🙂")["input_ids"]) == "naïve café 🙂"


@pytest.mark.parametrize("checkpoint", ["qwen_checkpoint", "tiny_checkpoint"])
def test_loads_through_from_pretrained_and_generates_from_an_image(checkpoint, request):
    from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2_5_VLForConditionalGeneration

    path = request.getfixturevalue(checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert processor.image_processor.size["shortest_edge"] == 56 * 56
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n") and "<|vision_start|><|image_pad|><|vision_end|>" in prompt
    image = Image.new("RGB", (84, 56), (200, 30, 30))
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    # 84x56 -> a 3x2 grid of 28px blocks -> 6 image tokens in place of the one placeholder
    assert (inputs["input_ids"] == model.config.image_token_id).sum().item() == 6
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


def test_task_vocabulary_is_small_and_keeps_qwen_special_tokens_in_order(tiny_checkpoint, tokenizer):
    first, rows = vocab_layout("task")
    assert 500 < first < 4096 and rows % 64 == 0 and rows >= len(tokenizer) == first + 22
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == rows
    for offset, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.convert_tokens_to_ids(token) == first + offset
    assert config["image_token_id"] == tokenizer.convert_tokens_to_ids("<|image_pad|>") == first + 12
    assert config["vision_start_token_id"] == first + 9 and config["vision_end_token_id"] == first + 10
    assert config["text_config"]["eos_token_id"] == tokenizer.eos_token_id == first + 2
    assert tokenizer.pad_token_id == config["text_config"]["pad_token_id"] == first
    generation = json.loads((tiny_checkpoint / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [first + 2, first]


def test_task_vocabulary_covers_the_tasks_in_whole_words_and_any_text_by_bytes(tokenizer):
    words = tokenizer.tokenize("What colour is the triangle in the image? Options: A. red B. green C. blue D. yellow")
    assert words[:5] == ["What", "Ġcolour", "Ġis", "Ġthe", "Ġtriangle"]
    assert all(len(tokenizer.tokenize(text)) <= len(text.split()) * 4 for text in list(task_corpus())[:200])
    for text in ("naïve café 🙂 12345", "<info>x</info> <think>\n</think>", "∫ x² dx = 3.14"):
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert tokenizer("Hello 123", add_special_tokens=False)["input_ids"][-3:] == [
        tokenizer.convert_tokens_to_ids(d) for d in "123"
    ]  # digits one by one, as Qwen2's pre-tokenizer splits them


def test_task_vocabulary_is_the_same_in_another_process():
    # the tokenizer is cached per process: a second process trains it afresh (and seeds its hash maps anew)
    code = (
        "from tools.task_vocab import train_task_bpe; from tools.tiny_model import "
        "QWEN2_PATTERN; import hashlib; "
        "print(hashlib.sha256(train_task_bpe(QWEN2_PATTERN).to_str().encode()).hexdigest())"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == hashlib.sha256(_task_bpe_json().encode()).hexdigest()
    assert build_tokenizer("task").get_vocab() == build_tokenizer("task").get_vocab()
    with pytest.raises(ValueError, match="unknown vocab"):
        vocab_layout("gpt2")


def test_the_command_writes_each_family_and_refuses_a_released_size_it_does_not_have(tmp_path, capsys):
    import json

    from tools.tiny_model import main

    main([str(tmp_path / "q3"), "--family", "qwen3_vl", "--vocab", "task"])
    config = json.loads((tmp_path / "q3" / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl" and config["vision_config"]["patch_size"] == 16
    assert config["vision_config"]["deepstack_visual_indexes"] == [0]
    assert "wrote tiny qwen3_vl checkpoint" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(tmp_path / "q3big"), "--family", "qwen3_vl", "--size", "7b"])
    assert "only Qwen2.5-VL is written at released sizes" in capsys.readouterr().err
