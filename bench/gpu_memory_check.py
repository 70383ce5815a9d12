"""The GPU memory check: does ``vlrl plan`` hold on a real GPU? One command for a lent GPU without vLLM (the first of
the two device scripts; ``bench/gpu_vllm_check.py`` is the second), and a dry mode that runs the same code on CPU.

    python -m bench.gpu_memory_check --out DIR            # one GPU: a random-init 3B, the 1-GPU overlay
    python -m bench.gpu_memory_check --dry --out DIR      # CPU: the tiny model, small shapes (CI runs this)

1. A random-init checkpoint (3B: the visionary_r1 model's shapes; dry: the tiny model).
2. ``vlrl fit`` of ``configs/visionary_r1.yaml`` with ``configs/memory/adamw_8bit.yaml`` (the documented 1-GPU
   option) for 3 steps on synthetic rows, with ``PlaceholderEngine``: the HF engine (vLLM is not on the lent machine)
   holding a placeholder tensor of vLLM's share (``gpu_memory_utilization`` x the device) while awake and freeing it
   asleep, so the rollout phase carries what vLLM would hold. Same overrides for the plan and the run.
3. Per phase, the plan beside the measured peak: ``memory/<phase>_peak_gib`` (the allocator's peak reserved memory on
   GPU, the resident set on CPU, where the ratio says nothing: the interpreter and libraries count there). The
   measured rollout also holds the HF engine's KV cache, which the plan's vLLM share stands for.
4. flash-attn against sdpa: the largest |log-prob| difference on one batch of the checkpoint (skipped, with the
   reason, where flash-attn does not work).
5. The update's seconds and MFU (``bench.flops``).

Rows go to ``DIR/results.md`` in ``bench/RESULTS.md``'s format; the checkpoint, data and run go to ``--work``.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
from pathlib import Path

import torch
from transformers import AutoConfig

from bench.flops import UpdateShape, peak_tflops, update_flops
from bench.results import append_result
from datamodules.synthetic import write_synthetic_dataset
from lightning_modules.policy import flash_attn_problem, load_policy
from rollout.hf import HFEngine
from tools.lightning_cli import main as fit_main
from tools.memory import GIB
from tools.plan import plan
from tools.plan_cli import parse_fit_config
from tools.tiny_model import write_random_checkpoint

RECIPE = ["-c", "configs/visionary_r1.yaml", "-c", "configs/memory/adamw_8bit.yaml"]


class PlaceholderEngine(HFEngine):
    """The HF engine, holding ``gpu_memory_utilization`` x ``device_gib`` of memory while awake, as a colocated
    vLLM engine would (freed asleep, as vLLM's sleep mode does). For memory checks on a machine without vLLM."""

    def __init__(self, gpu_memory_utilization: float = 0.3, device_gib: float = 79.6, enable_sleep_mode: bool = True):
        super().__init__()
        self.share = int(gpu_memory_utilization * device_gib * GIB)
        self.placeholder: torch.Tensor | None = None
        self.depth = 0

    def wake_up(self) -> None:
        self.depth += 1
        if self.depth == 1 and self.policy is not None:
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
            self.placeholder = torch.ones(self.share, dtype=torch.uint8, device=next(self.policy.parameters()).device)

    def go_to_sleep(self) -> None:
        self.depth = max(0, self.depth - 1)
        if self.depth == 0:
            self.placeholder = None
            torch.cuda.empty_cache() if torch.cuda.is_available() else None


def shapes(dry: bool) -> dict:
    if dry:
        return dict(
            size="tiny", image=56, new_tokens=8, prompts=2, steps=2, device_gib=1.0, accelerator="cpu", vocab="task"
        )
    return dict(
        size="3b", image=1024, new_tokens=256, prompts=2, steps=3, device_gib=None, accelerator="gpu", vocab="qwen"
    )


def run_args(s: dict, checkpoint: Path, data: Path, out: Path, device_gib: float) -> list[str]:
    engine = {
        "class_path": "bench.gpu_memory_check.PlaceholderEngine",
        "init_args": {"gpu_memory_utilization": 0.3, "device_gib": device_gib},
    }
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(out), "name": "run"}}
    return [
        *RECIPE,
        f"--model.init_args.policy.model_name_or_path={checkpoint}",
        f"--model.init_args.engine={engine}".replace("'", '"'),
        f"--model.init_args.rollout.max_new_tokens={s['new_tokens']}",
        f"--data.init_args.train_data={data}",
        "--data.init_args.val_data=null",
        f"--data.init_args.loader.batch_size={s['prompts']}",
        f"--data.init_args.prompts.min_pixels={s['image'] ** 2}",
        f"--data.init_args.prompts.max_pixels={s['image'] ** 2}",
        f"--trainer.max_steps={s['steps']}",
        f"--trainer.accelerator={s['accelerator']}",
        "--trainer.devices=1",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={out}",
        f"--trainer.logger={logger}".replace("'", '"'),
        "--trainer.callbacks=[]",
    ]


def measured(out: Path) -> dict[str, list[float]]:
    """Each logged ``time/*`` and ``memory/*`` key of the run, per training step."""
    rows = [r for r in csv.DictReader(open(next(out.rglob("metrics.csv")))) if r.get("train/loss")]
    keys = [k for k in rows[0] if k.startswith(("time/", "memory/"))]
    return {k: [float(r[k]) for r in rows if r[k]] for k in keys}


def flash_against_sdpa(checkpoint: Path) -> str:
    problem = flash_attn_problem()
    if problem is not None:
        return f"skipped: {problem}"
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (2, 512), device="cuda")
    logps = []
    for kernel in ("sdpa", "flash_attention_2"):
        model = load_policy(str(checkpoint), "bfloat16", attn_implementation=kernel).cuda().eval()
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()
        logps.append(torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]))
        del model
        torch.cuda.empty_cache()
    return f"max |log-prob difference| {float((logps[0] - logps[1]).abs().max()):.2e} over 2 x 511 tokens (bf16)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_memory_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for results.md and the run's logs")
    parser.add_argument("--work", help="folder for the checkpoint, data and run (default: --out; 3B: ~15 GB)")
    parser.add_argument("--dry", action="store_true", help="CPU: the tiny model and small shapes, same code path")
    args = parser.parse_args(argv)
    s, out, work = shapes(args.dry), Path(args.out), Path(args.work or args.out)
    out.mkdir(parents=True, exist_ok=True)
    device_gib = s["device_gib"] or torch.cuda.get_device_properties(0).total_memory / GIB
    checkpoint = write_random_checkpoint(
        work / "checkpoint",
        s["size"],
        s["image"] ** 2,
        s["image"] ** 2,
        overwrite=True,
        vocab="task" if args.dry else "qwen",
    )
    data = write_synthetic_dataset(work / "data", 16, image_size=s["image"], tasks=["shape_color"])
    fit_args = run_args(s, checkpoint, data, work, device_gib)
    planned = plan(parse_fit_config(fit_args), 1, int(device_gib * GIB))
    shutil.rmtree(work / "run", ignore_errors=True)  # a rerun on a warm machine must not read the last run's metrics
    fit_main(["fit", *fit_args])
    got = measured(work)
    steady = {k: statistics.mean(v[1:] or v) for k, v in got.items()}  # the first step warms up
    command = "python -m bench.gpu_memory_check" + (" --dry" if args.dry else "")
    setting = f"{s['size']}, visionary_r1 + adamw_8bit, {s['prompts']} prompts x G 8, {s['new_tokens']} new tokens"
    for phase, measured_key in (("rollout", "memory/rollout_peak_gib"), ("update", "memory/update_peak_gib")):
        plan_gib = max(v for k, v in planned.phases.items() if k.startswith(phase)) / GIB
        if phase == "update":
            plan_gib = max(plan_gib, planned.phases["optimizer step"] / GIB)
        value = steady[measured_key]
        append_result(
            f"memory plan vs measured: {phase}",
            setting,
            f"plan {plan_gib:.1f} GiB, measured {value:.1f} GiB (ratio {value / plan_gib:.2f})",
            command,
            out / "results.md",
        )
    model_config = AutoConfig.from_pretrained(checkpoint)
    prompt_tokens = (s["image"] // 28) ** 2 + 70
    shape = UpdateShape(s["prompts"], 8, prompt_tokens, s["new_tokens"], 4 * (s["image"] // 28) ** 2)
    flops = update_flops(model_config, shape)
    seconds = steady["time/update"]
    peak = peak_tflops(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None
    mfu = f", MFU {flops / seconds / (peak * 1e12):.1%}" if peak else ""
    append_result("GRPO update, 1-GPU overlay", setting, f"update {seconds:.2f} s{mfu}", command, out / "results.md")
    append_result("flash-attn vs sdpa", s["size"], flash_against_sdpa(checkpoint), command, out / "results.md")
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
