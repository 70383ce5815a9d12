"""FSDP2 on two CPU processes (gloo): ``vlrl fit -c <recipe> -c configs/strategy/fsdp.yaml --trainer.accelerator=cpu
--trainer.devices=2``, compared with one process on the same global batch.

Both runs sample the same completions (``KeyedSamplingEngine``: HF sampling whose random stream depends only on the
prompt and the sample's index in its group, not on the rank or the batch around it), so the sharded run must give
the same losses and the same weights as the unsharded one, up to float rounding. A checkpoint written under FSDP2
resumes to the same next step on two processes and on one; an SFT run's exported folder equals its weights.
"""

import collections
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from lightning import Callback

from lightning_modules.sharding import full_state_dict
from rollout.hf import HFEngine
from tests.conftest import FAMILIES
from tests.forked import run_vlrl_forked

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
DEMO = ROOT / "configs" / "demo_grpo.yaml"
FSDP = ROOT / "configs" / "strategy" / "fsdp.yaml"
ENGINE = '--model.init_args.engine={"class_path": "tests.e2e.test_fsdp.KeyedSamplingEngine"}'
REWARDS = '[{"class_path": "tests.probes.TextChecksumReward"}]'


class KeyedSamplingEngine(HFEngine):
    """``HFEngine`` generating one row per call, each call seeded from its prompt's token ids and image pixels and
    the row's index among the identical rows of this ``generate``: the same prompt gets the same samples whichever
    rank or batch it is in."""

    def __init__(self) -> None:
        super().__init__(generation_batch_size=1)

    def generate(self, prompts, images, n, sampling):
        seen: collections.Counter = collections.Counter()
        plain = self.policy.generate

        def seeded(**inputs):
            key = zlib.crc32(inputs["input_ids"].cpu().numpy().tobytes())
            if "pixel_values" in inputs:
                key = zlib.crc32(inputs["pixel_values"].float().cpu().numpy().tobytes(), key)
            torch.manual_seed(key * 64 + seen[key])
            seen[key] += 1
            return plain(**inputs)

        self.policy.generate = seeded  # an instance attribute over the method, removed below
        try:
            return super().generate(prompts, images, n, sampling)
        finally:
            del self.policy.generate


class RecordSteps(Callback):
    """Per step: this rank's loss (``rank{r}.jsonl``) and, from rank 0, the full trainable weights (``step{N}.pt``),
    gathered from the shards (a collective: every rank calls it)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        trained = {name for name, p in pl_module.policy.named_parameters() if p.requires_grad}
        state = full_state_dict(pl_module.policy)
        if trainer.is_global_zero:
            torch.save(
                {k: v.clone() for k, v in state.items() if k in trained}, self.out_dir / f"step{trainer.global_step}.pt"
            )
        record = {"step": trainer.global_step, "loss": float(trainer.callback_metrics["train/loss"])}
        with (self.out_dir / f"rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")


def grpo_args(checkpoint, root: Path, devices: int, steps: int, resume: Path | None = None) -> list[str]:
    ckpt = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"every_n_train_steps": 1, "save_top_k": -1, "dirpath": str(root / "ckpt")},
    }
    record = {"class_path": "tests.e2e.test_fsdp.RecordSteps", "init_args": {"out_dir": str(root)}}
    args = [
        sys.executable,
        "-m",
        "vlrl_cli",
        "fit",
        "-c",
        str(DEMO),
        ENGINE,
        f"--model.init_args.policy.model_name_or_path={checkpoint}",
        f"--model.init_args.rewards={REWARDS}",
        "--model.init_args.reward_weights=[1.0]",
        "--model.init_args.optim.lr=1e-3",
        "--model.init_args.update.micro_batch_size=2",
        "--model.init_args.rollout.group_size=2",
        "--model.init_args.rollout.max_new_tokens=6",
        f"--data.init_args.data_dir={root.parent / 'data'}",
        "--data.init_args.train_size=4",
        "--data.init_args.val_size=2",
        "--data.init_args.image_size=56",
        f"--data.init_args.loader.batch_size={4 // devices}",  # the same global batch: every training row, every step
        f"--trainer.max_steps={steps}",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
        f"--trainer.devices={devices}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.callbacks=[{json.dumps(ckpt)}, {json.dumps(record)}]",
    ]
    if devices > 1:
        args[6:6] = ["-c", str(FSDP)]  # after the recipe
    if resume is not None:
        args.append(f"--ckpt_path={resume}")
    return args


def run(args: list[str], root: Path) -> None:
    """A run on two processes is a new ``vlrl`` process (Lightning starts the second rank by running its command
    again); a run on one is forked (``tests.forked``): the same run, without importing the stack again."""
    root.mkdir(parents=True, exist_ok=True)
    devices = [a.split("=", 1)[1] for a in args if a.startswith("--trainer.devices=")][-1:]  # the last one counts
    if devices == ["1"] and args[:3] == [sys.executable, "-m", "vlrl_cli"]:
        done = run_vlrl_forked(args[3:], timeout=900, cwd=ROOT)
    else:
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]


def losses(root: Path) -> dict[int, float]:
    """Per step, the loss averaged over the ranks (each rank's loss is its own rows' mean, and the ranks have as
    many rows, so their mean is the global batch's)."""
    per_step: dict[int, list[float]] = collections.defaultdict(list)
    for path in root.glob("rank*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            per_step[record["step"]].append(record["loss"])
    return {step: sum(values) / len(values) for step, values in per_step.items()}


def assert_same_weights(a: Path, b: Path, atol: float) -> None:
    left, right = torch.load(a), torch.load(b)
    assert left.keys() == right.keys() and left
    for name in left:
        torch.testing.assert_close(left[name], right[name], rtol=0, atol=atol, msg=name)


def test_fsdp2_two_processes_match_one_and_resume_on_either(tiny_checkpoint, tmp_path):
    sharded, single = tmp_path / "sharded", tmp_path / "single"
    run(grpo_args(tiny_checkpoint, sharded, devices=2, steps=3), sharded)
    run(grpo_args(tiny_checkpoint, single, devices=1, steps=3), single)
    assert sorted(losses(sharded)) == [1, 2, 3]
    for step, loss in losses(single).items():
        assert losses(sharded)[step] == pytest.approx(loss, abs=1e-5), step
    for step in (1, 2, 3):
        assert_same_weights(sharded / f"step{step}.pt", single / f"step{step}.pt", atol=1e-5)
    first, last = torch.load(sharded / "step1.pt"), torch.load(sharded / "step3.pt")
    assert any(not torch.equal(first[k], last[k]) for k in first), "the steps moved the weights"

    # the full checkpoint of step 2 (written by FSDP2, gathered to rank 0) resumes to the same step 3
    (checkpoint,) = (sharded / "ckpt").glob("*step=2.ckpt")
    for devices in (2, 1):
        resumed = tmp_path / f"resumed_on_{devices}"
        run(grpo_args(tiny_checkpoint, resumed, devices=devices, steps=3, resume=checkpoint), resumed)
        assert sorted(losses(resumed)) == [3]
        assert losses(resumed)[3] == pytest.approx(losses(sharded)[3], abs=1e-5)
        assert_same_weights(resumed / "step3.pt", sharded / "step3.pt", atol=1e-5)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "qwen2_5_vl"])  # Qwen2.5-VL: the test above
def test_fsdp2_two_processes_match_one_on_every_family(family_checkpoint, family, tmp_path):
    """Each family's decoder layers and vision blocks sharded as FSDP units (its ``_no_split_modules``): two steps
    on two processes give the one-process losses and weights."""
    checkpoint = family_checkpoint(family)
    sharded, single = tmp_path / "sharded", tmp_path / "single"
    run(grpo_args(checkpoint, sharded, devices=2, steps=2), sharded)
    run(grpo_args(checkpoint, single, devices=1, steps=2), single)
    assert sorted(losses(sharded)) == [1, 2]
    for step, loss in losses(single).items():
        assert losses(sharded)[step] == pytest.approx(loss, abs=1e-5), step
    assert_same_weights(sharded / "step2.pt", single / "step2.pt", atol=1e-5)
    first, last = torch.load(sharded / "step1.pt"), torch.load(sharded / "step2.pt")
    assert any(not torch.equal(first[k], last[k]) for k in first), "the steps moved the weights"


def test_fsdp2_sft_export_equals_the_trained_weights(tiny_checkpoint, synthetic_dir, tmp_path):
    """Two SFT steps sharded over two processes; the folder written at the end (gathered from the shards, rank 0
    writing) holds exactly the weights of the full checkpoint saved at the same step, and they moved."""
    export = tmp_path / "export"
    ckpt = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"save_last": True, "dirpath": str(tmp_path / "ckpt")},
    }
    args = [
        sys.executable,
        "-m",
        "vlrl_cli",
        "fit",
        "-c",
        str(ROOT / "configs" / "demo_sft.yaml"),
        "-c",
        str(FSDP),
        f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
        f"--model.init_args.export_dir={export}",
        f"--data.init_args.train_data={synthetic_dir / 'train_sft_caption.jsonl'}",
        "--data.init_args.val_data=null",
        "--data.init_args.loader.batch_size=2",
        "--data.init_args.examples.min_pixels=3136",
        "--data.init_args.examples.max_pixels=3136",
        "--trainer.max_steps=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.callbacks=[{json.dumps(ckpt)}]",
    ]
    run(args, tmp_path)
    from transformers import AutoModelForImageTextToText

    exported = AutoModelForImageTextToText.from_pretrained(export).state_dict()
    initial = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint).state_dict()
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    saved = {name.removeprefix("policy."): tensor for name, tensor in saved.items()}
    assert exported.keys() == saved.keys() == initial.keys()
    for name, tensor in exported.items():
        assert torch.equal(tensor, saved[name]), name
    assert any(not torch.equal(exported[name], initial[name]) for name in initial), "two steps moved the weights"


class RecordMetrics(Callback):
    """Each rank's logged values after every training step, as ``metrics{rank}.jsonl``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        with (self.out_dir / f"metrics{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps({"step": trainer.global_step, **values}) + "\n")


def test_visionary_r1_recipe_runs_sharded_in_bf16_with_dynamic_sampling_and_the_policy_judge(
    tiny_checkpoint, synthetic_dir, tmp_path
):
    """The Visionary-R1 recipe as published (bf16-mixed over fp32 weights, caption reward judged by the policy
    itself) with dynamic sampling on, sharded over two processes. The policy's generation and its judge calls are
    collectives under FSDP: ranks with different numbers of captions to judge (often none, for a random model) must
    still run the same forwards, or the run hangs."""
    from tests.test_configs import CONFIGS, cpu_overrides, with_probe_reward

    recipe = CONFIGS / "visionary_r1.yaml"
    record = {"class_path": "tests.e2e.test_fsdp.RecordMetrics", "init_args": {"out_dir": str(tmp_path)}}
    args = [
        sys.executable,
        "-m",
        "vlrl_cli",
        "fit",
        "-c",
        str(recipe),
        "-c",
        str(FSDP),
        *cpu_overrides(recipe, tiny_checkpoint, synthetic_dir, tmp_path),
        *with_probe_reward(recipe),
        "--trainer.devices=2",
        "--trainer.max_steps=2",
        "--trainer.max_epochs=2",
        "--model.init_args.rollout.dynamic_sampling=true",
        f"--trainer.callbacks+={json.dumps(record)}",
    ]
    run(args, tmp_path)
    for rank in (0, 1):
        steps = [json.loads(line) for line in (tmp_path / f"metrics{rank}.jsonl").read_text().splitlines()]
        assert [s["step"] for s in steps] == [1, 2]
        assert all(s["rollout/groups_kept"] >= 1 and "reward/caption" in s for s in steps)


def test_fsdp2_lora_trains_the_adapters_against_the_adapters_off_reference(tiny_checkpoint, tmp_path):
    """configs/lora.yaml composes with FSDP2: the adapters are sharded with their layers and trained, and the KL
    reference is the sharded policy with its adapters disabled (no second copy)."""
    root = tmp_path / "lora"
    args = grpo_args(tiny_checkpoint, root, devices=2, steps=2)
    args[6:6] = ["-c", str(ROOT / "configs" / "lora.yaml")]
    run([*args, "--model.init_args.policy.lora.r=4", "--model.init_args.policy.lora.alpha=8"], root)
    first, second = torch.load(root / "step1.pt"), torch.load(root / "step2.pt")
    assert first and all("lora_" in name for name in first)  # only the adapters train
    assert any(not torch.equal(first[name], second[name]) for name in first)


def _alive(session: int) -> list[int]:
    """Processes of a session (the run's main process and the ranks it launched)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":  # the session id; zombies are gone but for their parent
            alive.append(int(stat.parent.name))
    return alive


@pytest.mark.parametrize("rank", [0, 1])
def test_a_killed_rank_takes_the_other_down(tiny_checkpoint, tmp_path, rank):
    """SIGKILL one of the two FSDP2 processes in its second step: the other exits too, rather than waiting in a
    collective for the process group's 30-minute timeout (it exits within seconds; the 5 minutes allowed here are a
    hang guard, far from both, not a timing the test depends on). Rank 1 killed: rank 0's gloo collective fails
    at once; rank 0 (the launcher) killed: rank 1's does."""
    import os
    import time

    root = tmp_path / "run"
    root.mkdir()
    mark = tmp_path / "died"
    args = [
        *grpo_args(tiny_checkpoint, root, devices=2, steps=4),
        "--model.class_path=tests.e2e.kills.KillableGRPOModule",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLRL_TEST_KILL": "rollout:1", "VLRL_TEST_KILL_RANK": str(rank)}
    env["VLRL_TEST_KILL_MARK"] = str(mark)
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        proc.wait(timeout=600)  # the launcher: killed, or exiting after its rank died
        assert mark.is_file(), "the chosen rank never reached its second step"
        while _alive(proc.pid) and time.time() - float(mark.read_text()) < 300:
            time.sleep(0.5)
        assert not _alive(proc.pid), f"still running 5 minutes after rank {rank} died: {_alive(proc.pid)}"
    finally:
        for pid in _alive(proc.pid):
            os.kill(pid, 9)
