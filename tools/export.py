"""Export a trained policy as a ``save_pretrained`` folder that transformers and vLLM load.

``python -m tools.export CKPT OUT_DIR [--config CONFIG.yaml] [--keep-lora]``: rebuilds the module from
the run's saved config, loads the checkpoint's weights and writes model + processor. LoRA adapters are merged into
the weights by default; ``--keep-lora`` writes the adapter alone (peft format) instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from lightning_modules.policy import load_policy
from lightning_modules.sharding import full_state_dict


def export_policy(
    policy: nn.Module, source: str, out_dir: str | Path, merge_lora: bool = True, dtype: str | None = None
) -> Path:
    """Write ``policy`` (LoRA merged unless ``merge_lora=False``) and the processor of ``source`` to ``out_dir``.

    ``dtype`` (e.g. ``bfloat16``) writes the floating-point weights in that dtype and records it in the config, as
    published checkpoints are: training keeps fp32 master weights, which would double the export's size.
    """
    from transformers import AutoProcessor

    from lightning_modules.policy import DTYPES, is_peft

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if is_peft(policy) and merge_lora:
        import copy

        policy = copy.deepcopy(policy).merge_and_unload()
    if dtype is None:
        policy.save_pretrained(out)
    else:
        if dtype not in DTYPES:
            raise ValueError(f"export dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        target = DTYPES[dtype]
        cast: dict[int, object] = {}  # one cast per storage, so tied weights (embedding = LM head) stay one tensor
        state = {}
        for key, value in policy.state_dict().items():
            if value.is_floating_point():
                if value.data_ptr() not in cast:  # on the CPU: no second full copy on the GPU
                    cast[value.data_ptr()] = value.to("cpu", target)
                value = cast[value.data_ptr()]
            state[key] = value
        policy.save_pretrained(out, state_dict=state)
        config = out / "config.json"
        if config.exists():  # the weights' dtype, read by from_pretrained(dtype="auto") and vLLM's dtype="auto"
            import json

            spec = json.loads(config.read_text())
            for part in [spec, *(v for v in spec.values() if isinstance(v, dict) and "model_type" in v)]:
                for key in ("torch_dtype", "dtype"):
                    if key in part:
                        part[key] = dtype
            config.write_text(json.dumps(spec, indent=2) + "\n")
    AutoProcessor.from_pretrained(source).save_pretrained(out)
    return out


def export_sharded(policy: nn.Module, hparams: Any, out_dir: str | Path, write: bool) -> Path | None:
    """``export_policy`` for an FSDP-sharded policy. A collective: every rank gathers the full weights (to rank 0's
    CPU), and the rank with ``write`` loads them into an unsharded CPU copy of the policy (``hparams``: the module's
    ``model_name_or_path``, ``dtype``, ``lora``, ``trust_remote_code``, ``export_dtype``) and exports that."""
    state = full_state_dict(policy)
    if not write:
        return None
    plain = load_policy(
        hparams.model_name_or_path, hparams.dtype, lora=hparams.lora, trust_remote_code=hparams.trust_remote_code
    )
    plain.load_state_dict(state)
    return export_policy(plain, hparams.model_name_or_path, out_dir, dtype=hparams.export_dtype)


def main() -> None:
    import argparse

    import torch

    parser = argparse.ArgumentParser(description="Export a vlrl checkpoint to a save_pretrained folder.")
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
    out = export_policy(
        module.policy, module.hparams.model_name_or_path, args.out_dir, merge_lora=not args.keep_lora, dtype=args.dtype
    )
    print(f"exported {args.checkpoint} to {out}")


def _find_config(checkpoint: Path) -> str:
    for parent in checkpoint.parents:
        found = sorted(parent.glob("config.yaml"))
        if found:
            return str(found[0])
    raise FileNotFoundError(f"no config.yaml above {checkpoint}; pass --config")


if __name__ == "__main__":
    main()
