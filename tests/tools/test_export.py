"""Export: fp32 master weights written as bf16 (as published checkpoints are) load back equal to a bf16 cast; the
``vlrl export`` command does the same for a run's checkpoint."""

import json
from pathlib import Path

import torch
import yaml

from lightning_modules.policy import load_policy
from tools.export import export_policy
from tools.lightning_cli import main as lightning_cli
from vlrl_cli import entry

SFT_RECIPE = Path(__file__).parents[2] / "configs" / "demo_sft.yaml"


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


def test_vlrl_export_writes_a_trained_checkpoint_as_a_folder_transformers_loads(
    tiny_checkpoint, synthetic_dir, tmp_path
):
    """``vlrl export CKPT OUT`` rebuilds the module from the run's config.yaml (found above the checkpoint), loads the
    checkpoint's weights and writes them: here weights that differ from the base model's, in bfloat16."""
    from transformers import AutoModelForImageTextToText

    run = tmp_path / "logs" / "version_0"
    cli = lightning_cli(
        [
            "-c",
            str(SFT_RECIPE),
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
            f"--data.init_args.train_data={synthetic_dir / 'train_sft_think.jsonl'}",
            "--data.init_args.val_data=null",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        run=False,
    )
    module = cli.model
    module.configure_model()
    with torch.no_grad():  # a "trained" policy: every weight moved
        for parameter in module.policy.parameters():
            parameter.add_(0.25)
    (run / "checkpoints").mkdir(parents=True)
    cli.parser.save(cli.config, run / "config.yaml", skip_none=False)
    checkpoint = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "global_step": 1}, checkpoint)

    assert entry(["export", str(checkpoint), str(tmp_path / "export"), "--dtype", "bfloat16"]) == 0
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "export", dtype="auto")
    assert loaded.dtype == torch.bfloat16
    expected = {k: v.to(torch.bfloat16) for k, v in module.policy.state_dict().items()}
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert (tmp_path / "export" / "processor_config.json").exists()  # the processor beside the weights

    # a run saved before the data arguments were grouped (flat data keys: batch_size, min_pixels ...) still exports
    saved = yaml.safe_load((run / "config.yaml").read_text())
    init = saved["data"]["init_args"]
    for group in ("examples", "loader"):
        init.update(init.pop(group) or {})
    assert "batch_size" in init and "min_pixels" in init
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert entry(["export", str(checkpoint), str(tmp_path / "export_old"), "--dtype", "bfloat16"]) == 0
    old = AutoModelForImageTextToText.from_pretrained(tmp_path / "export_old", dtype="auto").state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in old.items())
