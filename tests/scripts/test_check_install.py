"""The set-up's last check (scripts/check_install.py): this CPU machine's stack passes as a CPU install and fails,
with the reason, as a GPU install (torch cannot see CUDA here), which is what a GPU machine with a broken driver or a
CPU torch build looks like."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _check(target: str) -> subprocess.CompletedProcess:
    script = ROOT / "scripts" / "check_install.py"
    return subprocess.run([sys.executable, str(script), "--target", target], capture_output=True, text=True)


def test_cpu_install_passes():
    done = _check("cpu")
    assert done.returncode == 0, done.stderr
    assert "[setup] torch" in done.stdout


def test_gpu_install_without_cuda_fails_loudly():
    done = _check("gpu")
    assert done.returncode == 1
    assert "torch" in done.stderr and "cannot see CUDA" in done.stderr
