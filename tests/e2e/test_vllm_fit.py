"""``vlrl fit`` on the Visionary-R1 recipe with the vLLM engine and the policy-engine caption judge, two steps on
the tiny model, in a fresh process (vLLM runs in-process there, as in a user's run)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

from tests.test_configs import CONFIGS, cpu_overrides

ROOT = Path(__file__).parents[2]


def test_visionary_r1_two_steps_with_vllm(tiny_checkpoint, synthetic_dir, tmp_path):
    config = CONFIGS / "visionary_r1.yaml"
    args = [a for a in cpu_overrides(config, tiny_checkpoint, synthetic_dir, tmp_path) if "engine=" not in a]
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path)}}
    args += [
        "--trainer.max_steps=2", f"--trainer.logger={json.dumps(logger)}", "--model.init_args.lr=1e-3",
        "--model.init_args.engine.init_args.enable_sleep_mode=false",
        "--model.init_args.engine.init_args.max_model_len=1024",
        "--model.init_args.engine.init_args.enforce_eager=true",
        "--model.init_args.rollout.max_new_tokens=8", "--model.init_args.rollout.group_size=3",
        "--model.init_args.tis_cap=2.0",
    ]  # fmt: skip
    run = subprocess.run([sys.executable, "-c", "from vlrl_cli import main; main()", "fit", "-c", str(config), *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    rows = [r for r in csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))) if r.get("reward/total")]
    assert len(rows) == 2
    # the second step samples from weights synced after the first optimizer step: the engine must match the policy
    for row in rows:
        assert float(row["rollout/engine_logp_diff_max"]) < 1e-3, row["rollout/engine_logp_diff_max"]
    assert [float(r["rollout/weight_version"]) for r in rows] == [1.0, 2.0]
    assert all(r["reward/caption"] != "" for r in rows)  # judged by the policy's own engine
    assert float(rows[1]["train/grad_norm"]) > 0
    # truncated importance sampling is on: with the engine in sync its weights are 1 up to float error
    assert all(abs(float(r["train/tis_weight_mean"]) - 1.0) < 1e-3 for r in rows)
