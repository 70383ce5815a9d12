"""Export a trained policy as a ``save_pretrained`` folder that transformers and vLLM load.

``python -m lightning_modules.export CKPT OUT_DIR [--config CONFIG.yaml] [--keep-lora]``: rebuilds the module from
the run's saved config, loads the checkpoint's weights and writes model + processor. LoRA adapters are merged into
the weights by default; ``--keep-lora`` writes the adapter alone (peft format) instead.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn


def export_policy(policy: nn.Module, source: str, out_dir: str | Path, merge_lora: bool = True) -> Path:
    """Write ``policy`` (LoRA merged unless ``merge_lora=False``) and the processor of ``source`` to ``out_dir``."""
    from transformers import AutoProcessor

    from lightning_modules.policy import is_peft

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if is_peft(policy) and merge_lora:
        import copy

        copy.deepcopy(policy).merge_and_unload().save_pretrained(out)
    else:
        policy.save_pretrained(out)
    AutoProcessor.from_pretrained(source).save_pretrained(out)
    return out


def main() -> None:
    import argparse

    import torch

    parser = argparse.ArgumentParser(description="Export a vlrl checkpoint to a save_pretrained folder.")
    parser.add_argument("checkpoint")
    parser.add_argument("out_dir")
    parser.add_argument("--config", help="the run's config.yaml (default: the one beside the logs)")
    parser.add_argument("--keep-lora", action="store_true", help="write the LoRA adapter instead of merging it")
    args = parser.parse_args()
    import tempfile

    import yaml

    from vlrl_cli import main as cli

    config = yaml.safe_load(Path(args.config or _find_config(Path(args.checkpoint))).read_text())
    # saved run configs carry fit-level keys (ckpt_path, weights_only); rebuilding the module needs only these
    config = {k: v for k, v in config.items() if k in ("seed_everything", "trainer", "model", "data")}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(config, f)
        f.flush()
        module = cli(["-c", f.name], run=False).model
    module.configure_model()
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["state_dict"]  # no pickle code
    module.load_state_dict(state)
    out = export_policy(module.policy, module.hparams.model_name_or_path, args.out_dir, merge_lora=not args.keep_lora)
    print(f"exported {args.checkpoint} to {out}")


def _find_config(checkpoint: Path) -> str:
    for parent in checkpoint.parents:
        found = sorted(parent.glob("config.yaml"))
        if found:
            return str(found[0])
    raise FileNotFoundError(f"no config.yaml above {checkpoint}; pass --config")


if __name__ == "__main__":
    main()
