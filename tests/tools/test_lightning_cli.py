"""tools/lightning_cli.py's argument handling: a nested group's help as users type it."""

import pytest

from tools.lightning_cli import DEFAULT_CLASSES, expand_nested_help, main


def test_nested_help_gets_the_class_of_the_config_or_the_default(tmp_path):
    config = tmp_path / "sft.yaml"
    config.write_text("model:\n  class_path: lightning_modules.sft.SFTModule\n")
    assert expand_nested_help(["fit", "--model.rollout.help"]) == [
        "fit",
        "--model.help",
        DEFAULT_CLASSES["model"],
        "--model.rollout.help",
    ]
    assert expand_nested_help(["fit", "-c", str(config), "--model.optim.help"])[3:5] == [
        "--model.help",
        "lightning_modules.sft.SFTModule",
    ]
    plain = ["fit", "-c", str(config), "--model.help", "X", "--model.optim.help"]
    assert expand_nested_help(plain) == plain  # the user named the class: unchanged
    assert expand_nested_help(["fit", "--trainer.max_steps=3"]) == ["fit", "--trainer.max_steps=3"]


def test_model_rollout_help_prints_the_group(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model.rollout.help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--model.rollout.group_size GROUP_SIZE" in out and "completions per prompt (G)" in out


def test_a_help_that_takes_a_class_or_a_named_model_is_left_alone():
    engine = ["fit", "--model", "lightning_modules.grpo.GRPOModule", "--model.engine.help", "rollout.hf.HFEngine"]
    assert expand_nested_help(engine) == engine
    named = ["fit", "--model=lightning_modules.sft.SFTModule", "--model.optim.help"]
    assert expand_nested_help(named) == named
