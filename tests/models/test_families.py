"""The model families on their tiny checkpoints: FSDP units from the model class, LoRA targets that name exactly the
projections of each family, image grids, and a model outside the families stopped before training."""

from __future__ import annotations

import json
import shutil

import pytest

from lightning_modules.policy import LoRAConfig, check_family, load_policy
from lightning_modules.sharding import shard_units
from models.families import FAMILIES, NEW_FAMILY, UnsupportedModelError, family, family_of, supported, unit_classes
from tests.conftest import FAMILIES as TESTED
from tests.e2e.test_resume import fit_args
from tools import tiny_model
from vlrl_cli import entry

LANGUAGE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_every_family_has_a_tiny_checkpoint_and_is_tested():
    assert set(FAMILIES) == set(tiny_model.FAMILIES) == set(TESTED)
    assert supported() == "Qwen2-VL (qwen2_vl), Qwen2.5-VL (qwen2_5_vl), Qwen3-VL (qwen3_vl)"
    for f in FAMILIES.values():
        assert f.grouped_forward or f.per_row_reason, f.name  # a family on the per-row forward says why


@pytest.mark.parametrize("name", TESTED)
def test_the_tiny_checkpoint_is_the_family_s_architecture_loaded_as_users_load_theirs(family_checkpoint, name):
    model = load_policy(str(family_checkpoint(name)), "float32")
    assert family_of(model).model_type == name and check_family(str(family_checkpoint(name))).model_type == name
    # FSDP units: the class's own _no_split_modules, two decoder layers then two vision blocks
    assert unit_classes(model) == tuple(type(model)._no_split_modules)
    units = [type(m).__name__ for m in shard_units(model)]
    assert len(units) == 4 and set(units) == set(unit_classes(model)), units
    config = model.config
    assert config.text_config.num_hidden_layers == 2 and config.text_config.hidden_size == 128
    patch = 16 if name == "qwen3_vl" else 14
    assert config.vision_config.patch_size == patch == tiny_model.patch_size(name)


@pytest.mark.parametrize("name", TESTED)
@pytest.mark.parametrize("vision", [False, True])
def test_lora_adapts_exactly_the_family_s_projections(family_checkpoint, name, vision):
    model = load_policy(str(family_checkpoint(name)), "float32", lora=LoRAConfig(r=4, vision=vision))
    adapted = {n.removesuffix(".lora_A.default.weight") for n, _ in model.named_parameters() if "lora_A" in n}
    language = {n for n in adapted if ".language_model." in n}
    assert {n.rsplit(".", 1)[-1] for n in language} == set(LANGUAGE) and len(language) == 2 * len(LANGUAGE)
    blocks = adapted - language
    f = FAMILIES[name]
    want = {"qkv", "proj", *f.vision_mlp} if vision else set()
    assert {n.rsplit(".", 1)[-1] for n in blocks} == want and len(blocks) == 2 * len(want)
    assert all(".visual.blocks." in n for n in blocks)  # the merger and DeepStack mergers stay full
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


@pytest.mark.parametrize("name", TESTED)
def test_the_processor_gives_one_image_token_per_factor_square(family_checkpoint, name):
    from PIL import Image
    from transformers import AutoProcessor

    from datamodules.images import checkpoint_image_factor, fit_image, num_image_tokens

    factor = checkpoint_image_factor(family_checkpoint(name))
    assert factor == 2 * tiny_model.patch_size(name)  # 28, or 32 for Qwen3-VL
    processor = AutoProcessor.from_pretrained(family_checkpoint(name))
    low, high = tiny_model.default_pixels(name)
    image = fit_image(Image.new("RGB", (150, 90), "red"), low, high, "row 0", factor)
    assert image.width % factor == 0 and image.height % factor == 0
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"]
    assert int(grid.prod()) // 4 == num_image_tokens(image, factor)  # merge 2x2: the placeholders the prompt gets


def test_a_family_outside_the_list_says_which_are_supported_and_what_a_new_one_needs():
    with pytest.raises(UnsupportedModelError) as raised:
        family("llava", "llava-hf/llava-1.5-7b-hf")
    message = str(raised.value)
    assert message.startswith("llava-hf/llava-1.5-7b-hf is a llava, which vlrl does not train; supported: Qwen2-VL")
    assert message.endswith(NEW_FAMILY)


def test_vlrl_fit_on_an_unsupported_model_stops_before_training_with_one_line(tiny_checkpoint, tmp_path, capsys):
    """A text-only Qwen2 checkpoint (tokenizer and image processor present, so the data loads): exit 2, one line."""
    other = tmp_path / "qwen2-text"
    shutil.copytree(tiny_checkpoint, other)
    config = json.loads((other / "config.json").read_text())
    text = dict(config["text_config"], model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    (other / "config.json").write_text(json.dumps(text))
    args = fit_args(other, tmp_path / "data", tmp_path / "run", 1)
    assert entry(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"vlrl fit: error: {other} is a qwen2, which vlrl does not train; supported: Qwen2-VL")
    assert not any("Traceback" in line for line in err)
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_an_adapter_folder_is_checked_by_its_base_model(tiny_checkpoint, tmp_path):
    """``vlrl export --keep-lora`` writes adapters only (no config.json): the family comes from the base they name,
    and the folder still loads."""
    policy = load_policy(str(tiny_checkpoint), "float32", lora=LoRAConfig(r=4))
    policy.save_pretrained(tmp_path / "adapter")
    assert not (tmp_path / "adapter" / "config.json").exists()
    assert check_family(str(tmp_path / "adapter")).model_type == "qwen2_5_vl"
    assert family_of(load_policy(str(tmp_path / "adapter"), "float32")).model_type == "qwen2_5_vl"
