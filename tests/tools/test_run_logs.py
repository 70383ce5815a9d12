"""Reading a run back (``tools.run_logs``) from folders written by the real Lightning loggers and the project's own
sample and record writers (``tests/runs.py``): the same scalars from a CSV and a TensorBoard run, a resumed
TensorBoard run read once per step with the resumed values, and the listing shown when no run is named."""

import os
import re
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from tests.runs import expected_scalars, write_question_records, write_run, write_samples
from tools.lightning_cli import keep_metrics_before, restart_tensorboard_at
from tools.run_logs import (
    NoRunChosen,
    choose_run,
    curve_panels,
    find_runs,
    read_question_records,
    read_samples,
    read_scalars,
    run_kind,
)


@pytest.mark.parametrize(("logger", "kind"), [(CSVLogger, "CSV"), (TensorBoardLogger, "TensorBoard")])
def test_a_run_reads_every_logged_value_whichever_the_logger(tmp_path, logger, kind):
    run = write_run(logger(tmp_path, name="logs"))
    assert run == tmp_path / "logs" / "version_0" and run_kind(run) == kind
    scalars = read_scalars(run)
    assert scalars == expected_scalars()  # the validation row at step 1 sits in its own keys
    assert scalars["train/loss"] == [(0, 0.5), (1, 0.375), (2, 0.25)]
    assert scalars["val/accuracy"] == [(1, 0.25)]


def test_a_resumed_tensorboard_run_reads_each_step_once_with_the_resumed_values(tmp_path):
    killed = TensorBoardLogger(tmp_path, name="logs")
    for step in range(4):  # the killed run logged steps 0-3 (and validated at steps 1 and 3); its checkpoint: step 2
        killed.log_metrics({"train/loss": float(step), "reward/total": step / 4}, step=step)
        if step % 2:
            killed.log_metrics({"val/accuracy": step / 8}, step=step)
    killed.finalize("failed")
    resumed = TensorBoardLogger(tmp_path, name="logs", version=0)  # pinned to the killed run's folder, as on resume
    restart_tensorboard_at(resumed, 2)
    write_run(resumed, [(step, {"train/loss": 10.0 + step, "reward/total": 0.5}) for step in (2, 3, 4)])
    run = tmp_path / "logs" / "version_0"
    assert len(list(run.glob("events.out.tfevents.*"))) == 2

    scalars = read_scalars(run)
    assert scalars["train/loss"] == [(0, 0.0), (1, 1.0), (2, 12.0), (3, 13.0), (4, 14.0)]
    assert scalars["reward/total"] == [(0, 0.0), (1, 0.25), (2, 0.5), (3, 0.5), (4, 0.5)]
    assert scalars["val/accuracy"] == [(1, 0.125)]  # step 3's validation was the killed run's, after its checkpoint


def test_without_the_session_start_the_repeated_steps_read_twice(tmp_path):
    """The control: what drops the killed run's later steps is the ``SessionLog.START`` the resume writes."""
    write_run(TensorBoardLogger(tmp_path, name="logs"), [(step, {"train/loss": float(step)}) for step in range(4)])
    write_run(TensorBoardLogger(tmp_path, name="logs", version=0), [(3, {"train/loss": 13.0})])
    assert read_scalars(tmp_path / "logs" / "version_0")["train/loss"] == [
        (0, 0.0),
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (3, 13.0),
    ]


def test_a_resumed_csv_run_reads_each_step_once_with_the_resumed_values(tmp_path):
    write_run(CSVLogger(tmp_path, name="logs"), [(step, {"train/loss": float(step)}) for step in range(4)], "failed")
    resumed = CSVLogger(tmp_path, name="logs", version=0)
    keep_metrics_before(resumed, 2)  # what vlrl fit --ckpt_path=last does to metrics.csv
    run = write_run(resumed, [(step, {"train/loss": 10.0 + step}) for step in (2, 3)])
    assert read_scalars(run)["train/loss"] == [(0, 0.0), (1, 1.0), (2, 12.0), (3, 13.0)]


def test_a_long_tensorboard_run_is_read_whole(tmp_path):
    """TensorBoard's reader keeps a random 10,000 scalars per tag unless told otherwise."""
    run = write_run(TensorBoardLogger(tmp_path, name="logs"), [(step, {"train/loss": 0.5}) for step in range(10_050)])
    assert [step for step, _ in read_scalars(run)["train/loss"]] == list(range(10_050))


def _runs(root: Path) -> dict[str, Path]:
    """Four runs of each kind and stage, and one folder that is not a run, with modification times in that order."""
    runs = {
        "demo/logs/version_0": write_run(CSVLogger(root / "demo", name="logs")),
        "visionary_r1/logs/version_0": write_run(TensorBoardLogger(root / "visionary_r1", name="logs")),
        "eval/mathvista/logs/version_0": write_run(
            CSVLogger(root / "eval" / "mathvista", name="logs"), [(0, {"test/accuracy": 0.5})]
        ),
        "eval/val/logs/version_0": write_run(TensorBoardLogger(root / "eval" / "val", name="logs"), []),
    }
    write_question_records(runs["eval/val/logs/version_0"], "val", ["<answer> B </answer>", "A"], [1.0, 0.0])
    (root / "demo_grpo").mkdir()
    (root / "demo_grpo" / "config.yaml").write_text("seed_everything: 0\n")
    for minute, run in enumerate(runs.values()):
        for path in run.iterdir():
            os.utime(path, (1_700_000_000 + 60 * minute,) * 2)
    return runs


def test_find_runs_lists_each_run_with_its_kind_stage_and_last_step(tmp_path):
    runs = _runs(tmp_path)
    listed = [(r.path, r.kind, r.stage, r.last_step, r.modified) for r in find_runs(tmp_path)]
    assert listed == [  # newest first
        (runs["eval/val/logs/version_0"], "TensorBoard", "validate", None, 1_700_000_180),  # by its records only
        (runs["eval/mathvista/logs/version_0"], "CSV", "test", 0, 1_700_000_120),
        (runs["visionary_r1/logs/version_0"], "TensorBoard", "fit", 2, 1_700_000_060),
        (runs["demo/logs/version_0"], "CSV", "fit", 2, 1_700_000_000),
    ]
    assert find_runs(tmp_path / "missing") == []


def test_with_no_run_named_the_runs_are_listed_and_none_is_picked(tmp_path):
    runs = _runs(tmp_path)
    for run in (None, ""):
        with pytest.raises(NoRunChosen) as error:
            choose_run(run, tmp_path)
        message = str(error.value)
        assert f"Set RUN (or VLRL_RUN) to one of the run folders under {tmp_path}:" in message
        lines = message.splitlines()
        assert re.split(r"\s{2,}", lines[-4].strip())[:4] == ["eval/val/logs/version_0", "TensorBoard", "validate", "-"]
        assert re.split(r"\s{2,}", lines[-1].strip())[:4] == ["demo/logs/version_0", "CSV", "fit", "2"]
        assert lines[-5].split() == ["run", "kind", "stage", "last", "step", "modified"]
        assert "demo_grpo" not in message  # a folder without logs is not a run
    for name in ("demo/logs/version_0", f"{tmp_path.name}/demo/logs/version_0", runs["demo/logs/version_0"]):
        assert choose_run(name, tmp_path) == runs["demo/logs/version_0"]  # under runs/, from its parent, absolute


def test_a_folder_that_is_not_a_run_lists_the_runs_inside_it(tmp_path):
    _runs(tmp_path)
    with pytest.raises(NoRunChosen, match="not a run folder") as error:
        choose_run("eval", tmp_path)
    assert "eval/mathvista/logs/version_0" in str(error.value) and "demo/logs" not in str(error.value)
    with pytest.raises(NoRunChosen, match="no such folder"):
        choose_run("nowhere", tmp_path)
    with pytest.raises(NoRunChosen, match="no run folders .* train one first"):
        choose_run(None, tmp_path / "empty")


def test_samples_and_question_records_read_back(tmp_path):
    run = write_run(CSVLogger(tmp_path, name="logs"))
    write_samples(run, 0, ["<answer> red </answer>", "blue"], {"accuracy": [1.0, 0.0], "format": [1.0, 0.5]})
    write_samples(run, 2, ["red", "red"], {"accuracy": [1.0, 1.0], "format": [0.0, 0.0]})
    with (run / "samples.jsonl").open("a") as f:
        f.write('{"step": 3, "id": "q')  # a record still being written
    samples = read_samples(run)
    assert [(s["step"], s["completion"], s["rewards"]) for s in samples] == [
        (0, "<answer> red </answer>", {"accuracy": 1.0, "format": 1.0}),
        (0, "blue", {"accuracy": 0.0, "format": 0.5}),
        (2, "red", {"accuracy": 1.0, "format": 0.0}),
        (2, "red", {"accuracy": 1.0, "format": 0.0}),
    ]
    assert samples[0]["images"] == ["images/0.png"] and samples[0]["solution"] == "<answer> red </answer>"
    assert read_question_records(run) == {}
    write_question_records(run, "test", ["<answer> B </answer>", "A"], [1.0, 0.0])
    records = read_question_records(run)["test"]
    assert [(r["id"], r["answer"], r["score"]) for r in records] == [("q0", "B", 1.0), ("q1", None, 0.0)]
    assert read_samples(tmp_path) == []


def test_curve_panels_group_reward_loss_kl_accuracy_and_length():
    keys = [*expected_scalars(), "test/accuracy/geometry", "test/benchmark_accuracy", "rollout/completion_length_mean"]
    assert curve_panels(keys) == {
        "reward": ["reward/format", "reward/total"],  # not the std
        "loss": ["train/loss"],
        "KL": ["train/kl"],
        "accuracy": ["test/benchmark_accuracy", "val/accuracy"],  # not the per-category breakdown
        "completion length": ["rollout/completion_length_mean", "val/completion_length"],
    }
