import logging

import pytest
import torch

from lightning_modules import policy as module
from lightning_modules.logprobs import completion_logps
from lightning_modules.policy import (
    FrozenReference,
    LoRAConfig,
    flash_attn_problem,
    load_policy,
    reference_context,
    resolve_attn_implementation,
)
from tests.probes import image_question_inputs


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
    enc, c = image_question_inputs(processor)
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


def test_export_merges_lora_into_loadable_weights(tiny_checkpoint, processor, tmp_path):
    from transformers import AutoModelForImageTextToText

    from lightning_modules.policy import export_policy

    model = load_policy(str(tiny_checkpoint), dtype="float32", lora=LoRAConfig(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    enc, c = image_question_inputs(processor)
    args = (enc["input_ids"], enc["attention_mask"], c, enc["pixel_values"], enc["image_grid_thw"])
    merged = AutoModelForImageTextToText.from_pretrained(export_policy(model, str(tiny_checkpoint), tmp_path / "m"))
    with torch.no_grad():
        want, _ = completion_logps(model, *args, mm_token_type_ids=enc["mm_token_type_ids"])
        got, _ = completion_logps(merged, *args, mm_token_type_ids=enc["mm_token_type_ids"])
    assert torch.allclose(want, got, atol=1e-5)
    assert any("lora_" in n for n, _ in model.named_parameters())  # the training model keeps its adapters


# -- the attention kernel: ``auto`` takes flash-attn only when it really loads. Here (no CUDA) transformers' check says
# no, so a broken install is simulated where the check would pass on a GPU: a ``flash_attn`` package whose import
# fails as a binary built against another torch does (an undefined symbol).


def test_auto_is_sdpa_without_flash_attn():
    assert "not installed" in flash_attn_problem()
    assert resolve_attn_implementation("auto") == "sdpa"
    assert resolve_attn_implementation("eager") == "eager"


@pytest.fixture
def broken_flash_attn(tmp_path, monkeypatch):
    package = tmp_path / "flash_attn"
    package.mkdir()
    (package / "__init__.py").write_text(
        'raise ImportError("flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEa")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("transformers.utils.is_flash_attn_2_available", lambda: True)
    monkeypatch.setattr(module, "_WARNED", set())


def test_broken_flash_attn_falls_back_to_sdpa_with_one_warning(broken_flash_attn, caplog):
    with caplog.at_level(logging.WARNING, logger="lightning_modules.policy"):
        assert resolve_attn_implementation("auto") == "sdpa"
        assert resolve_attn_implementation("auto") == "sdpa"  # the reference model loads too: still one line
    (record,) = caplog.records
    assert "undefined symbol" in record.getMessage() and "sdpa" in record.getMessage()


def test_broken_flash_attn_asked_by_name_is_an_error(broken_flash_attn):
    with pytest.raises(RuntimeError, match="flash_attention_2, but flash-attn does not load.*undefined symbol"):
        resolve_attn_implementation("flash_attention_2")
