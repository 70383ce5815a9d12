"""Rollout throughput: generated tokens per second of the HF and vLLM engines on a random-weight Qwen2.5-VL.

Fixed lengths (``ignore_eos``): every completion is exactly ``--new-tokens`` long, so random weights cost what
trained ones would. One image per prompt (``--image-size`` square), G samples per prompt. The first call warms the
engine up and is not timed; the figure is the mean over ``--repeats`` timed calls. A row is appended to
``bench/RESULTS.md`` with the command, machine and date.

    vlrl bench rollout-throughput --size tiny --engines hf vllm            # CPU
    vlrl bench rollout-throughput --size 3b --image-size 1024 --dtype bfloat16 --new-tokens 256   # GPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoProcessor

from bench.results import append_result
from datamodules.prompts import build_messages
from datamodules.synthetic import make_row
from lightning_modules.policy import load_policy
from rollout.engine import SamplingConfig
from rollout.hf import HFEngine
from rollout.vllm import VLLMEngine  # vllm itself is imported when an engine starts
from tools.tiny_model import write_random_checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vlrl bench rollout-throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=["tiny", "3b", "7b"])
    parser.add_argument("--vocab", default="qwen", choices=["qwen", "task"], help="task: the small task vocabulary")
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    px = args.image_size
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_random_checkpoint(
            Path(tmp) / args.size, size=args.size, min_pixels=px * px, max_pixels=px * px, vocab=args.vocab
        )
        processor = AutoProcessor.from_pretrained(checkpoint)
        policy = load_policy(str(checkpoint), args.dtype).to(device).eval()
        rows = [make_row(i, 0, px, ["shape_color"]) for i in range(args.prompts)]
        prompts = [
            processor.apply_chat_template(
                build_messages(r.problem, 1, "caption", r.problem_type), add_generation_prompt=True, tokenize=False
            )
            for r in rows
        ]
        images = [[r.image] for r in rows]
        sampling = SamplingConfig(temperature=1.0, max_new_tokens=args.new_tokens, ignore_eos=True)
        for name in args.engines:
            engine = _engine(name)
            start = time.perf_counter()
            engine.setup(policy, processor)
            setup_s = time.perf_counter() - start
            out = engine.generate(prompts, images, args.group_size, sampling)  # warm-up
            assert int(out.completion_mask.sum()) == args.prompts * args.group_size * args.new_tokens
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                engine.generate(prompts, images, args.group_size, sampling)
                times.append(time.perf_counter() - start)
            seconds = sum(times) / len(times)
            tokens = args.prompts * args.group_size * args.new_tokens
            line = f"{name}: {tokens} tokens in {seconds:.2f} s = {tokens / seconds:.0f} tok/s (set-up {setup_s:.1f} s)"
            print(line, flush=True)
            if not args.no_record:
                append_result(
                    "rollout throughput",
                    f"{name} engine, {args.size} ({args.vocab} vocab), {args.dtype}, "
                    f"{args.prompts} prompts x G{args.group_size}, "
                    f"{args.new_tokens} new tokens, {px}x{px} image",
                    f"{tokens / seconds:.0f} tok/s ({seconds:.2f} s per rollout batch; engine set-up {setup_s:.1f} s)",
                    "vlrl bench rollout-throughput " + " ".join(sys.argv[1:] if argv is None else argv),
                )
            del engine


def _engine(name: str):
    if name == "hf":
        return HFEngine(generation_batch_size=256)
    return VLLMEngine(max_model_len=4096, enforce_eager=not torch.cuda.is_available())


if __name__ == "__main__":
    main()
