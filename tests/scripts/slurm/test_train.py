"""scripts/slurm/train.sbatch as SLURM would run it, up to ``srun``: no cluster here, so ``srun`` is a stand-in that
runs the command it is given with ``--print_config``. The recipe, the FSDP overlay, the job's node and GPU counts and
the user's overrides must reach ``vlrl fit`` and parse."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[3]


@pytest.mark.slow
def test_the_sbatch_script_hands_the_job_to_vlrl_fit(tmp_path):
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "srun").write_text(
        '#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@" --print_config\n'
    )
    (shim / "srun").chmod(0o755)
    venv = tmp_path / "project"
    (venv / ".venv" / "bin").mkdir(parents=True)
    (venv / ".venv" / "bin" / "vlrl").symlink_to(Path(sys.executable).parent / "vlrl")
    (venv / "configs").symlink_to(ROOT / "configs")
    env = dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}", SLURM_SUBMIT_DIR=str(venv), SLURM_NNODES="4")
    env["SLURM_NTASKS_PER_NODE"] = "8"
    script = ROOT / "scripts" / "slurm" / "train.sbatch"
    done = subprocess.run(
        ["bash", str(script), "--trainer.max_steps=7"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    config = yaml.safe_load(done.stdout.split("\n", 1)[1])  # after the script's own first line
    assert config["trainer"]["num_nodes"] == 4 and str(config["trainer"]["devices"]) == "8"
    assert config["trainer"]["max_steps"] == 7
    assert config["trainer"]["strategy"]["class_path"] == "lightning_modules.sharding.FSDP2Strategy"
    assert config["model"]["init_args"]["engine"]["class_path"] == "rollout.vllm.VLLMEngine"
