"""Configuration checks that run before any model loads: an evaluation stage without its data, GPU-only options on
CPU. Each names the option and the fix."""

import pytest

from datamodules.config import PromptConfig
from datamodules.sft import SFTDataModule
from datamodules.vqa import VQADataModule
from lightning_modules.preflight import check_templates, config_problems, evaluation_fallbacks
from rewards import AccuracyReward, CombinedReward, FormatReward, HardFormatResultReward
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
    with pytest.raises(ValueError, match="data.init_args.val_data"):
        cli.trainer.validate(cli.model, datamodule=cli.datamodule)
    assert cli.model.policy is None and cli.model.engine.llm is None  # nothing loaded, no engine started


def _data(template: str) -> VQADataModule:
    return VQADataModule(val_data="unused.jsonl", prompts=PromptConfig(template=template))


def test_a_reward_checking_another_template_than_the_prompts_is_named():
    rewards = CombinedReward([AccuracyReward(), FormatReward("think"), HardFormatResultReward("caption")])
    with pytest.raises(ValueError, match="'think' but the hard_format_result reward checks template 'caption'"):
        check_templates(_data("think"), CombinedReward([HardFormatResultReward("caption")]))
    with pytest.raises(ValueError, match="the format reward checks template 'think'"):
        check_templates(_data("caption"), rewards)
    check_templates(_data("think"), CombinedReward([AccuracyReward(), FormatReward("think")]))  # agree: no error
    check_templates(object(), rewards)  # data without a template: nothing to compare


def test_plain_prompts_score_evaluation_on_the_whole_reply():
    accuracy = AccuracyReward()
    assert evaluation_fallbacks(_data("think"), CombinedReward([FormatReward("think")]), accuracy) is None
    assert evaluation_fallbacks(_data("plain"), CombinedReward([FormatReward("think")]), accuracy) == ("text",)
    with pytest.raises(ValueError, match="answer_fallbacks: \\[text\\]"):
        evaluation_fallbacks(_data("plain"), CombinedReward([accuracy]), accuracy)
    reads_text = AccuracyReward(answer_fallbacks=("text",))
    assert evaluation_fallbacks(_data("plain"), CombinedReward([reads_text]), reads_text) is None
