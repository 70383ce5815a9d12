"""The notebooks run top to bottom at tiny scale (their smoke sizes), and are committed without outputs."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"


def execute(name: str, env: dict[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment
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


@pytest.mark.parametrize("name", ["ablation.ipynb", "inspect_run.ipynb", "shortcut_study.ipynb"])
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_ablation_then_inspect_run(tmp_path):
    nb = execute("ablation.ipynb", {"VLRL_NB_SMALL": "1", "VLRL_NB_OUT": str(tmp_path)})
    summary = "".join(o.get("data", {}).get("text/plain", "") for o in nb.cells[-1].outputs)  # the summary dict
    for method in ("vanilla GRPO", "Visionary-R1", "hard format-result"):
        assert method in summary
    assert (tmp_path / "ablation.png").stat().st_size > 0
    run = next((tmp_path / "Visionary-R1" / "seed0").rglob("metrics.csv")).parent
    nb = execute("inspect_run.ipynb", {"VLRL_RUN": str(run)})
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "metric rows" in printed and "step" in printed


@pytest.mark.slow
def test_shortcut_study_smoke(tmp_path):
    nb = execute("shortcut_study.ipynb", {"VLRL_NB_SMALL": "1", "VLRL_NB_OUT": str(tmp_path)})
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "visionary_r1" in printed and "cue_reversed/accuracy" in printed
    assert (tmp_path / "report.md").exists() and (tmp_path / "curves.png").stat().st_size > 0
