"""A missing local model folder is named as a folder, not taken for a hub id."""

import pytest

from datamodules.model_path import is_local_path, require_model


def test_hub_ids_and_local_paths_are_told_apart():
    assert not is_local_path("Qwen/Qwen2.5-VL-3B-Instruct") and not is_local_path("gpt2")
    for path in ("runs/demo_sft/export", "./export", "/abs/model", "~/models/x"):
        assert is_local_path(path), path


def test_a_missing_folder_is_named(tmp_path):
    assert require_model(str(tmp_path)) == str(tmp_path)  # an existing folder passes
    assert require_model("Qwen/Qwen2.5-VL-3B-Instruct") == "Qwen/Qwen2.5-VL-3B-Instruct"  # left to transformers
    with pytest.raises(FileNotFoundError, match="model folder not found: runs/demo_sft/export"):
        require_model("runs/demo_sft/export")


def test_loading_a_policy_from_a_missing_folder_says_so(tmp_path):
    from lightning_modules.policy import load_policy

    with pytest.raises(FileNotFoundError, match="model folder not found"):
        load_policy(str(tmp_path / "runs" / "missing"), "float32")
