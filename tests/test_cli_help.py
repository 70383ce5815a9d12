"""``vlrl fit --model.help``, ``--model.engine.help`` and ``--data.help`` describe every option (jsonargparse reads the
"Args:" section of each class's docstring), and the engine choices list both engines."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

import pytest

from vlrl_cli import main


def cli_help(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def undescribed(help_text: str, prefix: str, cls: type) -> list[str]:
    """``cls.__init__``'s parameters whose ``--{prefix}.{name}`` entry has no text before its ``(type: ...)``; a
    parameter typed as a dataclass (an argument group such as ``policy``) is checked field by field; ``**kwargs``
    (passed on to the parent class, whose options the help lists) is left to a check of that class."""
    missing = []
    hints = typing.get_type_hints(cls.__init__)
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    for name in [p.name for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD]:
        if dataclasses.is_dataclass(hints.get(name)):
            missing += [f"{name}.{field}" for field in undescribed(help_text, f"{prefix}.{name}", hints[name])]
            continue
        entry = re.search(rf"^  --{re.escape(prefix)}\.{name}[ ,+\n].*?\(type:", help_text, re.S | re.M)
        assert entry is not None, f"--{prefix}.{name} is not in the help"
        # the option's signature ends at two spaces or a line break; its description, if any, follows
        parts = re.split(r" {2,}|\n", entry.group(0).strip(), maxsplit=1)
        if len(parts) < 2 or not parts[1].removesuffix("(type:").strip():
            missing.append(name)
    return missing


def test_model_help_describes_every_option_and_lists_both_engines(capsys) -> None:
    from lightning_modules.grpo import GRPOModule
    from lightning_modules.sft import SFTModule

    assert undescribed(cli_help(capsys, "--model.help", "lightning_modules.sft.SFTModule"), "model", SFTModule) == []
    text = cli_help(capsys, "--model.help", "lightning_modules.grpo.GRPOModule")
    assert undescribed(text, "model", GRPOModule) == []
    engine = re.search(r"^  --model\.engine ENGINE.*?known subclasses:(.*?)\)", text, re.S | re.M)
    assert engine is not None
    assert "rollout.hf.HFEngine" in engine.group(1) and "rollout.vllm.VLLMEngine" in engine.group(1)


@pytest.mark.parametrize(
    "class_path",
    [
        "datamodules.vqa.VQADataModule",
        "datamodules.vqa.SyntheticVQADataModule",
        "datamodules.benchmarks.BenchmarkDataModule",
        "datamodules.sft.SFTDataModule",
    ],
)
def test_data_help_describes_every_option(capsys, class_path: str) -> None:
    """Each data module's options, its argument groups' fields included; a module that passes ``**kwargs`` on to
    ``VQADataModule`` lists that module's options too, each described."""
    import importlib

    from datamodules.vqa import VQADataModule

    module, name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    text = cli_help(capsys, "--data.help", class_path)
    assert undescribed(text, "data", cls) == []
    if issubclass(cls, VQADataModule):
        assert undescribed(text, "data", VQADataModule) == []


def test_importing_the_module_does_not_import_vllm() -> None:
    import subprocess
    import sys

    code = "import sys, lightning_modules.grpo; print('vllm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.mark.parametrize(
    "class_path",
    ["rollout.hf.HFEngine", "rollout.vllm.VLLMEngine"],
)
def test_engine_help_describes_every_option(capsys, class_path: str) -> None:
    import importlib

    module, name = class_path.rsplit(".", 1)
    text = cli_help(capsys, "--model", "lightning_modules.grpo.GRPOModule", "--model.engine.help", class_path)
    assert undescribed(text, "engine", getattr(importlib.import_module(module), name)) == []


@pytest.mark.parametrize(
    "class_path",
    ["lightning_modules.config.RolloutSettings", "rollout.engine.SamplingConfig", "datamodules.sft.ShareGPTFormat"],
)
def test_settings_help_describes_every_option(class_path: str) -> None:
    """Dataclass init args: the CLI cannot print their help on their own inside ``--model`` (jsonargparse offers
    ``--model.rollout.help`` but rejects it in subclass mode), so the same parser builds it here."""
    import importlib
    import io

    from jsonargparse import ArgumentParser

    module, name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "settings")
    out = io.StringIO()
    parser.print_help(out)
    assert undescribed(out.getvalue(), "settings", cls) == []
