"""``vlrl plan -c RECIPE [-c OVERLAY ...] [--gpus N] [--gpu-memory-gib M] [--key=value ...]``: the memory plan of a
run (``tools.plan``) from the same arguments as ``vlrl fit``, parsed as ``vlrl fit`` parses them. Prints memory per
GPU by phase; exit 0 when it fits, 1 when it does not (naming the overlays and GPU counts that fit), 2 when the
configuration cannot be planned (a model whose shapes are unknown, named)."""

from __future__ import annotations

import argparse
import sys
import warnings

from tools.lightning_cli import VLRLCLI
from tools.memory import GIB
from tools.plan import H100_GIB, PlanError, _args, check_fit, model_shapes, plan


def parse_fit_config(fit_args: list[str]) -> dict:
    """``vlrl fit``'s configuration for these arguments (config files and overrides), parsed as ``vlrl fit`` parses
    them, nothing instantiated."""
    from jsonargparse import set_parsing_settings
    from lightning import LightningDataModule, LightningModule

    class ParseOnly(VLRLCLI):
        def instantiate_classes(self) -> None:
            pass

    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    with warnings.catch_warnings():  # LightningCLI warns when given args while sys.argv holds vlrl plan's own
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = ParseOnly(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_kwargs={"parser_mode": "omegaconf+"},
            args=fit_args,
            run=False,
        )
    return cli.config.as_dict()


def configured_gpus(cfg: dict) -> int:
    """``trainer.devices x trainer.num_nodes`` when the configuration gives a count (``auto``: 1)."""
    trainer = cfg.get("trainer") or {}
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes") or 1
    if isinstance(devices, (list, tuple)):
        return len(devices) * nodes
    return int(devices) * nodes if str(devices).isdigit() else nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vlrl plan",
        description=__doc__.split("\n\n")[0],
        epilog="Any other --key=value is a vlrl fit override (e.g. --model.init_args.update.micro_batch_size=4).",
    )
    parser.add_argument("-c", "--config", action="append", required=True, help="a config file, as for vlrl fit")
    parser.add_argument(
        "--gpus", type=int, help="GPUs in the run, all nodes together (default: trainer.devices x num_nodes, or 1)"
    )
    parser.add_argument("--gpu-memory-gib", type=float, default=H100_GIB, help="per GPU (default: H100 80GB, 79.6)")
    args, overrides = parser.parse_known_args(argv)
    fit_args = [a for path in args.config for a in ("-c", path)] + overrides
    try:
        cfg = parse_fit_config(fit_args)
        args.gpus = args.gpus or configured_gpus(cfg)
        check_fit(cfg, args.gpus, int(args.gpu_memory_gib * GIB))
    except MemoryError as e:
        print(str(e))
        return 1
    except PlanError as e:
        print(f"vlrl plan: {e}", file=sys.stderr)
        return 2
    model_config, source = model_shapes(_args(cfg["model"])["policy"]["model_name_or_path"])
    print(plan(cfg, args.gpus, int(args.gpu_memory_gib * GIB), model_config, source).report())
    return 0
