"""The data modules' argument groups (``datamodules.config``): every field described in its class's ``Args:`` section
(what ``--data.help`` prints), values checked when a group is built, plain dicts in the hyperparameters, and a module
rebuilt from them."""

from __future__ import annotations

import dataclasses
import inspect
import io
import re

import pytest
import torch

from datamodules.benchmarks import BenchmarkDataModule
from datamodules.config import (
    LoaderConfig,
    PromptConfig,
    SFTExampleConfig,
    SFTLoaderConfig,
    from_plain,
    grouped_data_arguments,
)
from datamodules.sft import SFTDataModule, ShareGPTFormat
from datamodules.vqa import SyntheticVQADataModule, VQADataModule

GROUPS = [PromptConfig, LoaderConfig, SFTExampleConfig, SFTLoaderConfig, ShareGPTFormat]
MODULES = [VQADataModule, SyntheticVQADataModule, BenchmarkDataModule, SFTDataModule]


def described(cls: type) -> dict[str, str]:
    """Name -> text of each entry of ``cls``'s docstring ``Args:`` section."""
    doc = inspect.getdoc(cls) or ""
    assert "\nArgs:\n" in doc, f"{cls.__name__} has no Args: section"
    entries: dict[str, str] = {}
    name = None
    for line in doc.split("\nArgs:\n", 1)[1].splitlines():
        entry = re.fullmatch(r"    (\w+): (.*)", line)
        if entry:
            name, entries[entry.group(1)] = entry.group(1), entry.group(2)
        elif name and line.startswith("        "):
            entries[name] += " " + line.strip()
        elif line.strip():
            break  # the section ended
    return entries


@pytest.mark.parametrize("cls", GROUPS, ids=lambda c: c.__name__)
def test_every_field_of_a_group_is_described(cls):
    entries = described(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    assert [n for n in names if len(entries.get(n, "")) < 10] == []  # each with a sentence, not a stub
    assert set(entries) <= set(names), "the docstring describes fields the class does not have"


@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_every_argument_of_a_module_is_described(cls):
    entries = described(cls)
    params = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:]]
    names = [p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    assert [n for n in names if len(entries.get(n, "")) < 10] == []


@pytest.mark.parametrize(
    "cls, values, field",
    [
        (PromptConfig, {"template": "nope"}, "template"),
        (PromptConfig, {"columns": {"picture": "img"}}, "columns"),
        (PromptConfig, {"default_problem_type": "astrology"}, "default_problem_type"),
        (PromptConfig, {"min_pixels": 0}, "min_pixels"),
        (PromptConfig, {"min_pixels": 4096, "max_pixels": 3136}, "min_pixels"),
        (PromptConfig, {"max_prompt_length": 0}, "max_prompt_length"),
        (LoaderConfig, {"batch_size": 0}, "batch_size"),
        (LoaderConfig, {"val_batch_size": 0}, "val_batch_size"),
        (LoaderConfig, {"num_workers": -1}, "num_workers"),
        (LoaderConfig, {"limit_val": 0}, "limit_val"),
        (SFTExampleConfig, {"image_resize": "lf"}, "image_resize"),
        (SFTExampleConfig, {"max_pixels": 512}, "min_pixels"),
        (SFTExampleConfig, {"max_length": 0}, "max_length"),
        (SFTLoaderConfig, {"batch_size": 0}, "batch_size"),
        (SFTLoaderConfig, {"num_workers": -2}, "num_workers"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_field(cls, values, field):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        cls(**values)


def test_the_defaults_are_the_modules_defaults_as_before():
    prompts, loader = PromptConfig(), LoaderConfig()
    assert (prompts.template, prompts.min_pixels, prompts.max_pixels, prompts.max_prompt_length) == (
        "caption",
        3136,
        12845056,
        1024,
    )
    assert (prompts.skip_long_prompts, prompts.skip_bad_rows, prompts.answer_hints) == (True, False, True)
    assert dataclasses.astuple(loader) == (8, None, 0, True, 0, None)
    assert dataclasses.astuple(SFTExampleConfig()) == (1024, 589824, "llamafactory", None, 4096, True, False, False)
    assert dataclasses.astuple(SFTLoaderConfig()) == (4, 0, 0)


def test_from_plain_rebuilds_a_group_over_the_class_or_a_default_instance():
    assert from_plain(PromptConfig, {"template": "think"}) == PromptConfig(template="think")
    synthetic = PromptConfig(min_pixels=None, max_pixels=None)
    assert from_plain(PromptConfig, {"template": "think"}, synthetic) == PromptConfig(
        "think", min_pixels=None, max_pixels=None
    )
    instance = LoaderConfig(batch_size=2)
    assert from_plain(LoaderConfig, instance) is instance and from_plain(LoaderConfig, None) is None
    with pytest.raises(TypeError, match="batch_sise"):
        from_plain(LoaderConfig, {"batch_sise": 2})
    with pytest.raises(ValueError, match="^template"):
        from_plain(PromptConfig, {"template": "nope"})


def test_hparams_hold_plain_dicts_and_rebuild_the_module():
    """A checkpoint holds the groups as dicts (``torch.load(weights_only=True)`` reads them back), and the module
    rebuilt from them has the same settings."""
    dm = VQADataModule(
        train_data="t.jsonl",
        prompts=PromptConfig(template="think", columns={"image": "pic"}, max_prompt_length=512),
        loader=LoaderConfig(batch_size=2, limit_val=4),
    )
    assert dm.hparams.prompts == dataclasses.asdict(dm.prompt_config) and dm.hparams.loader["batch_size"] == 2
    buffer = io.BytesIO()
    torch.save(dict(dm.hparams), buffer)
    buffer.seek(0)
    again = VQADataModule(**torch.load(buffer, weights_only=True))
    assert (again.prompt_config, again.loader_config) == (dm.prompt_config, dm.loader_config)
    assert (again.template, again.batch_size, again.max_prompt_length) == ("think", 2, 512)
    assert (again.min_pixels, again.max_pixels) == (3136, 12845056)
    sft = SFTDataModule("a.jsonl", format=ShareGPTFormat(images=None), examples=SFTExampleConfig(max_length=64))
    assert sft.hparams.format["images"] is None and sft.hparams.examples["max_length"] == 64
    rebuilt = SFTDataModule(**{k: v for k, v in sft.hparams.items()})
    assert (rebuilt.format, rebuilt.example_config) == (sft.format, sft.example_config) and rebuilt.batch_size == 4


def test_the_synthetic_images_are_read_at_their_size_unless_bounds_are_given(tmp_path):
    area = 56 * 56
    dm = SyntheticVQADataModule(data_dir=str(tmp_path), image_size=56)
    assert (dm.min_pixels, dm.max_pixels) == (area, area)
    dm = SyntheticVQADataModule(data_dir=str(tmp_path), image_size=56, prompts={"template": "think"})  # a dict
    assert (dm.min_pixels, dm.max_pixels, dm.template) == (area, area, "think")
    dm = SyntheticVQADataModule(data_dir=str(tmp_path), image_size=56, prompts={"max_pixels": 4 * area})
    assert (dm.min_pixels, dm.max_pixels) == (area, 4 * area)
    dm = SyntheticVQADataModule(data_dir=str(tmp_path), image_size=56, prompts=PromptConfig(template="think"))
    assert (dm.min_pixels, dm.max_pixels) == (3136, 12845056)  # an instance is taken as it is
    assert dm.hparams.prompts["min_pixels"] == 3136  # the bounds resolved: a checkpoint rebuilds the same module


def test_flat_arguments_of_a_run_saved_before_the_groups_move_into_them():
    flat = {"train_data": "t.jsonl", "batch_size": 4, "template": "think", "min_pixels": 3136, "data_dir": "d"}
    grouped = grouped_data_arguments("datamodules.vqa.SyntheticVQADataModule", flat)
    assert grouped == {
        "train_data": "t.jsonl",
        "data_dir": "d",
        "prompts": {"template": "think", "min_pixels": 3136},
        "loader": {"batch_size": 4},
    }
    sft = grouped_data_arguments("datamodules.sft.SFTDataModule", {"max_length": 512, "batch_size": 2, "seed": 1})
    assert sft == {"examples": {"max_length": 512}, "loader": {"batch_size": 2, "seed": 1}}
    already = {"loader": {"batch_size": 8}, "prompts": {"template": "caption"}}
    assert grouped_data_arguments("datamodules.vqa.VQADataModule", already) == already  # new runs: unchanged
