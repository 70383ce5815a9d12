"""One GRPO update (reference log-probs, policy forward/backward, optimizer step) on a random-weight Qwen2.5-VL,
timed apart from the rollout, for each of our log-prob forwards and for TRL's ``GRPOTrainer`` on the same work.

Same model checkpoint, prompts (the caption template's system prompt and question), one image per prompt, G, and
completion length for every contender: completions are forced to exactly ``--new-tokens`` tokens (``ignore_eos`` for
us, ``min_new_tokens`` for TRL), k3 KL to a frozen reference (beta 0.04), one optimizer step per rollout batch.
``--micro-batch-size`` rows per forward/backward (default: all rows of a step in one) is TRL's
``per_device_train_batch_size``, with gradient accumulation over the step's rows.

What is timed, per step: the whole step, and within it the rollout (sampling + rewards: for us
``RolloutCallback``'s work around ``training_step``; for TRL ``_generate_single_turn`` and ``_calculate_rewards``).
Update = step - rollout. The first ``--warmup`` steps are not timed; the figure is the median of the timed ones.
Rows go to ``bench/RESULTS.md`` with the command, machine and date.

    vlrl bench grpo-update                                        # ours (3 forwards) and TRL, CPU defaults
    vlrl bench grpo-update --size 3b --dtype bfloat16 --image-size 1024 --new-tokens 256 \
        --gradient-checkpointing --micro-batch-size 8                                                   # GPU
    vlrl bench grpo-update --size 3b --dtype float32 --precision bf16-mixed --reference-dtype bfloat16 \
        --strategy fsdp --contenders shared_prefix ...          # the recipes' setting, FSDP2 (bench/device_check.sh)

``--precision`` (Lightning's flag; TRL gets ``bf16`` when it starts with bf16) defaults to the weights' own dtype:
``32-true`` for float32, ``bf16-true`` for bfloat16. ``--strategy fsdp`` shards the policy and its reference with
FSDP2 with ``configs/strategy/fsdp.yaml``'s strategy (``lightning_modules.sharding.FSDP2Strategy``) on one device
(TRL runs unsharded). ``--checkpoint-dir`` keeps the random-weight checkpoint between calls (a 3B one takes a
minute to write).

TRL is a bench-only dependency: ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning import Callback, Trainer
from transformers import AutoConfig, AutoProcessor, TrainerCallback

from bench.flops import UpdateShape, peak_tflops, update_flops
from bench.results import RESULTS, append_result
from datamodules.config import LoaderConfig, PromptConfig
from datamodules.prompts import build_messages
from datamodules.synthetic import write_synthetic_dataset
from datamodules.vqa import VQADataModule, VQADataset
from lightning_modules.config import OptimConfig, PolicyConfig, RolloutSettings, UpdateConfig
from lightning_modules.grpo import GRPOModule
from lightning_modules.losses import GRPOLoss
from lightning_modules.policy import load_policy
from lightning_modules.sharding import FSDP2Strategy  # configs/strategy/fsdp.yaml's
from rewards import AccuracyReward, CombinedReward, FormatReward
from rollout.hf import HFEngine
from tools.tiny_model import write_random_checkpoint

OURS = ("per_row", "grouped", "shared_prefix")
PRECISION_OF_DTYPE = {"float32": "32-true", "bfloat16": "bf16-true", "float16": "16-true"}


def _synthetic(data_dir: Path, n: int, image_size: int) -> None:
    write_synthetic_dataset(data_dir, n=n, seed=0, split="train", image_size=image_size, tasks=["shape_color"])


def _rewards():
    return [AccuracyReward(), FormatReward(template="caption")]


def run_ours(mode: str, checkpoint: Path, data_dir: Path, args) -> dict[str, list[float]]:
    """Per-step (total, update) seconds of ``GRPOModule`` with ``logps_forward=mode`` under a real Lightning fit."""

    class FixedLengthEngine(HFEngine):
        """Every completion exactly ``max_new_tokens`` long, whatever random weights sample."""

        def generate(self, prompts, images, n, sampling):
            sampling.ignore_eos = True
            return super().generate(prompts, images, n, sampling)

    rows = args.prompts * args.group_size
    module = GRPOModule(
        policy=PolicyConfig(
            str(checkpoint),
            dtype=args.dtype,
            reference_dtype=args.reference_dtype,
            gradient_checkpointing=args.gradient_checkpointing,
        ),
        rewards=_rewards(),
        reward_weights=[1.0, 1.0],
        loss=GRPOLoss(beta=0.04),
        engine=FixedLengthEngine(rows),
        rollout=RolloutSettings(
            group_size=args.group_size, max_new_tokens=args.new_tokens, temperature=1.0, log_samples_every_n_steps=0
        ),
        optim=OptimConfig(lr=1e-6),
        update=UpdateConfig(micro_batch_size=args.micro_batch_size or rows, logps_forward=mode),
    )
    times: dict[str, list] = {"step": [], "update": []}
    original_step = module.training_step

    def timed_training_step(batch, *a, **k):
        rollout = batch["rollout"].batch
        if rollout is not None:  # the update's shape, for FLOPs
            grid = rollout.model_inputs["image_grid_thw"]
            times["shape"] = [
                rollout.prompt_length,
                rollout.completion_length,
                int(grid[0].prod()),
            ]
        start = time.perf_counter()
        try:
            return original_step(batch, *a, **k)
        finally:
            times["update"].append(time.perf_counter() - start)

    module.training_step = timed_training_step

    class StepTimer(Callback):  # user callbacks run before the module's own (RolloutCallback) at each hook
        def on_train_batch_start(self, *_):
            self.start = time.perf_counter()

        def on_train_batch_end(self, *_):
            times["step"].append(time.perf_counter() - self.start)

    px = args.image_size * args.image_size
    data = VQADataModule(
        train_data=str(data_dir),
        model_name_or_path=str(checkpoint),
        prompts=PromptConfig(template="caption", min_pixels=px, max_pixels=px),
        loader=LoaderConfig(batch_size=args.prompts, shuffle=False),
    )
    strategy = "auto"
    if args.strategy == "fsdp":
        strategy = FSDP2Strategy()
    trainer = Trainer(
        accelerator="auto",
        devices=1,
        strategy=strategy,
        precision=args.precision,
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[StepTimer()],
    )
    trainer.fit(module, datamodule=data)
    return times


def run_trl(checkpoint: Path, data_dir: Path, args) -> dict[str, list[float]]:
    """Per-step (total, update) seconds of TRL's ``GRPOTrainer`` on the same model, prompts, G and lengths."""
    try:
        from trl import GRPOConfig, GRPOTrainer
    except ImportError:
        sys.exit('TRL is not installed: pip install -e ".[bench]"')
    from datasets import Dataset

    px = args.image_size * args.image_size
    source = VQADataset(str(data_dir), None, PromptConfig(template="caption", min_pixels=px, max_pixels=px))
    items = [source[i] for i in range(len(source))]
    dataset = Dataset.from_list(
        [
            {
                "prompt": build_messages(it["problem"], 1, "caption", it["problem_type"]),
                "image": it["images"][0],
                "solution": it["solution"],
                "problem_type": it["problem_type"],
            }
            for it in items
        ]
    )
    combined = CombinedReward(_rewards(), [1.0, 1.0])

    def reward(completions, solution, problem_type, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return combined(texts, solution=solution, problem_type=problem_type)[0].tolist()

    rows = args.prompts * args.group_size
    micro = args.micro_batch_size or rows
    if rows % micro:
        sys.exit(f"--micro-batch-size {micro} must divide prompts x group size = {rows} for TRL")
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=rows // micro,
        steps_per_generation=rows // micro,
        num_generations=args.group_size,
        max_completion_length=args.new_tokens,
        generation_kwargs={"min_new_tokens": args.new_tokens},
        beta=0.04,
        epsilon=0.2,
        loss_type="grpo",
        learning_rate=1e-6,
        max_steps=args.warmup + args.steps,
        temperature=1.0,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=not torch.cuda.is_available(),
        bf16=args.precision.startswith("bf16"),
        gradient_checkpointing=args.gradient_checkpointing,
        shuffle_dataset=False,
        disable_tqdm=True,
        seed=0,
    )
    model = load_policy(str(checkpoint), args.dtype)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
        processing_class=AutoProcessor.from_pretrained(checkpoint),
    )
    times: dict[str, list[float]] = {"step": [], "update": []}
    rollout_s = [0.0]
    for name in ("_generate_single_turn", "_calculate_rewards"):
        original = getattr(trainer, name)

        def timed(*a, _original=original, **k):
            start = time.perf_counter()
            try:
                return _original(*a, **k)
            finally:
                rollout_s[0] += time.perf_counter() - start

        setattr(trainer, name, timed)

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.start, rollout_s[0] = time.perf_counter(), 0.0

        def on_step_end(self, *_, **__):
            step = time.perf_counter() - self.start
            times["step"].append(step)
            times["update"].append(step - rollout_s[0])

    trainer.add_callback(StepTimer())
    trainer.train()
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vlrl bench grpo-update", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=["tiny", "3b", "7b"])
    parser.add_argument("--vocab", default="qwen", choices=["qwen", "task"], help="task: the small task vocabulary")
    parser.add_argument("--contenders", nargs="+", default=[*OURS, "trl"], choices=[*OURS, "trl"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--dtype", default="float32", help="the policy's weights (the optimizer's master copy)")
    parser.add_argument("--precision", default=None, help="Lightning's precision (default: the --dtype's own)")
    parser.add_argument("--reference-dtype", default=None, help="the frozen reference's weights (default: --dtype)")
    parser.add_argument("--strategy", default="auto", choices=["auto", "fsdp"], help="fsdp: FSDP2 on one device")
    parser.add_argument("--checkpoint-dir", default=None, help="write (or reuse) the random checkpoint here")
    parser.add_argument("--results", default=None, help="append rows to this file instead of bench/RESULTS.md")
    parser.add_argument("--micro-batch-size", type=int, default=None, help="rows per forward (default: all)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    args.precision = args.precision or PRECISION_OF_DTYPE[args.dtype]

    px = args.image_size
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_random_checkpoint(
            Path(args.checkpoint_dir or Path(tmp) / args.size),
            size=args.size,
            min_pixels=px * px,
            max_pixels=px * px,
            vocab=args.vocab,
        )
        data_dir = Path(tmp) / "data"
        _synthetic(data_dir, args.prompts * (args.warmup + args.steps), px)
        config = AutoConfig.from_pretrained(checkpoint)
        shape = None
        for name in args.contenders:
            torch.manual_seed(0)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            times = run_trl(checkpoint, data_dir, args) if name == "trl" else run_ours(name, checkpoint, data_dir, args)
            shape = times.pop("shape", shape)  # TRL does the same work on the shapes our rollouts had
            timed = {k: v[args.warmup :] for k, v in times.items()}
            if len(timed["step"]) < args.steps:
                raise RuntimeError(f"{name}: {len(timed['step'])} timed steps, expected {args.steps}")
            update, step = statistics.median(timed["update"]), statistics.median(timed["step"])
            results[name] = {"update": update, "step": step}
            forward = "per_row" if name == "trl" else name
            if forward == "shared_prefix" and args.gradient_checkpointing:
                forward = "grouped"  # the shared prefix needs a KV cache, off under checkpointing: prompts per row
            flops = update_flops(config, UpdateShape(args.prompts, args.group_size, *shape, forward)) if shape else None
            tokens = args.prompts * args.group_size * args.new_tokens / update
            results[name]["tokens"] = tokens
            if flops and torch.cuda.is_available() and peak_tflops(torch.cuda.get_device_name()):
                results[name]["mfu"] = flops / update / (peak_tflops(torch.cuda.get_device_name()) * 1e12)
            if torch.cuda.is_available():
                results[name]["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            print(
                f"{name}: update {update:.2f} s, rollout {step - update:.2f} s, step {step:.2f} s "
                f"(median of {args.steps})",
                flush=True,
            )
    setting = (
        f"{args.size} ({args.vocab} vocab), {args.dtype}, {args.prompts} prompts x G{args.group_size}, "
        f"{args.new_tokens} tokens, "
        f"{px}x{px} image{', grad ckpt' if args.gradient_checkpointing else ''}"
        f"{f', micro-batch {args.micro_batch_size}' if args.micro_batch_size else ''}"
        f"{f', {args.precision}' if args.precision != PRECISION_OF_DTYPE[args.dtype] else ''}"
        f"{f', {args.reference_dtype} reference' if args.reference_dtype else ''}"
        f"{', FSDP2 (ours)' if args.strategy == 'fsdp' else ''}"
    )
    command = "vlrl bench grpo-update " + " ".join(sys.argv[1:] if argv is None else argv)
    for name, r in results.items():
        extra = ""
        if "trl" in results and name != "trl":
            extra = f"; {r['update'] / results['trl']['update']:.2f}x TRL's update time"
        line = (
            f"update {r['update']:.2f} s ({r['tokens']:.0f} completion tok/s), "
            f"rollout {r['step'] - r['update']:.2f} s{extra}"
        )
        if "mfu" in r:
            line += f"; MFU {100 * r['mfu']:.1f}%"
        if "peak_gib" in r:
            line += f"; peak {r['peak_gib']:.1f} GiB"
        print(f"{name}: {line}")
        if not args.no_record:
            append_result(f"GRPO update ({name})", setting, line, command.strip(), Path(args.results or RESULTS))


if __name__ == "__main__":
    main()
