"""``vlrl fit|validate|test|predict``: LightningCLI (``main``), which the ``vlrl`` command (``vlrl_cli``) runs for
those four subcommands, and which the demo, the benchmarks and the experiments call in-process.

Modules and datamodules are chosen by ``class_path`` in YAML (``configs/``). OmegaConf interpolation
(``${...}``) works within and across config files and on the command line.

Checkpoints are written crash-safe (``tools.checkpoint_io.AtomicCheckpointIO``) unless the config names
another checkpoint IO plugin, and committed only once the logs of the steps they cover are on disk
(``CommitAfterLogs``), so a run killed at any moment resumes with no step's metrics missing.

Resume: ``vlrl fit <the same arguments> --ckpt_path=last`` continues the newest ``last*.ckpt`` of the run, and
continues it in the same log folder. Lightning alone looks for ``last.ckpt`` only in the new run's own log folder
(a fresh ``version_N``), so with the shipped recipes (whose ``ModelCheckpoint`` writes under the logger's folder) it
found nothing and silently trained from step 0. Here ``last`` is resolved before the run starts:

- the candidates are ``<logger root>/*/checkpoints/last*.ckpt`` (every version of the run: ``save_dir/name``),
  ``last*.ckpt`` in a ``ModelCheckpoint``'s own ``dirpath`` when the config sets one, and
  ``<default_root_dir>/checkpoints`` without a logger; the newest file wins;
- the logger's version is pinned to the folder the checkpoint lies in (with a custom ``dirpath``: the newest
  existing version folder), so metrics and ``samples.jsonl`` continue in one place; rows the killed run logged after
  that checkpoint are dropped from ``metrics.csv`` (and from ``samples.jsonl`` by the rollout callback), since the
  resumed run logs those steps again;
- no checkpoint at all is an error naming the folders searched, not a fresh start (drop ``--ckpt_path=last`` to
  start a new run).

An explicit checkpoint path inside the run's log folders also continues in its own version folder. A run that fails
before its first optimizer step removes the version folder it created when that holds nothing but the saved config
and hyperparameters, so failed starts do not leave ``version_N`` folders behind.

Logs: for step-bounded runs the progress bar counts optimizer steps against ``max_steps`` (``StepProgressBar``,
installed when the config names no progress bar); Lightning's manual-optimization checkpoint warning is replaced by
one line saying why it does not apply (see ``_explain_manual_optimization_checkpoints``).
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import set_parsing_settings
from lightning import Callback, LightningDataModule, LightningModule
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_only

from datamodules.errors import MissingPathError
from tools.checkpoint_io import AtomicCheckpointIO, CommitAfterLogs
from tools.plan import check_fit
from tools.quiet import quiet_third_party

MANUAL_OPTIMIZATION_WARNING = "Using ModelCheckpoint with manual optimization"

# what a version folder holds before the first step; a failed start that left only these is removed
START_FILES = ("config.yaml", "hparams.yaml")


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, except that a run bounded by ``max_steps`` shows one bar of optimizer steps against
    ``max_steps`` across epochs (Lightning's default bar shows batches of the current epoch, and ``Epoch 0/-2`` when
    ``max_epochs`` is unset). Runs bounded by epochs keep Lightning's per-epoch bar."""

    @staticmethod
    def _by_steps(trainer) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if self._by_steps(trainer):
            self.train_progress_bar.reset(total=trainer.max_steps)
            self.train_progress_bar.n = trainer.global_step  # a resumed run starts where it left off
            self.train_progress_bar.set_description("Step")
            self.train_progress_bar.refresh()

    def on_train_epoch_start(self, trainer, *args: Any) -> None:
        if not self._by_steps(trainer):
            super().on_train_epoch_start(trainer, *args)
        else:
            self.train_progress_bar.set_description(f"Step (epoch {trainer.current_epoch})")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self._by_steps(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._by_steps(trainer):
            return super().on_train_epoch_end(trainer, pl_module)
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


def _versioned_loggers(trainer) -> list:
    """Loggers that keep runs in ``<root>/<version>`` folders (CSV, TensorBoard)."""
    return [lg for lg in trainer.loggers if hasattr(lg, "_version") and hasattr(lg, "root_dir")]


def _version_of(folder: str) -> int | str:
    number = folder.removeprefix("version_")
    return int(number) if folder.startswith("version_") and number.isdigit() else folder


def find_last_checkpoint(trainer) -> tuple[Path | None, list[Path]]:
    """The newest ``last*.ckpt`` of the run configured on ``trainer``, and the folders searched."""
    places: list[tuple[Path, str]] = []
    for lg in _versioned_loggers(trainer):
        places.append((Path(lg.root_dir), "*/checkpoints/last*.ckpt"))
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            places.append((Path(callback.dirpath), f"{callback.CHECKPOINT_NAME_LAST}*.ckpt"))
    if not trainer.loggers:
        places.append((Path(trainer.default_root_dir) / "checkpoints", "last*.ckpt"))
    found = [p for folder, pattern in places for p in folder.glob(pattern) if p.is_file()]
    return (max(found, key=lambda p: p.stat().st_mtime) if found else None), [folder for folder, _ in places]


def pin_logger_version(trainer, checkpoint: Path, newest_if_outside: bool) -> None:
    """Make the loggers write into the version folder ``checkpoint`` belongs to (``<root>/<version>/checkpoints``).
    A checkpoint outside the logger's root (a custom ``dirpath``) pins the newest existing version folder when
    ``newest_if_outside``, and nothing otherwise."""
    for lg in _versioned_loggers(trainer):
        root = Path(lg.root_dir).resolve()
        try:
            parts = checkpoint.resolve().relative_to(root).parts
        except ValueError:
            parts = ()
        if len(parts) == 3 and parts[1] == "checkpoints":
            lg._version = _version_of(parts[0])
        elif newest_if_outside and root.is_dir():
            versions = [_version_of(d.name) for d in root.iterdir() if d.is_dir()]
            numbered = [v for v in versions if isinstance(v, int)]
            if numbered:
                lg._version = max(numbered)


def checkpoint_step(path: Path) -> int:
    try:  # memory-mapped: only the step is read, not the model
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    return int(checkpoint["global_step"])


def keep_metrics_before(logger, step: int) -> None:
    """Keep the CSV logger's rows of steps before ``step`` and continue that file. Lightning's CSV writer deletes an
    existing ``metrics.csv`` when it opens a version folder; here the earlier rows are written back and the writer
    appends after them. A TensorBoard run gets a session-start event at ``step`` in its new event file, so TensorBoard
    drops what the killed run logged from ``step`` on (``restart_tensorboard_at``)."""
    if isinstance(logger, TensorBoardLogger):
        restart_tensorboard_at(logger, step)
    if not isinstance(logger, CSVLogger):
        return
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = [r for r in reader if r.get("step") in (None, "") or int(float(r["step"])) < step]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Experiment logs directory")
        writer = logger.experiment  # opens the folder (and removes metrics.csv)
    writer.metrics_keys = fields
    with path.open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=fields)
        out.writeheader()
        out.writerows(rows)


def restart_tensorboard_at(logger: TensorBoardLogger, step: int) -> None:
    """Write ``SessionLog.START`` at ``step`` to the resumed run's event file. TensorBoard's reader then discards the
    events of earlier files at ``step`` and after (what the killed run logged after its checkpoint, which the resumed
    run logs again), as it does for a restarted TensorFlow job; event files are append-only, so this is the way."""
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog

    start = Event(step=step, wall_time=time.time(), session_log=SessionLog(status=SessionLog.START))
    logger.experiment._get_file_writer().add_event(start)
    logger.experiment.flush()


def remove_if_unused(folder: Path) -> bool:
    """Delete a version folder that holds only what a run writes before its first step."""
    if not folder.is_dir():
        return False
    files = [p for p in folder.rglob("*") if p.is_file()]
    if any(p.name not in START_FILES and not p.name.startswith("events.out.tfevents") for p in files):
        return False
    shutil.rmtree(folder)
    return True


def _explain_manual_optimization_checkpoints(trainer, model) -> None:
    """Lightning warns (15 lines) at every step-triggered checkpoint of a manually optimized module that "no
    pre-optimization state was saved". GRPO steps its optimizer itself, and its checkpoints are meant to hold the
    weights after the step together with the advanced step count: exactly the state a resume continues from (the
    resume tests compare it with the uninterrupted run). The warning is hidden and this is said once instead."""
    steps_triggered = any(
        isinstance(c, ModelCheckpoint) and c._every_n_train_steps > 0 for c in trainer.checkpoint_callbacks
    )
    if getattr(model, "automatic_optimization", True) or not steps_triggered:
        return
    warnings.filterwarnings("ignore", message=MANUAL_OPTIMIZATION_WARNING)
    rank_zero_info(
        "Checkpoints hold the weights after each optimizer step with that step's count: the state a resume "
        "continues from (Lightning's manual-optimization checkpoint warning does not apply)."
    )


class MemoryPlanCheck(Callback):
    """``vlrl fit``'s memory check (``check_before_fit``) in each process, after the launcher started it (touching
    CUDA in the launching process would break fork-based launchers) and before ``configure_model`` loads weights."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            check_before_fit(self.cfg, trainer)


def where_it_went(trainer, model) -> list[str]:
    """The end of a fit, said once: the step reached, the checkpoint to resume from, the exported model and the
    logs (only those that exist)."""
    lines = [f"fit done at step {trainer.global_step}" + (f" of {trainer.max_steps}" if trainer.max_steps > 0 else "")]
    callback = trainer.checkpoint_callback
    checkpoint = callback and (callback.last_model_path or callback.best_model_path)
    if checkpoint:
        lines.append(f"  checkpoint: {checkpoint}  (resume: the same command with --ckpt_path=last)")
    exported = getattr(model, "exported_to", None)
    if exported:
        lines.append(f"  model:      {exported}  (transformers and vLLM load it)")
    if trainer.loggers:
        lines.append(f"  logs:       {trainer.loggers[0].log_dir}")
    return lines


def check_before_fit(cfg: dict, trainer) -> None:
    """``vlrl fit``'s memory check on GPUs (``tools.plan``), with the device's memory and the world size."""
    device = trainer.strategy.root_device
    if device.type != "cuda" or os.environ.get("VLRL_MEMORY_PLAN", "on") == "off":
        return
    try:
        check_fit(cfg, trainer.world_size, torch.cuda.get_device_properties(device).total_memory)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - a model the planner cannot read (another family, no config.json yet)
        logging.getLogger(__name__).warning("memory plan skipped: %s", e)  # must not stop a run that may well fit


class VLRLCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Values that must agree are linked, not repeated: the datamodule tokenises with the model's checkpoint.
        parser.link_arguments("model.init_args.policy.model_name_or_path", "data.init_args.model_name_or_path")

    def instantiate_trainer(self, **kwargs):
        # the callbacks the config names, listed before Lightning appends its defaults to that same list
        config = self.config_init.get(self.subcommand, self.config_init) if self.subcommand else self.config_init
        named = (config.get("trainer") or {}).get("callbacks") or []
        named_ids = {id(c) for c in (named if isinstance(named, list) else [named])}
        trainer = super().instantiate_trainer(**kwargs)
        if self.subcommand == "fit":
            trainer.callbacks.append(MemoryPlanCheck(self.config[self.subcommand].as_dict()))
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default: not crash-safe locally
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO):  # a checkpoint waits for its steps' logs
            trainer.callbacks.append(CommitAfterLogs())
        # Lightning's default progress bar (not one the config names) becomes StepProgressBar
        for i, callback in enumerate(trainer.callbacks):
            if isinstance(callback, ProgressBar) and id(callback) not in named_ids:
                trainer.callbacks[i] = StepProgressBar()
        return trainer

    def _resolve_resume(self) -> None:
        """``--ckpt_path=last`` to the run's newest last checkpoint, and the loggers pinned to its folder."""
        config = self.config_init[self.subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path is None or "://" in str(ckpt_path) or ckpt_path in ("best", "hpc"):
            return
        if ckpt_path == "last":
            found, searched = find_last_checkpoint(self.trainer)
            if found is None:
                raise MissingPathError(
                    "--ckpt_path=last: this run has no last checkpoint yet (searched "
                    + ", ".join(str(p) for p in searched)
                    + "). Drop --ckpt_path=last to start a new run, or pass a checkpoint file: --ckpt_path=PATH."
                )
            config["ckpt_path"] = str(found)
            rank_zero_info(f"Resuming from {found}")
        checkpoint = Path(config["ckpt_path"])
        pin_logger_version(self.trainer, checkpoint, newest_if_outside=ckpt_path == "last")
        if rank_zero_only.rank == 0:
            step = checkpoint_step(checkpoint)
            for lg in _versioned_loggers(self.trainer):
                keep_metrics_before(lg, step)

    def _check_checkpoint_path(self) -> None:
        """A ``--ckpt_path`` file that is not there is named before anything runs (one line, exit 2)."""
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        if ckpt_path in (None, "last", "best", "hpc") or "://" in str(ckpt_path) or Path(ckpt_path).is_file():
            return
        raise MissingPathError(f"--ckpt_path: checkpoint not found: {ckpt_path}")

    def _run_subcommand(self, subcommand: str) -> None:
        self._check_checkpoint_path()
        if subcommand != "fit":
            return super()._run_subcommand(subcommand)
        self._resolve_resume()
        _explain_manual_optimization_checkpoints(self.trainer, self.model)
        new_folders = [Path(lg.log_dir) for lg in _versioned_loggers(self.trainer) if not Path(lg.log_dir).exists()]
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            if self.trainer.global_step == 0 and rank_zero_only.rank == 0:
                for folder in new_folders:
                    if remove_if_unused(folder):
                        logging.getLogger(__name__).info("removed %s: the run stopped before its first step", folder)
            raise
        for line in where_it_went(self.trainer, self.model):
            rank_zero_info(line)


DEFAULT_CLASSES = {"model": "lightning_modules.grpo.GRPOModule", "data": "datamodules.vqa.VQADataModule"}


def expand_nested_help(args: list[str]) -> list[str]:
    """``--model.rollout.help`` as users type it. jsonargparse prints an argument group's help only once the class is
    known (``--model.help CLASS --model.rollout.help``); here the class is the one the ``-c`` configs name, else
    ``DEFAULT_CLASSES``'s, and ``--model.help CLASS`` is put in front. Other arguments pass unchanged. Reads files."""
    nested = [
        i
        for i, a in enumerate(args)
        if a.startswith(("--model.", "--data."))
        and a.endswith(".help")
        and a.count(".") >= 2
        and (i + 1 == len(args) or args[i + 1].startswith("-"))  # a group's help; ``--model.engine.help CLASS`` is not
    ]
    if not nested:
        return args
    key = args[nested[0]][2:].split(".")[0]
    if any(a == f"--{key}" or a.startswith((f"--{key}=", f"--{key}.help", f"--{key}.class_path")) for a in args):
        return args  # the class is named already
    chosen = DEFAULT_CLASSES[key]
    for flag, value in zip(args, args[1:]):
        if flag in ("-c", "--config") and Path(value).is_file():
            import yaml

            section = (yaml.safe_load(Path(value).read_text()) or {}).get(key) or {}
            chosen = section.get("class_path", chosen) if isinstance(section, dict) else chosen
    return [*args[: nested[0]], f"--{key}.help", chosen, *args[nested[0] :]]


def main(args: list[str] | None = None, run: bool = True) -> VLRLCLI:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_third_party()  # VLRL_VERBOSE=1: everything
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    # the vlrl command passes its own arguments as ``args``; LightningCLI's warning about both is not the user's
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    if args is not None:
        args = expand_nested_help(list(args))
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
