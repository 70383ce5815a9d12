"""Experiment tracking: a real one-step GRPO fit of the tiny demo recipe with each logger a researcher picks on the
command line, read back with that logger's own reader. TensorBoard (the GPU recipes' logger) writes event files
whose ``train/loss`` scalar ``EventAccumulator`` returns; Weights & Biases (the ``wandb`` extra), offline, writes a
run folder whose summary and history hold the logged keys. A resumed TensorBoard run reads as one run."""

import json
import struct
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.loggers import TensorBoardLogger

from tests.e2e import HF_ENGINE
from tests.test_configs import CONFIGS, RECIPES, cpu_overrides
from tools.lightning_cli import keep_metrics_before
from vlrl_cli import main

DEMO = CONFIGS / "demo_grpo.yaml"
LOGGED = (
    "train/loss",
    "reward/total",
    "rollout/completion_length_mean",
    # where the step's time and memory went (lightning_modules/phases.py)
    "time/rollout",
    "time/weight_sync",
    "time/rewards",
    "time/update",
    "time/step",
    "perf/completion_tokens_per_s",
    "memory/update_peak_gib",
)


def fit_one_step(tiny_checkpoint, tmp_path: Path, logger: str):
    return main(
        [
            "fit",
            "-c",
            str(DEMO),
            HF_ENGINE,
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
            "--model.init_args.rollout.group_size=2",
            "--model.init_args.rollout.max_new_tokens=4",
            "--model.init_args.rollout.dynamic_sampling=false",  # a random model's groups are all uninformative
            f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.train_size=4",
            "--data.init_args.val_size=2",
            "--data.init_args.loader.batch_size=2",
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger={logger}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )


def test_the_gpu_recipes_log_to_tensorboard():
    for recipe in RECIPES:
        trainer = yaml.safe_load(recipe.read_text())["trainer"]
        if trainer["accelerator"] == "gpu":
            logger = trainer.get("logger") or {}
            assert logger.get("class_path") == "lightning.pytorch.loggers.TensorBoardLogger", recipe.name
            assert logger["init_args"] == {"save_dir": "${trainer.default_root_dir}", "name": "logs"}, recipe.name


def test_a_gpu_recipe_logs_under_its_root_dir(tiny_checkpoint, synthetic_dir, tmp_path):
    recipe = CONFIGS / "visionary_r1.yaml"
    args = [a for a in cpu_overrides(recipe, tiny_checkpoint, synthetic_dir, tmp_path) if a != "--trainer.logger=false"]
    cli = main(["-c", str(recipe), *args], run=False)
    assert isinstance(cli.trainer.logger, TensorBoardLogger)
    assert cli.trainer.logger.log_dir == str(tmp_path / "logs" / "version_0")  # save_dir follows default_root_dir


@pytest.mark.slow
def test_tensorboard_logger_writes_the_logged_scalars(tiny_checkpoint, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli = fit_one_step(tiny_checkpoint, tmp_path, "TensorBoardLogger")
    log_dir = Path(cli.trainer.logger.log_dir)
    assert log_dir == tmp_path / "logs" / "version_0"  # the demo's name, kept across the class change
    assert list(log_dir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(log_dir))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert set(LOGGED) <= set(scalars), scalars
    for key in ("train/loss", "train/entropy"):
        (event,) = events.Scalars(key)  # one optimizer step, logged once
        assert event.step == 0 and event.value == pytest.approx(cli.trainer.logged_metrics[key].item()), key
    assert events.Scalars("train/entropy")[0].value > 0  # a value that is not 0 by construction
    assert (log_dir / "samples.jsonl").is_file()  # the run's own files sit beside the events


@pytest.mark.slow
def test_wandb_logger_offline_writes_a_run_with_the_logged_keys(tiny_checkpoint, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    cli = fit_one_step(tiny_checkpoint, tmp_path, "WandbLogger")
    run = cli.trainer.logger.experiment
    logged = {key: cli.trainer.logged_metrics[key].item() for key in ("train/loss", "train/entropy")}
    run_dir = Path(run.dir).parent  # <WANDB_DIR>/wandb/offline-run-<time>-<id>
    run.finish()
    wandb.teardown()  # what the end of a `vlrl fit` process does: waits until wandb's service has written the file
    assert run_dir.parent == tmp_path / "wandb" and run_dir.name.startswith("offline-run-")
    (run_file,) = run_dir.glob("run-*.wandb")  # what `wandb sync <run_dir>` uploads
    records = _wandb_records(run_file)
    history = [row for kind, row in records if kind == "history" and "train/loss" in row]
    summary = {key: value for kind, row in records if kind == "summary" for key, value in row.items()}
    assert len(history) == 1  # one optimizer step, logged once
    for row in (history[0], summary):
        assert set(LOGGED) <= set(row), sorted(row)
        assert row["trainer/global_step"] == 0  # Lightning's step key, logged with every row
        for key, value in logged.items():
            assert row[key] == pytest.approx(value), key
    assert logged["train/entropy"] > 0  # a value that is not 0 by construction


def _wandb_records(path: Path) -> list[tuple[str, dict]]:
    """The history and summary records of an offline run file, in order, as ``(kind, {key: value})``. The file is a
    LevelDB log (wandb's ``:W&B`` header, then 32 KiB blocks of chunks with a 7-byte header: crc32, length, type)
    of ``wandb_internal_pb2.Record`` messages; wandb 0.2x+ ships no Python reader for it."""
    from wandb.proto import wandb_internal_pb2

    block, data = 32 * 1024, path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    position, chunks, records = 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunks += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL, or the LAST chunk of a record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            which = record.WhichOneof("record_type")
            if which in ("history", "summary"):
                items = record.history.item if which == "history" else record.summary.update
                records.append(
                    (which, {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
                )
    return records


def test_a_resumed_tensorboard_run_replaces_the_steps_logged_after_its_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    killed = TensorBoardLogger(tmp_path, name="logs")
    for step in range(4):  # the killed run logged steps 0-3; its checkpoint holds step 2
        killed.log_metrics({"train/loss": float(step)}, step=step)
    killed.finalize("failed")
    resumed = TensorBoardLogger(tmp_path, name="logs", version=0)  # pinned to the same folder, as on resume
    keep_metrics_before(resumed, 2)
    for step in (2, 3):  # the resumed run logs steps 2 and 3 again, with other values
        resumed.log_metrics({"train/loss": 10.0 + step}, step=step)
    resumed.finalize("success")
    assert len(list((tmp_path / "logs" / "version_0").glob("events.out.tfevents.*"))) == 2
    events = EventAccumulator(str(tmp_path / "logs" / "version_0"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(0, 0.0), (1, 1.0), (2, 12.0), (3, 13.0)]
