"""The README's resume command on a shipped recipe: the installed ``vlrl`` console script runs
``configs/visionary_r1.yaml`` (on CPU with the tiny model, its own ``ModelCheckpoint`` and TensorBoard logger, only the
checkpoint interval shortened), is killed with SIGKILL after a checkpoint, and the same command plus
``--ckpt_path=last`` finishes the run in the same log folder, logging what the uninterrupted run logged: the same
metrics at every step and the same sampled completions. Once with the HF engine, once with the vLLM engine."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.e2e.test_resume import COMPARED
from tests.test_configs import CONFIGS, cpu_overrides, with_probe_reward

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
VLRL = Path(sys.executable).parent / "vlrl"  # the installed console script, as a user runs it
RECIPE = CONFIGS / "visionary_r1.yaml"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # the probe reward lives in tests/
STEPS = 4
# the recipe's own ModelCheckpoint (no dirpath: it writes under the logger's version folder), every step here
EVERY_STEP = "--trainer.callbacks.init_args.every_n_train_steps=1"
VLLM_ON_CPU = [
    "--model.init_args.engine.init_args.enable_sleep_mode=false",
    "--model.init_args.engine.init_args.max_model_len=1024",
    "--model.init_args.engine.init_args.enforce_eager=true",
    "--model.init_args.engine.init_args.dtype=float32",  # exact comparison: no bf16 rounding in the engine
]


def command(tiny_checkpoint, synthetic_dir, root: Path, engine: str) -> list[str]:
    args = [a for a in cpu_overrides(RECIPE, tiny_checkpoint, synthetic_dir, root) if a != "--trainer.logger=false"]
    if engine == "vllm":
        args = [a for a in args if "engine=" not in a] + VLLM_ON_CPU
    args += [
        *with_probe_reward(RECIPE),
        EVERY_STEP,
        f"--trainer.max_steps={STEPS}",
        "--trainer.max_epochs=-1",
        "--data.init_args.loader.batch_size=2",  # 2 steps an epoch from the 4-row fixture: the resume crosses an epoch
        "--model.init_args.optim.lr=1e-3",
        "--model.init_args.rollout.log_samples_every_n_steps=1",
        "--model.init_args.rollout.num_logged_samples=4",
    ]
    return [str(VLRL), "fit", "-c", str(RECIPE), *args]


def logged(root: Path) -> tuple[dict[int, dict], list[str]]:
    """Per-step metrics as TensorBoard reads the recipe's event files (those of the killed run and of the resumed
    one, in the same folder), and the sample lines."""
    versions = sorted((root / "logs").iterdir())
    assert [v.name for v in versions] == ["version_0"], versions  # one run, one folder
    events = EventAccumulator(str(versions[0]))
    events.Reload()
    rows: dict[int, dict] = {}
    for key in COMPARED:
        steps = [e.step for e in events.Scalars(key)]
        assert len(steps) == len(set(steps)), (key, steps)  # no step logged twice
        for e in events.Scalars(key):
            rows.setdefault(e.step, {})[key] = e.value
    return rows, (versions[0] / "samples.jsonl").read_text().splitlines()


@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=[pytest.mark.slow, pytest.mark.vllm])])
def test_recipe_killed_and_resumed_with_ckpt_path_last(engine, tiny_checkpoint, synthetic_dir, tmp_path):
    if engine == "vllm":
        pytest.importorskip("vllm")
    full_root, killed = tmp_path / "full", tmp_path / "killed"
    full = subprocess.Popen(
        command(tiny_checkpoint, synthetic_dir, full_root, engine),
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc = subprocess.Popen(
        command(tiny_checkpoint, synthetic_dir, killed, engine),
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoints = killed / "logs" / "version_0" / "checkpoints"
    deadline = time.monotonic() + 900
    while not list(checkpoints.glob("*step=2.ckpt")):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the run never reached step 2"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert full.wait(timeout=900) == 0, full.stderr.read()[-3000:]
    reference, reference_samples = logged(full_root)
    assert sorted(reference) == list(range(STEPS))

    resumed = subprocess.run(
        [*command(tiny_checkpoint, synthetic_dir, killed, engine), "--ckpt_path=last"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout + resumed.stderr
    steps, samples = logged(killed)
    assert sorted(steps) == list(range(STEPS))  # the killed run's steps, then the resumed ones, in one file
    for step in steps:
        for key in COMPARED:
            assert float(steps[step][key]) == pytest.approx(float(reference[step][key]), abs=1e-6), (step, key)
    assert samples == reference_samples  # same prompts, completions and rewards, none repeated or skipped
    assert [json.loads(s)["step"] for s in samples] == sorted(json.loads(s)["step"] for s in samples)


def test_ckpt_path_last_without_a_checkpoint_is_an_error(tiny_checkpoint, synthetic_dir, tmp_path):
    """No checkpoint yet: a clear error, not a silent fresh start, and no version folder left behind."""
    run = subprocess.run(
        [*command(tiny_checkpoint, synthetic_dir, tmp_path, "hf"), "--ckpt_path=last"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr  # the user's mistake: one line
    assert "no last checkpoint yet" in run.stderr and "Drop --ckpt_path=last" in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "logs").exists()
