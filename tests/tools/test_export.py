"""Export: fp32 master weights written as bf16 (as published checkpoints are) load back equal to a bf16 cast."""

import json

import torch

from lightning_modules.policy import load_policy
from tools.export import export_policy


def test_export_in_bfloat16_halves_the_weights_and_keeps_their_values(tiny_checkpoint, tmp_path):
    from transformers import AutoModelForImageTextToText

    policy = load_policy(str(tiny_checkpoint), dtype="float32")
    out = export_policy(policy, str(tiny_checkpoint), tmp_path / "bf16", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = AutoModelForImageTextToText.from_pretrained(out, dtype="auto")
    assert loaded.dtype == torch.bfloat16
    expected = {k: v.to(torch.bfloat16) for k, v in policy.state_dict().items()}
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, expected[name]), name
    full = export_policy(policy, str(tiny_checkpoint), tmp_path / "fp32")
    size = lambda d: sum(f.stat().st_size for f in d.glob("*.safetensors"))  # noqa: E731
    assert size(out) < 0.55 * size(full)
