"""Configuration checks that run before any model loads: an evaluation stage without its data, GPU-only options on
CPU. Each names the option and the fix."""

import time

import pytest

from datamodules.sft import SFTDataModule
from datamodules.vqa import VQADataModule
from lightning_modules.preflight import config_problems
from tests.test_configs import CONFIGS, FIXTURES
from vlrl_cli import main


def test_evaluation_stages_need_their_data_and_fit_does_not():
    data = VQADataModule(train_data="train.jsonl")
    assert config_problems("fit", "gpu", data) == []  # a fit without val data trains without validation
    (problem,) = config_problems("validate", "gpu", data)
    assert "data.init_args.val_data" in problem
    assert "data.init_args.test_data" in config_problems("test", "gpu", data)[0]
    assert config_problems("validate", "gpu", VQADataModule(train_data="t.jsonl", val_data={"a": "a.jsonl"})) == []
    sft = SFTDataModule(dataset_dir="d", datasets=["x"], val_datasets=["y"])
    assert config_problems("validate", "gpu", sft) == []


def test_flash_attention_on_cpu_is_named_with_its_fix():
    data = VQADataModule(train_data="train.jsonl")
    (problem,) = config_problems("fit", "cpu", data, "flash_attention_2")
    assert "attn_implementation" in problem and "sdpa" in problem
    assert config_problems("fit", "gpu", data, "flash_attention_2") == []
    assert config_problems("fit", "cpu", data, "auto") == []


def test_fsdp1_strategy_is_refused_with_the_fsdp2_file_named():
    from lightning.pytorch.strategies import FSDPStrategy

    from lightning_modules.sharding import FSDP2Strategy

    data = VQADataModule(train_data="train.jsonl")
    (problem,) = config_problems("fit", "gpu", data, strategy=FSDPStrategy())
    assert "FSDPStrategy" in problem and "configs/strategy/fsdp.yaml" in problem
    assert config_problems("fit", "gpu", data, strategy=FSDP2Strategy()) == []


def test_validate_without_val_data_fails_before_the_model_loads(tiny_checkpoint, tmp_path):
    args = [
        "-c",
        str(CONFIGS / "visionary_r1.yaml"),
        "-c",
        str(CONFIGS / "cpu.yaml"),
        f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
        f"--data.init_args.train_data={FIXTURES / 'visionary_r1' / 'train.jsonl'}",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    cli = main(args, run=False)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="data.init_args.val_data"):
        cli.trainer.validate(cli.model, datamodule=cli.datamodule)
    assert cli.model.policy is None and cli.model.engine.llm is None  # nothing loaded, no engine started
    assert time.perf_counter() - start < 30
