"""Evaluation throughput: questions per second of ``vlrl test`` with an evaluation recipe, vLLM engine vs HF engine.

Runs ``vlrl test -c configs/eval/mmstar.yaml`` (plus ``configs/cpu.yaml`` without a GPU) as a user would, on a
random-weight Qwen2.5-VL and a generated MMStar-shaped TSV (VLMEvalKit's layout: ``--questions`` four-option
questions, one ``--image-size`` square image each), once per engine; the recipe's own settings otherwise (bf16,
greedy, 64 questions per engine call). Fixed lengths: every reply is exactly ``--new-tokens`` long (``ignore_eos``),
so random weights cost what trained ones would and both engines do the same work.

Timed apart, per engine: start-up (from the command to the first test batch: argument parsing, model load, engine
start and weight sync, benchmark conversion, the first batch's images) and the test loop (first batch to the end of
testing: generation, per-question scoring, and the official scoring into ``results_test.json``). Questions/s is over
the test loop. One row per engine is appended to ``bench/RESULTS.md``.

    vlrl bench eval-throughput                     # CPU: tiny model, 64 questions, 64 new tokens
    vlrl bench eval-throughput --size 3b --image-size 448 --new-tokens 512 --questions 256   # GPU
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from bench.results import append_result
from tools.lightning_cli import main as vlrl
from tools.tiny_model import write_random_checkpoint

ROOT = Path(__file__).parents[1]
COLOURS = {"red": (220, 30, 30), "green": (30, 160, 30), "blue": (30, 30, 220), "yellow": (230, 210, 30)}


class PhaseTimer(Callback):
    """Wall-clock marks of a ``vlrl test`` run: the first test batch's start, the end of testing, and the time spent
    inside the engine's ``generate`` calls (and how many prompts each call had)."""

    def __init__(self) -> None:
        self.first_batch: float | None = None
        self.end: float | None = None
        self.generate_s = 0.0
        self.calls: list[int] = []

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.first_batch is None:
            self.first_batch = time.perf_counter()
            engine, generate = pl_module.engine, pl_module.engine.generate

            def timed(prompts, *args, **kwargs):
                start = time.perf_counter()
                try:
                    return generate(prompts, *args, **kwargs)
                finally:
                    self.generate_s += time.perf_counter() - start
                    self.calls.append(len(prompts))

            engine.generate = timed

    def on_test_end(self, trainer, pl_module) -> None:
        self.end = time.perf_counter()


def write_mmstar_tsv(path: Path, questions: int, image_size: int, seed: int = 0) -> Path:
    """``questions`` rows in VLMEvalKit's MMStar layout: a coloured square, which colour is it, four options."""
    from PIL import Image

    rng = random.Random(seed)
    names = list(COLOURS)
    lines = ["\t".join(["index", "question", "A", "B", "C", "D", "answer", "category", "l2-category", "image"])]
    for i in range(questions):
        colour = rng.choice(names)
        options = rng.sample(names, len(names))
        buf = io.BytesIO()
        Image.new("RGB", (image_size, image_size), COLOURS[colour]).save(buf, format="PNG")
        category = "coarse perception" if i % 2 else "fine-grained perception"
        lines.append(
            "\t".join(
                [
                    str(i),
                    "What colour is the image?",
                    *options,
                    "ABCD"[options.index(colour)],
                    category,
                    "colour",
                    base64.b64encode(buf.getvalue()).decode(),
                ]
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def engine_override(name: str, on_gpu: bool) -> list[str]:
    if name == "hf":
        return ['--model.init_args.engine={"class_path": "rollout.hf.HFEngine"}']
    if on_gpu:
        return []  # the recipe's own vLLM engine
    # on CPU: no graphs to capture; the recipe's max_model_len is cut to the tiny model's positions (logged)
    return ["--model.init_args.engine.init_args.enforce_eager=true"]


def run_test(args: argparse.Namespace, engine: str, checkpoint: Path, source: Path, out: Path) -> dict:
    on_gpu = torch.cuda.is_available()
    argv = [
        "test",
        "-c",
        str(ROOT / "configs" / "eval" / "mmstar.yaml"),
        *([] if on_gpu else ["-c", str(ROOT / "configs" / "cpu.yaml")]),
        *engine_override(engine, on_gpu),
        f"--model.init_args.policy.model_name_or_path={checkpoint}",
        f"--data.init_args.source={source}",
        f"--model.init_args.evaluation.max_new_tokens={args.new_tokens}",
        "--model.init_args.evaluation.sampling={temperature: 0.0, ignore_eos: true}",
        f"--data.init_args.loader.val_batch_size={args.batch_size}",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={out}",
        '--trainer.callbacks=[{"class_path": "bench.eval_throughput.PhaseTimer"}]',
    ]
    if args.dtype == "float32":
        argv += ["--trainer.precision=32-true", "--model.init_args.policy.dtype=float32"]
        argv += ["--model.init_args.engine.init_args.dtype=float32"] if engine == "vllm" else []
    start = time.perf_counter()
    cli = vlrl(argv)
    (timer,) = [c for c in cli.trainer.callbacks if isinstance(c, PhaseTimer)]
    result = json.loads((Path(cli.trainer.log_dir) / "results_test.json").read_text())
    assert result["count"] == args.questions and result["missing"] == 0, result["count"]
    assert sum(timer.calls) == args.questions, timer.calls
    return {
        "startup_s": timer.first_batch - start,
        "loop_s": timer.end - timer.first_batch,
        "generate_s": timer.generate_s,
        "calls": timer.calls,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vlrl bench eval-throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=["tiny", "3b", "7b"])
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64, help="questions per engine call (the recipe's 64)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument(
        "--dtype",
        default="bfloat16",
        choices=["bfloat16", "float32"],
        help="bfloat16: the recipe as shipped (bf16-true); float32 overrides weights, compute, engine",
    )
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    px = args.image_size
    command = "vlrl bench eval-throughput " + " ".join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VLRL_CACHE"] = str(Path(tmp) / "cache")  # the converted benchmark: not the user's cache
        checkpoint = write_random_checkpoint(
            Path(tmp) / args.size, size=args.size, min_pixels=px * px, max_pixels=px * px
        )
        source = write_mmstar_tsv(Path(tmp) / "MMStar.tsv", args.questions, px)
        timings = {}
        for engine in args.engines:  # vLLM last: its CPU worker pins the process's threads when it starts
            timings[engine] = t = run_test(args, engine, checkpoint, source, Path(tmp) / f"run-{engine}")
            rate, tokens = args.questions / t["loop_s"], args.questions * args.new_tokens / t["loop_s"]
            print(
                f"{engine}: {args.questions} questions in {t['loop_s']:.2f} s = {rate:.2f} questions/s "
                f"({tokens:.0f} tok/s; {t['generate_s']:.2f} s in generate, calls of {t['calls']} prompts); "
                f"start-up {t['startup_s']:.1f} s",
                flush=True,
            )
            if not args.no_record:
                append_result(
                    "eval throughput",
                    f"vlrl test -c configs/eval/mmstar.yaml, {engine} engine, {args.size}, {args.dtype}, "
                    f"{args.questions} questions x {args.new_tokens} new tokens, {args.batch_size} per engine call, "
                    f"{px}x{px} image",
                    f"{rate:.2f} questions/s ({tokens:.0f} tok/s; test loop {t['loop_s']:.2f} s, of which "
                    f"generate {t['generate_s']:.2f} s; start-up {t['startup_s']:.1f} s)",
                    command,
                )
    if {"hf", "vllm"} <= set(timings):
        print(f"vllm / hf questions/s: {timings['hf']['loop_s'] / timings['vllm']['loop_s']:.2f}x")


if __name__ == "__main__":
    # run as bench.eval_throughput: its PhaseTimer is the class the CLI instantiates from the class path above
    from bench.eval_throughput import main as run

    run()
