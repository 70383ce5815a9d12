"""Every YAML in configs/ parses and instantiates through the CLI (unknown keys are errors)."""

from pathlib import Path

import pytest

from vlrl_cli import main

CONFIGS = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_instantiates(config, tiny_checkpoint, synthetic_dir, tmp_path):
    cli = main(
        ["-c", str(config), f"--model.init_args.model_name_or_path={tiny_checkpoint}",
         f"--trainer.default_root_dir={tmp_path}"],
        run=False,
    )  # fmt: skip
    assert cli.model.hparams.model_name_or_path == str(tiny_checkpoint)
    assert cli.datamodule.hparams.model_name_or_path == str(tiny_checkpoint)  # linked, not repeated


def test_unknown_key_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS[0]).read_text().replace("lr:", "learning_rat:"))
    with pytest.raises(SystemExit):
        main(["-c", str(bad)], run=False)
