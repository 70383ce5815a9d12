import pytest
import torch
from PIL import Image

from lightning_modules.logprobs import completion_logps, selective_logps
from lightning_modules.policy import FrozenReference, LoRAConfig, load_policy, reference_context


def test_selective_logps_match_full_log_softmax():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden, targets = torch.randn(3, 5, 8), torch.randint(0, 50, (3, 5))
    logps, entropy = selective_logps(hidden, head, targets, chunk_size=4)
    full = torch.log_softmax(head(hidden), -1)
    assert torch.allclose(logps, full.gather(-1, targets[..., None]).squeeze(-1), atol=1e-6)
    assert torch.allclose(entropy, -(full.exp() * full).sum(-1), atol=1e-5)


def test_selective_logps_at_a_temperature_are_the_tempered_distribution():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden, targets = torch.randn(2, 4, 8), torch.randint(0, 50, (2, 4))
    logps, entropy = selective_logps(hidden, head, targets, chunk_size=3, temperature=0.5)
    tempered = torch.log_softmax(head(hidden) / 0.5, -1)
    assert torch.allclose(logps, tempered.gather(-1, targets[..., None]).squeeze(-1), atol=1e-5)
    assert torch.allclose(entropy, -(tempered.exp() * tempered).sum(-1), atol=1e-5)
    raw, raw_entropy = selective_logps(hidden, head, targets)
    assert (entropy < raw_entropy).all()  # T < 1 sharpens every position
    with pytest.raises(ValueError, match="temperature must be > 0"):
        selective_logps(hidden, head, targets, temperature=0.0)


def _inputs(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[prompt + "red circle"], images=[Image.new("RGB", (56, 56), "red")], return_tensors="pt")
    return enc, len(processor.tokenizer("red circle", add_special_tokens=False)["input_ids"])


def test_completion_logps_match_the_models_own_logits(tiny_checkpoint, processor):
    model = load_policy(str(tiny_checkpoint), dtype="float32")
    enc, c = _inputs(processor)
    logps, _ = completion_logps(
        model,
        enc["input_ids"],
        enc["attention_mask"],
        c,
        enc["pixel_values"],
        enc["image_grid_thw"],
        chunk_size=3,
        mm_token_type_ids=enc["mm_token_type_ids"],  # M-RoPE positions depend on it
    )
    logits = model(**enc).logits[:, -c - 1 : -1].float()
    expected = torch.log_softmax(logits, -1).gather(-1, enc["input_ids"][:, -c:, None]).squeeze(-1)
    assert torch.allclose(logps, expected, atol=1e-5)

    # with a completion mask the LM head skips the masked-out positions; the kept ones are unchanged and train
    mask = torch.ones_like(expected, dtype=torch.long)
    mask[:, -1] = 0  # [1, c]: the last token is padding
    masked, entropy = completion_logps(
        model,
        enc["input_ids"],
        enc["attention_mask"],
        c,
        enc["pixel_values"],
        enc["image_grid_thw"],
        completion_mask=mask,
        mm_token_type_ids=enc["mm_token_type_ids"],
    )
    assert torch.allclose(masked[:, :-1], expected[:, :-1], atol=1e-5) and masked[0, -1] == 0 and entropy[0, -1] == 0
    masked.sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


def test_full_reference_is_frozen_copy_outside_module_tree(tiny_checkpoint):
    model = load_policy(str(tiny_checkpoint), dtype="float32", freeze_vision_tower=True)
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".visual." in f".{n}")
    assert any(p.requires_grad for n, p in model.named_parameters() if "language_model" in n)
    ref = FrozenReference(model)
    assert not isinstance(ref, torch.nn.Module) and not any(p.requires_grad for p in ref.model.parameters())
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert not torch.equal(next(model.parameters()), next(ref.model.parameters()))


def test_bf16_reference_casts_weights_but_keeps_fp32_rotary_frequencies(tiny_checkpoint):
    """The recipes' ``reference_dtype: bfloat16``: parameters are the policy's rounded to bf16 (tied ones still one
    tensor), while buffers such as the rotary inverse frequencies stay fp32 as ``from_pretrained`` keeps them."""
    model = load_policy(str(tiny_checkpoint), dtype="float32")
    ref = FrozenReference(model, "bfloat16").model
    params = dict(model.named_parameters())
    for name, p in ref.named_parameters():
        assert p.dtype == torch.bfloat16 and not p.requires_grad
        assert torch.equal(p, params[name].detach().to(torch.bfloat16)), name
    assert ref.get_input_embeddings().weight is ref.get_output_embeddings().weight  # tied in the tiny model
    rotary = {n: b for n, b in ref.named_buffers() if "inv_freq" in n}
    assert rotary and all(b.dtype == torch.float32 for b in rotary.values())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the policy is untouched


def test_freeze_embeddings_fixes_the_vocabulary_matrices_only(tiny_checkpoint):
    model = load_policy(str(tiny_checkpoint), dtype="float32", freeze_embeddings=True)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {
        n
        for n, p in model.named_parameters()
        if p is model.get_input_embeddings().weight or p is model.get_output_embeddings().weight
    }
    assert frozen and len(frozen) < len(list(model.parameters()))
    assert model.get_output_embeddings().weight.shape[0] == model.config.text_config.vocab_size


def test_lora_trains_adapters_only_and_reference_disables_them(tiny_checkpoint, processor):
    model = load_policy(str(tiny_checkpoint), dtype="float32", lora=LoRAConfig(r=4, alpha=8, dropout=0.0))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("visual" in n for n in trainable)  # vision tower out by default
    enc, c = _inputs(processor)
    args = (enc["input_ids"], enc["attention_mask"], c, enc["pixel_values"], enc["image_grid_thw"])
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()  # peft initialises B to 0; make the adapter matter
        policy_logps, _ = completion_logps(model, *args)
        with reference_context(model, None) as ref:
            ref_logps, _ = completion_logps(ref, *args)
        base = load_policy(str(tiny_checkpoint), dtype="float32")
        base_logps, _ = completion_logps(base, *args)
    assert torch.allclose(ref_logps, base_logps, atol=1e-5)
    assert (policy_logps - base_logps).abs().max() > 1e-3
    with_vision = load_policy(str(tiny_checkpoint), dtype="float32", lora=LoRAConfig(r=4, vision=True))
    assert any("visual" in n and "lora_" in n for n, _ in with_vision.named_parameters())


def test_labelled_token_loss_equals_hf_label_loss(tiny_checkpoint, synthetic_dir, processor):
    from datamodules.sft import ShareGPTDataset, collate_sft
    from lightning_modules.sft import labelled_token_loss

    ds = ShareGPTDataset(synthetic_dir / "train_sft_think.jsonl", processor, min_pixels=3136, max_pixels=3136)
    batch = collate_sft([ds[0], ds[1]], processor.tokenizer.pad_token_id)
    model = load_policy(str(tiny_checkpoint), dtype="float32")
    keys = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
    inputs = {k: batch[k] for k in keys}
    ours, tokens = labelled_token_loss(model, inputs, batch["labels"], chunk_size=7)
    reference = model(**inputs, labels=batch["labels"]).loss
    assert tokens == int((batch["labels"][:, 1:] != -100).sum())
    assert torch.allclose(ours, reference, atol=1e-5)


def test_export_merges_lora_into_loadable_weights(tiny_checkpoint, processor, tmp_path):
    from transformers import AutoModelForImageTextToText

    from tools.export import export_policy

    model = load_policy(str(tiny_checkpoint), dtype="float32", lora=LoRAConfig(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    enc, c = _inputs(processor)
    args = (enc["input_ids"], enc["attention_mask"], c, enc["pixel_values"], enc["image_grid_thw"])
    merged = AutoModelForImageTextToText.from_pretrained(export_policy(model, str(tiny_checkpoint), tmp_path / "m"))
    with torch.no_grad():
        want, _ = completion_logps(model, *args, mm_token_type_ids=enc["mm_token_type_ids"])
        got, _ = completion_logps(merged, *args, mm_token_type_ids=enc["mm_token_type_ids"])
    assert torch.allclose(want, got, atol=1e-5)
    assert any("lora_" in n for n, _ in model.named_parameters())  # the training model keeps its adapters
