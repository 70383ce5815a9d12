"""The ``vlrl`` console script: LightningCLI with ``fit``/``validate``/``test``/``predict``.

Modules and datamodules are chosen by ``class_path`` in YAML (``configs/``). OmegaConf interpolation
(``${...}``) works within and across config files and on the command line.
"""

from __future__ import annotations

import os

from lightning import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


class VLRLCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Values that must agree are linked, not repeated: the datamodule tokenises with the model's checkpoint.
        parser.link_arguments("model.init_args.model_name_or_path", "data.init_args.model_name_or_path")


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


if __name__ == "__main__":
    main()
