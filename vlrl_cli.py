"""The ``vlrl`` console script: LightningCLI with ``fit``/``validate``/``test``/``predict``.

Modules and datamodules are chosen by ``class_path`` in YAML (``configs/``). OmegaConf interpolation
(``${...}``) works within and across config files and on the command line.

Checkpoints are written crash-safe (``lightning_modules.checkpoint_io.AtomicCheckpointIO``) unless the config names
another checkpoint IO plugin. ``--ckpt_path=last`` resumes from the newest ``last.ckpt`` of the run's
``ModelCheckpoint``.
"""

from __future__ import annotations

import os

from lightning import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


class VLRLCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Values that must agree are linked, not repeated: the datamodule tokenises with the model's checkpoint.
        parser.link_arguments("model.init_args.model_name_or_path", "data.init_args.model_name_or_path")

    def instantiate_trainer(self, **kwargs):
        from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

        from lightning_modules.checkpoint_io import AtomicCheckpointIO

        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default: not crash-safe locally
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


def main(args: list[str] | None = None, run: bool = True) -> VLRLCLI:
    from jsonargparse import set_parsing_settings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    return VLRLCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={"parser_mode": "omegaconf+"},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def entry() -> int:
    """The console script: 0 after a run that finished, non-zero otherwise (``main`` returns the CLI object, which a
    console-script wrapper would pass to ``sys.exit`` and so exit 1 after every successful run). A failure raises, and
    Python exits 1 with the traceback; a bad argument exits 2 with jsonargparse's message."""
    main()
    return 0


if __name__ == "__main__":
    raise SystemExit(entry())
