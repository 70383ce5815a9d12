"""The demo recipe with its vLLM engine under FSDP2 on two CPU processes, as the README runs it:
``vlrl fit -c configs/demo_grpo.yaml -c configs/strategy/fsdp.yaml --trainer.accelerator=cpu --trainer.devices=2``,
and the same recipe on two "nodes" of one process each (``torchrun --nnodes 2 --nproc_per_node 1`` on localhost).

Each rank must run its own engine (vLLM's external launcher, on the rank's device), generate its own prompts, load the
weights gathered from the ``DTensor`` shards (its sampling log-probs match its policy's), and the run must resume
from a checkpoint. The phase metrics (``time/*``, ``memory/*``, ``perf/*``) land in the logs.
"""

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from lightning import Callback

from tests.e2e.test_fsdp import run

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

ROOT = Path(__file__).parents[2]
DEMO = ROOT / "configs" / "demo_grpo.yaml"
FSDP = ROOT / "configs" / "strategy" / "fsdp.yaml"
SYNCED = 1e-4  # float32 engine and policy: the gap of a real sync (a stale engine is off by > 0.05 here)


class RecordRanks(Callback):
    """Per step and rank (``rank{r}.jsonl``): the rows this rank trained on, its engine's device and executor, the
    parity of its engine with its policy, and the engine's weight version."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        engine = pl_module.engine
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("rollout/")}
        record = {
            "step": trainer.global_step,
            "ids": list(batch["id"]),
            "device": str(engine.llm.llm_engine.model_executor.driver_worker.worker.device),
            "executor": type(engine.llm.llm_engine.model_executor).__name__,
            "parity": metrics.get("rollout/engine_logp_diff_max"),
            "weight_version": metrics.get("rollout/weight_version"),
            "loss": float(trainer.callback_metrics["train/loss"]),
        }
        with (self.out_dir / f"rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")


def fit_args(checkpoint, root: Path, steps: int, resume: Path | None = None) -> list[str]:
    ckpt = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"every_n_train_steps": 1, "save_top_k": -1, "dirpath": str(root / "ckpt")},
    }
    record = {"class_path": "tests.e2e.test_vllm_fsdp.RecordRanks", "init_args": {"out_dir": str(root)}}
    args = [
        "fit",
        "-c",
        str(DEMO),
        "-c",
        str(FSDP),
        f"--model.init_args.policy.model_name_or_path={checkpoint}",
        "--model.init_args.optim.lr=1e-3",
        "--model.init_args.optim.warmup_steps=0",
        "--model.init_args.rollout.group_size=2",
        "--model.init_args.rollout.max_new_tokens=6",
        "--model.init_args.rollout.top_k=0",  # the full distribution: the engine's log-probs are the policy's
        "--model.init_args.rollout.temperature=1.0",
        "--model.init_args.rollout.dynamic_sampling=false",
        "--model.init_args.update.parity_check_every_n_steps=1",
        f"--data.init_args.data_dir={root.parent / 'data'}",
        "--data.init_args.train_size=8",
        "--data.init_args.val_size=2",
        "--data.init_args.loader.batch_size=2",
        f"--trainer.max_steps={steps}",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.callbacks=[{json.dumps(ckpt)}, {json.dumps(record)}]",
    ]
    if resume is not None:
        args.append(f"--ckpt_path={resume}")
    return args


def records(root: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (root / f"rank{rank}.jsonl").read_text().splitlines()]


def assert_each_rank_its_own_engine(root: Path, steps: list[int]) -> None:
    ranks = [records(root, rank) for rank in (0, 1)]
    for rows in ranks:
        assert [r["step"] for r in rows] == steps
        for r in rows:
            assert r["executor"] == "ExecutorWithExternalLauncher" and r["device"] == "cpu", r
            assert r["parity"] is not None and r["parity"] < SYNCED, r  # synced from the shards, on every rank
    for left, right in zip(*ranks):
        assert not set(left["ids"]) & set(right["ids"]), (left["ids"], right["ids"])  # each rank its own prompts


def test_demo_recipe_with_vllm_on_two_processes_and_resume(tiny_checkpoint, tmp_path):
    vlrl = [sys.executable, "-m", "vlrl_cli"]
    first = tmp_path / "first"
    run([*vlrl, *fit_args(tiny_checkpoint, first, steps=3), "--trainer.devices=2"], first)
    assert_each_rank_its_own_engine(first, [1, 2, 3])
    assert [r["weight_version"] for r in records(first, 0)] == [1.0, 2.0, 3.0]
    rows = list(csv.DictReader(open(next(first.rglob("metrics.csv")))))
    trained = [r for r in rows if r.get("train/loss")]
    for key in ("time/rollout", "time/rewards", "time/weight_sync", "time/ref_logps", "time/update", "time/step"):
        assert all(float(r[key]) > 0 for r in trained), key
    assert all(float(r["perf/completion_tokens_per_s"]) > 0 for r in trained)
    assert all(float(r["memory/update_peak_gib"]) > 0.1 for r in trained)  # resident set of a process with torch

    (checkpoint,) = (first / "ckpt").glob("*step=2.ckpt")
    resumed = tmp_path / "resumed"
    run([*vlrl, *fit_args(tiny_checkpoint, resumed, steps=3, resume=checkpoint), "--trainer.devices=2"], resumed)
    assert_each_rank_its_own_engine(resumed, [3])
    for rank in (0, 1):  # the same rows as the uninterrupted run's step 3, from the restored data order
        assert records(resumed, rank)[0]["ids"] == records(first, rank)[2]["ids"]


def test_demo_recipe_with_vllm_on_two_nodes_under_torchrun(tiny_checkpoint, tmp_path):
    """Two nodes of one process each, on localhost: LOCAL_RANK is 0 on both, so each engine must take its placement
    from the launcher's variables, as on a real cluster (scripts/slurm/ launches the same way through srun)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "run").mkdir()
    nodes = []
    for node in (0, 1):
        torchrun = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            "--nproc_per_node=1",
            f"--node_rank={node}",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            "-m",
            "vlrl_cli",
        ]
        args = [*fit_args(tiny_checkpoint, tmp_path / "run", steps=2), "--trainer.devices=1", "--trainer.num_nodes=2"]
        log = open(tmp_path / f"node{node}.log", "w")
        nodes.append(subprocess.Popen([*torchrun, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
    for node, process in enumerate(nodes):
        try:
            code = process.wait(timeout=900)
        finally:
            for other in nodes:
                if other.poll() is None and process.returncode not in (None, 0):
                    other.kill()
        assert code == 0, (tmp_path / f"node{node}.log").read_text()[-5000:]
    assert_each_rank_its_own_engine(tmp_path / "run", [1, 2])
