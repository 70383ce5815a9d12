"""The notebooks run top to bottom at tiny scale (their smoke sizes), and are committed without outputs."""

import os
import re
from pathlib import Path

import nbformat
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.runs import write_run, write_samples

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"


def execute(name: str, env: dict[str, str | None]) -> nbformat.NotebookNode:
    """Run the notebook top to bottom with ``env`` set (None: unset) in the kernel's environment."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    for key, value in env.items():  # the kernel inherits the environment
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        resources = {"metadata": {"path": str(NOTEBOOKS)}}  # run from notebooks/, as a user would
        NotebookClient(nb, timeout=900, kernel_name="python3", resources=resources).execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return nb


@pytest.mark.parametrize("name", ["ablation.ipynb", "inspect_run.ipynb"])
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_ablation_arms_are_alive_differ_and_are_compared_with_intervals(tmp_path):
    """The smoke size: every arm's reward carried a signal and moved, no two arms answered every held-out row alike,
    and the comparison is drawn and read with intervals."""
    from experiments.ablation import ARMS, arm_health, health_problems

    nb = execute("ablation.ipynb", {"VLRL_NB_SMALL": "1", "VLRL_NB_OUT": str(tmp_path)})
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    problems, _ = health_problems(arm_health(tmp_path, [0], ARMS))
    assert not problems, problems
    assert "Every arm's reward carried a signal and moved" in printed
    for arm in ARMS:
        assert f"{arm} vs vanilla_grpo, held-out accuracy" in printed or arm == "vanilla_grpo"
        assert re.search(rf"{arm}\s+cue-reversed accuracy\s+[+-]\d\.\d{{3}} \[", printed), arm
    assert (tmp_path / "ablation.png").stat().st_size > 0


def test_inspect_run_opens_a_csv_run_and_a_tensorboard_run(tmp_path):
    """A demo-style CSV run and a recipe-style TensorBoard run (tests/runs.py: the loggers' own writers, no training)
    open alike; with no run named the notebook stops with the runs listed."""
    runs = {
        "CSV": write_run(CSVLogger(tmp_path / "demo_grpo", name="logs")),
        "TensorBoard": write_run(TensorBoardLogger(tmp_path / "visionary_r1", name="logs")),
    }
    checkpoint = {"global_step": 2, "state_dict": {"w": torch.zeros(3)}, "optimizer_states": [{}]}
    (runs["TensorBoard"] / "checkpoints").mkdir()
    torch.save(checkpoint, runs["TensorBoard"] / "checkpoints" / "last.ckpt")  # where the recipes keep them
    for kind, run in runs.items():
        write_samples(run, 2, [f"<caption> a red square </caption> ({kind})"], {"accuracy": [1.0]})
        nb = execute("inspect_run.ipynb", {"VLRL_RUN": str(run), "VLRL_RUNS": str(tmp_path)})
        outputs = [o for c in nb.cells for o in c.get("outputs", [])]
        printed = "".join(o.get("text", "") for o in outputs)
        assert f"{run}: {kind} run, stage fit, last step 2" in printed
        for line in (
            "reward/total: 0.75 at step 2 (3 logged)",
            "train/loss: 0.25 at step 2",
            "train/kl: 0.25 at",
            "val/accuracy: 0.25 at step 1 (1 logged)",
        ):
            assert line in printed, (kind, line)
        assert f"a red square </caption> ({kind})" in printed
        assert any("image/png" in o.get("data", {}) for o in outputs)  # the curves
        checkpoints = "last.ckpt: step 2, 1 tensors (3 values)" if kind == "TensorBoard" else "no checkpoints next to"
        assert checkpoints in printed

    with pytest.raises(CellExecutionError) as error:
        execute("inspect_run.ipynb", {"VLRL_RUN": None, "VLRL_RUNS": str(tmp_path)})
    assert error.value.ename == "NoRunChosen"
    assert f"Set RUN (or VLRL_RUN) to one of the run folders under {tmp_path}:" in error.value.evalue
    for line in (
        r"visionary_r1/logs/version_0\s+TensorBoard\s+fit\s+2\s",
        r"demo_grpo/logs/version_0\s+CSV\s+fit\s+2\s",
    ):
        assert re.search(line, error.value.evalue), line
