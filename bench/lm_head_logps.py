"""Completion log-probs through the LM head: the fused CPU path against the chunked autograd path.

    vlrl bench lm-head-logps [--positions 1024] [--hidden 128] [--vocab 151936] [--no-record]

Times, per path, what a GRPO step asks of the head: the reference pass (forward, no gradient, no entropy) and the
policy pass (forward with entropy, then backward into the hidden states and the head's weight). Both paths compute
the same values (``tests/lightning_modules/test_logprobs.py``); this measures their cost. Rows go to
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from bench.results import append_result
from lightning_modules.logprobs import selective_logps


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk: int, repeats: int) -> dict:
    def reference():
        with torch.no_grad():
            selective_logps(hidden[None], head, targets[None], chunk, with_entropy=False, temperature=0.7)

    def policy():
        h = hidden.detach().requires_grad_(True)
        logps, _ = selective_logps(h[None], head, targets[None], chunk, with_entropy=True, temperature=0.7)
        logps.sum().backward()
        head.zero_grad(set_to_none=True)

    return {"reference": _time(reference, repeats), "policy": _time(policy, repeats)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vlrl bench lm-head-logps", description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=1024, help="completion tokens (4 prompts x G8 x ~32)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden size (128: the tiny model)")
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--chunk", type=int, default=1024, help="logps_chunk_size (positions per chunk)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    linear = nn.Linear(args.hidden, args.vocab, bias=False)
    hidden, targets = torch.randn(args.positions, args.hidden), torch.randint(0, args.vocab, (args.positions,))
    results = {
        "fused": measure(linear, hidden, targets, args.chunk, args.repeats),
        "autograd": measure(nn.Sequential(linear), hidden, targets, args.chunk, args.repeats),  # not fusable
    }
    setting = f"{args.positions} positions, hidden {args.hidden}, vocab {args.vocab}, float32, T 0.7"
    command = "vlrl bench lm-head-logps " + " ".join(sys.argv[1:] if argv is None else argv)
    for name, r in results.items():
        line = f"reference pass {r['reference']:.3f} s, policy forward+backward {r['policy']:.3f} s"
        if name == "fused":
            base = results["autograd"]
            line += (
                f" ({base['reference'] / r['reference']:.2f}x and {base['policy'] / r['policy']:.2f}x "
                "faster than autograd)"
            )
        print(f"{name}: {line} (median of {args.repeats})")
        if not args.no_record:
            append_result(f"LM-head log-probs ({name})", setting, line, command)


if __name__ == "__main__":
    main()
