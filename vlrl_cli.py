"""The ``vlrl`` command: one entry point for training and every tool, ``vlrl <command> [options]``.

``vlrl fit|validate|test|predict`` is LightningCLI over the YAML recipes of ``configs/`` (``tools.lightning_cli``:
OmegaConf interpolation, resume with ``--ckpt_path=last``, crash-safe checkpoints, the step progress bar); arguments
that start with an option (``vlrl -c recipe.yaml fit``) go there too. Every other command is one module's
``main(argv)`` (argparse, ``prog="vlrl <command>"``), listed in ``COMMANDS``; ``vlrl bench <name>`` picks one of
``BENCHMARKS``. ``vlrl -h`` lists them all, ``vlrl <command> -h`` prints that command's options.

``main`` is LightningCLI's (``tools.lightning_cli.main``), kept under this name for in-process runs
(``vlrl_cli.main(["fit", ...])`` returns the CLI object).

Exit status: 0 after a finished run; a tool's own status where it returns one (``vlrl score``, ``vlrl cold-start``);
1 with the traceback after a failure (a bug of ours); 2 after a user's mistake, with one line and no traceback: a bad
argument (the parser's message), an unknown command (the message names the known ones), or a ``UserError`` (a path
that is not there, an option that cannot work, unusable data: ``datamodules.errors``). The old console scripts
``vlrl-demo``, ``vlrl-cold-start`` and ``vlrl-score`` remain as aliases of ``vlrl demo``, ``vlrl cold-start`` and
``vlrl score``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from datamodules.errors import UserError
from tools.lightning_cli import main
from tools.quiet import quiet_third_party

__all__ = ["BENCHMARKS", "COMMANDS", "LIGHTNING_COMMANDS", "bench", "command_main", "entry", "main", "usage"]

Main = Callable[[list[str] | None], Any]

LIGHTNING_COMMANDS = {
    "fit": "train from a YAML recipe (GRPO, cold-start SFT): vlrl fit -c configs/visionary_r1.yaml",
    "validate": "evaluate a model on a recipe's validation rows",
    "test": "score a model on a benchmark by its official rules: vlrl test -c configs/eval/mmstar.yaml",
    "predict": "write a model's completions for a dataset or benchmark as JSON Lines",
}

# name -> ("module:function" taking argv, one line). A module loads when its command runs, so one command's
# dependencies (TRL, matplotlib, vLLM) cost the others nothing and cannot break them.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "grpo-update": ("bench.grpo_update:main", "seconds per GRPO update (ours and TRL's GRPOTrainer), MFU on a GPU"),
    "rollout-throughput": ("bench.rollout_throughput:main", "rollout tokens per second, HF engine and vLLM"),
    "eval-throughput": ("bench.eval_throughput:main", "questions per second of vlrl test, HF engine and vLLM"),
    "memory": ("tools.memory:main", "memory per GPU on paper (weights, gradients, optimizer, activations)"),
    "lm-head-logps": ("bench.lm_head_logps:main", "fused LM-head log-probs against autograd"),
    "data-scan": ("bench.data_scan:main", "rows per second of the data scan at datamodule setup (100k rows)"),
}


def bench(argv: list[str] | None = None) -> Any:
    """``vlrl bench <name> [options]``: one of ``BENCHMARKS`` (each writes its figures to bench/RESULTS.md)."""
    args = list(sys.argv[2:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        title = "usage: vlrl bench <name> [options]   (vlrl bench <name> -h: its options)"
        print(_table(title, BENCHMARKS), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] not in BENCHMARKS:
        return _unknown("vlrl bench", args[0], BENCHMARKS)
    return command_main(BENCHMARKS[args[0]][0])(args[1:])


COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("tools.plan_cli:main", "memory per GPU by phase for a recipe, before anything loads; exit 1 if over"),
    "export": ("tools.export:main", "write a training checkpoint as a save_pretrained folder (transformers, vLLM)"),
    "predict-one": ("tools.predict:main", "answer one question about one image; prints the record as JSON"),
    "score": ("evaluation.score:main", "score vlrl predict output on a benchmark by its official rules"),
    "cold-start": ("tools.cold_start.pipeline:main", "Vision-R1 cold-start data by modality bridging"),
    "tiny-model": ("tools.tiny_model:main", "write a random-weight checkpoint of a supported model family"),
    "demo": ("demo:main", "the embedded demo: tiny model, cold-start SFT, GRPO and evaluation on this machine"),
    "study": ("experiments.shortcut_study:main", "the shortcut study: GRPO and Visionary-R1 on a benchmark with a cue"),
    "bench": ("vlrl_cli:bench", "performance benchmarks: vlrl bench <name> (vlrl bench -h lists them)"),
}


def command_main(target: str) -> Main:
    """The ``main(argv)`` a ``"module:function"`` entry names, imported now."""
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def _table(title: str, commands: dict[str, Any]) -> str:
    width = max(map(len, commands)) + 2
    rows = (f"  {name:<{width}}{entry if isinstance(entry, str) else entry[1]}" for name, entry in commands.items())
    return "\n".join([title, "", *rows])


def usage() -> str:
    """What ``vlrl -h`` prints: every command with one line."""
    return "\n\n".join(
        [
            "usage: vlrl <command> [options]   (vlrl <command> -h: the command's options)",
            _table("training and evaluation (LightningCLI, YAML recipes in configs/):", LIGHTNING_COMMANDS),
            _table("tools:", COMMANDS),
        ]
    )


def _unknown(prog: str, name: str, known: dict[str, Any]) -> int:
    print(f"{prog}: error: unknown command {name!r}; the commands are: {', '.join(known)}", file=sys.stderr)
    return 2


def entry(argv: Sequence[str] | None = None) -> int:
    """The console script (``argv``: the arguments after ``vlrl``; default ``sys.argv[1:]``): runs the command and
    returns the exit status. LightningCLI's ``main`` returns the CLI object, which a console-script wrapper would pass
    to ``sys.exit`` and so exit 1 after every successful run; here a finished run is 0."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    command = args[0]
    quiet_third_party()  # VLRL_VERBOSE=1: everything
    if command not in LIGHTNING_COMMANDS and command not in COMMANDS and not command.startswith("-"):
        return _unknown("vlrl", command, {**LIGHTNING_COMMANDS, **COMMANDS})
    try:
        if command in LIGHTNING_COMMANDS or command.startswith("-"):
            main(args)
            return 0
        status = command_main(COMMANDS[command][0])(args[1:])
    except UserError as e:  # the user's mistake: one line, no traceback
        print(f"vlrl {command}: error: {e}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    raise SystemExit(entry())
