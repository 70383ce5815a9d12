"""Export a trained policy as a ``save_pretrained`` folder that transformers and vLLM load.

``vlrl export CKPT OUT_DIR [--config CONFIG.yaml] [--keep-lora] [--dtype bfloat16]``: rebuilds the module from
the run's saved config, loads the checkpoint's weights and writes model + processor. LoRA adapters are merged into
the weights by default; ``--keep-lora`` writes the adapter alone (peft format) instead.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import yaml

from datamodules.config import grouped_data_arguments
from datamodules.errors import MissingPathError
from lightning_modules.policy import export_policy
from tools.lightning_cli import main as lightning_cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vlrl export", description="Export a vlrl checkpoint to a save_pretrained folder."
    )
    parser.add_argument("checkpoint")
    parser.add_argument("out_dir")
    parser.add_argument("--config", help="the run's config.yaml (default: the one beside the logs)")
    parser.add_argument("--keep-lora", action="store_true", help="write the LoRA adapter instead of merging it")
    parser.add_argument(
        "--dtype",
        default=None,
        help="write the weights in this dtype (bfloat16, float16, float32); "
        "default: the training dtype (fp32 master weights in the recipes)",
    )
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        raise MissingPathError(f"checkpoint not found: {args.checkpoint}")
    if args.config and not Path(args.config).is_file():
        raise MissingPathError(f"--config: file not found: {args.config}")
    config = yaml.safe_load(Path(args.config or _find_config(Path(args.checkpoint))).read_text())
    # saved run configs carry fit-level keys (ckpt_path, weights_only); rebuilding the module needs only these
    config = {k: v for k, v in config.items() if k in ("seed_everything", "trainer", "model", "data")}
    data = config.get("data")
    if isinstance(data, dict) and isinstance(data.get("init_args"), dict):  # a run saved before the data groups
        data["init_args"] = grouped_data_arguments(data.get("class_path", ""), data["init_args"])
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(config, f)
        f.flush()
        module = lightning_cli(["-c", f.name], run=False).model
    module.configure_model()
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["state_dict"]  # no pickle code
    module.load_state_dict(state)
    out = export_policy(
        module.policy,
        module.policy_config.model_name_or_path,
        args.out_dir,
        merge_lora=not args.keep_lora,
        dtype=args.dtype,
    )
    print(f"exported {args.checkpoint} to {out}")


def _find_config(checkpoint: Path) -> str:
    for parent in checkpoint.parents:
        found = sorted(parent.glob("config.yaml"))
        if found:
            return str(found[0])
    raise MissingPathError(f"no config.yaml in the folders above {checkpoint}: pass the run's --config")


if __name__ == "__main__":
    main()
