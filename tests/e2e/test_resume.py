"""Exact resume. A run resumed from a checkpoint takes the same next steps as the uninterrupted run: same batches,
same sampled completions, same rewards, same losses (data position, RNG, optimizer, scheduler and beta restored).
Checked in-process from a chosen step, and for a real ``vlrl fit`` process killed with SIGKILL mid-run and
resumed with ``--ckpt_path=last`` (a custom checkpoint ``dirpath``; tests/e2e/test_resume_recipe.py runs a shipped
recipe's own checkpoint layout through the installed command)."""

import csv
import json
import signal
from pathlib import Path

import pytest
import torch

from tests.e2e import HF_ENGINE
from tests.forked import run_vlrl_forked
from tools.lightning_cli import checkpoint_step
from vlrl_cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
DEMO = ROOT / "configs" / "demo_grpo.yaml"
REWARDS = '[{"class_path": "tests.e2e.test_grpo_cli.TextLengthReward"}]'
COMPARED = ("train/loss", "reward/total", "train/beta", "train/lr", "rollout/completion_length_mean")


def fit_args(tiny_checkpoint, data_dir, root, steps) -> list[str]:
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"every_n_train_steps": 1, "save_top_k": -1, "save_last": True, "dirpath": str(root / "ckpt")},
    }
    return [
        "fit",
        "-c",
        str(DEMO),
        HF_ENGINE,
        f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
        f"--model.init_args.rewards={REWARDS}",
        "--model.init_args.reward_weights=[1.0]",
        "--model.init_args.optim.lr=1e-3",
        "--model.init_args.update.beta_schedule=cosine",
        "--model.init_args.rollout.group_size=2",
        "--model.init_args.rollout.max_new_tokens=5",
        "--model.init_args.rollout.log_samples_every_n_steps=1",
        "--model.init_args.rollout.num_logged_samples=2",
        "--model.init_args.update.micro_batch_size=4",
        f"--data.init_args.data_dir={data_dir}",
        "--data.init_args.train_size=10",
        "--data.init_args.val_size=2",
        "--data.init_args.image_size=56",
        "--data.init_args.loader.batch_size=2",
        "--trainer.max_steps=" + str(steps),
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.callbacks=[{json.dumps(checkpoint)}]",
    ]


def logged(root: Path, version: int = 0) -> tuple[dict[int, dict], list[str]]:
    """Per-step training metrics and the sample lines of one run (one CSV logger version)."""
    log_dir = root / "logs" / f"version_{version}"
    rows = [r for r in csv.DictReader(open(log_dir / "metrics.csv")) if r.get("train/loss")]
    return {int(r["step"]): r for r in rows}, (log_dir / "samples.jsonl").read_text().splitlines()


def assert_same_steps(resumed: dict[int, dict], full: dict[int, dict]) -> None:
    for step in resumed:
        for key in COMPARED:
            assert float(resumed[step][key]) == pytest.approx(float(full[step][key]), abs=1e-6), (step, key)


def test_resume_reproduces_the_next_step(tiny_checkpoint, tmp_path):
    main(fit_args(tiny_checkpoint, tmp_path / "data", tmp_path / "full", steps=6))
    full, full_samples = logged(tmp_path / "full")
    ckpt = next((tmp_path / "full" / "ckpt").glob("*step=4.ckpt"))
    main([*fit_args(tiny_checkpoint, tmp_path / "data", tmp_path / "resumed", steps=6), f"--ckpt_path={ckpt}"])
    resumed, resumed_samples = logged(tmp_path / "resumed")
    assert sorted(resumed) == [4, 5]  # 5 batches an epoch: the last batch of epoch 0, then the first of epoch 1
    assert_same_steps(resumed, full)
    assert resumed_samples == full_samples[-len(resumed_samples) :]  # same prompts, completions and rewards


def run_killed(args: list[str], point: str, timeout: float = 600) -> None:
    """``vlrl fit`` in a process of its own (forked: ``tests.forked``) that SIGKILLs itself at ``point``
    (``tests.e2e.kills``)."""
    args = [*args, "--model.class_path=tests.e2e.kills.KillableGRPOModule"]
    proc = run_vlrl_forked(args, {"VLRL_TEST_KILL": point}, timeout, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL, (point, proc.stderr[-3000:])


def assert_whole(ckpt_dir: Path) -> None:
    assert not list(ckpt_dir.glob(".*partial*"))  # a dead writer's partial file is cleared by the next save
    for ckpt in ckpt_dir.glob("*.ckpt"):  # every checkpoint file is whole
        assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] > 0, ckpt


def test_sigkill_between_a_checkpoint_and_its_step_s_logs_loses_nothing(tiny_checkpoint, tmp_path):
    """Killed on purpose in the window where step 2's checkpoint (step=3.ckpt) is written and step 2's metrics are not
    yet logged. The checkpoint is not committed until they are, so the resume starts from step=2.ckpt and logs step 2
    again (before ``CommitAfterLogs``, step=3.ckpt was on disk and step 2's row was lost for good)."""
    steps, data = 7, tmp_path / "data"
    main(fit_args(tiny_checkpoint, data, tmp_path / "full", steps))
    full, full_samples = logged(tmp_path / "full")

    killed = tmp_path / "killed"
    run_killed(fit_args(tiny_checkpoint, data, killed, steps), "after_checkpoint:3")
    committed = sorted(int(p.stem.split("step=")[1]) for p in (killed / "ckpt").glob("*step=*.ckpt"))
    assert committed == [1, 2] and list((killed / "ckpt").glob(".*step=3.ckpt.partial-*"))
    assert checkpoint_step(killed / "ckpt" / "last.ckpt") == 2

    main([*fit_args(tiny_checkpoint, data, killed, steps), "--ckpt_path=last"])
    # continued in the killed run's log folder (a custom ModelCheckpoint dirpath: the newest version folder), which
    # now reads as one uninterrupted run
    assert [p.name for p in (killed / "logs").iterdir()] == ["version_0"]
    resumed, resumed_samples = logged(killed, version=0)
    assert sorted(resumed) == list(range(steps))
    assert_same_steps(resumed, full)
    assert resumed_samples == full_samples  # no batch repeated or skipped
    assert_whole(killed / "ckpt")


# One run killed at each of these moments in turn (``tests.e2e.kills``: point:global_step), resumed each time with the
# README's command. Steps 0-6, a checkpoint after every step, validation after every third.
CHAOS = (
    "rollout:1",
    "fit_start",  # a resumed run, its engine attached
    "backward:2",
    "checkpoint_write:3",
    "after_checkpoint:3",
    "validation:3",
    "optimizer_step:4",
    "rollout:5",
    "checkpoint_write:6",
    "backward:6",
    "train_end",
)


def _rows(root: Path) -> list[dict]:
    return list(csv.DictReader(open(root / "logs" / "version_0" / "metrics.csv")))


# the vLLM variant: its engine starts in every run (tens of seconds on CPU), so fewer moments
CHAOS_VLLM = ("rollout:1", "fit_start", "after_checkpoint:3", "validation:3", "optimizer_step:4")
VLLM_ON_CPU = [
    "--model.init_args.engine.init_args.enable_sleep_mode=false",
    "--model.init_args.engine.init_args.dtype=float32",  # exact comparison: no bf16 rounding in the engine
]


@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_killed_at_many_moments_the_run_ends_as_if_never_stopped(engine, tiny_checkpoint, tmp_path):
    """Weights, every logged metric (training and validation) and every sample equal the uninterrupted run's; no step
    is missing or logged twice; no partial file is left. The kills fall in the rollout, the backward pass, the
    optimizer step, a checkpoint write, the window before a step's logs, validation, the engine's start and the end
    (with vLLM: five of them)."""
    if engine == "vllm":
        pytest.importorskip("vllm")
    steps, data = 7, tmp_path / "data"
    validation = ["--trainer.limit_val_batches=1", "--trainer.val_check_interval=3"]

    def args(root: Path) -> list[str]:
        base = fit_args(tiny_checkpoint, data, root, steps)
        if engine == "vllm":  # the demo recipe's own engine
            base = [a for a in base if a != HF_ENGINE] + VLLM_ON_CPU
        return [*base, *validation]

    main(args(tmp_path / "full"))
    killed = tmp_path / "killed"
    for i, point in enumerate(CHAOS if engine == "hf" else CHAOS_VLLM):
        run_killed([*args(killed), *(["--ckpt_path=last"] if i else [])], point)
    main([*args(killed), "--ckpt_path=last"])

    full_rows, rows = _rows(tmp_path / "full"), _rows(killed)
    train = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert train == list(range(steps))  # each step once, in order
    val = [(r["step"], r["val/accuracy"]) for r in rows if r.get("val/accuracy")]
    assert val == [(r["step"], r["val/accuracy"]) for r in full_rows if r.get("val/accuracy")] and len(val) == 2
    assert_same_steps(logged(killed)[0], logged(tmp_path / "full")[0])
    assert logged(killed)[1] == logged(tmp_path / "full")[1]  # samples
    weights = torch.load(killed / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    expected = torch.load(tmp_path / "full" / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert weights.keys() == expected["state_dict"].keys()
    for name, value in expected["state_dict"].items():
        torch.testing.assert_close(weights[name], value, rtol=0, atol=1e-6, msg=name)
    assert [p.name for p in (killed / "logs").iterdir()] == ["version_0"]
    assert_whole(killed / "ckpt")
