"""The ``vlrl`` command: ``vlrl -h`` lists every command, ``vlrl <command> -h`` prints that command's options and
exits 0, an unknown command is an error naming the known ones (the installed script itself:
tests/e2e/test_console_script.py). What ``vlrl fit`` prints and leaves on disk: the step progress bar, the one-line
note that replaces Lightning's manual-optimization checkpoint warning, and no version folder left by a run that fails
before its first step. (Resume itself: tests/e2e/test_resume.py and tests/e2e/test_resume_recipe.py.)"""

import json
import logging

import pytest
from lightning.pytorch.callbacks import TQDMProgressBar

from rewards import Reward
from rewards.base import RewardInputError
from tests.e2e.test_resume import fit_args
from tools.lightning_cli import StepProgressBar, main, remove_if_unused
from vlrl_cli import BENCHMARKS, COMMANDS, LIGHTNING_COMMANDS, command_main, entry


class FailingReward(Reward):
    """Stops the run in its first rollout: a data error, which the reward combiner passes on (it isolates others)."""

    name = "failing"

    def score(self, completions, **batch):
        raise RewardInputError("reward failed on purpose")


def args_with_bar(tiny_checkpoint, tmp_path, steps: int) -> list[str]:
    return [a for a in fit_args(tiny_checkpoint, tmp_path / "data", tmp_path, steps) if "enable_progress_bar" not in a]


@pytest.mark.slow
def test_progress_bar_counts_steps_against_max_steps_and_no_manual_optimization_warning(
    tiny_checkpoint, tmp_path, capsys, caplog, recwarn
):
    # Lightning's logger stops propagating to the root (where caplog listens) when it is first imported without root
    # handlers, and a logging.config call of another library in this process (an in-process vLLM engine of an
    # earlier test) may have disabled existing loggers: listen on Lightning's logger itself, enabled
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).disabled = False
    lightning_log = logging.getLogger("lightning.pytorch")
    propagate = lightning_log.propagate
    lightning_log.addHandler(caplog.handler)
    lightning_log.propagate = False
    try:
        main(args_with_bar(tiny_checkpoint, tmp_path, steps=6))  # 5 batches an epoch: the bar crosses an epoch
    finally:
        lightning_log.removeHandler(caplog.handler)
        lightning_log.propagate = propagate
    captured = capsys.readouterr()
    printed = captured.out + captured.err  # Lightning's tqdm bars write to stdout
    assert "6/6" in printed and "Step (epoch 1)" in printed, printed[-2000:]
    assert "Epoch 0/" not in printed and "/-2" not in printed
    assert not [w for w in recwarn if "manual optimization" in str(w.message)]  # checkpoints every step here
    # said once, not at every checkpoint (in the whole suite an earlier test can leave Lightning's info logging where
    # neither caplog nor capsys sees it, so this checks it is never repeated; alone, the count is 1)
    note = "Lightning's manual-optimization checkpoint warning does not apply"
    assert caplog.text.count(note) + printed.count(note) <= 1


def test_progress_bar_choice(tiny_checkpoint, tmp_path):
    args = args_with_bar(tiny_checkpoint, tmp_path, steps=1)[1:]  # without "fit": run=False parses no subcommand
    assert isinstance(main(args, run=False).trainer.progress_bar_callback, StepProgressBar)
    off = main([*args, "--trainer.enable_progress_bar=false"], run=False)
    assert off.trainer.progress_bar_callback is None
    named = {"class_path": "lightning.pytorch.callbacks.TQDMProgressBar", "init_args": {"refresh_rate": 3}}
    cli = main([*args, f"--trainer.callbacks+={json.dumps(named)}"], run=False)
    bar = cli.trainer.progress_bar_callback
    assert type(bar) is TQDMProgressBar and bar.refresh_rate == 3  # a bar the config names is kept


@pytest.mark.slow
def test_a_run_failing_before_its_first_step_leaves_no_version_folder(tiny_checkpoint, tmp_path):
    args = [a for a in fit_args(tiny_checkpoint, tmp_path / "data", tmp_path, 2) if "rewards=" not in a]
    args.append('--model.init_args.rewards=[{"class_path": "tests.test_vlrl_cli.FailingReward"}]')
    with pytest.raises(RewardInputError, match="on purpose"):
        main(args)
    assert not list((tmp_path / "logs").glob("version_*"))
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())


def test_remove_if_unused_keeps_folders_with_results(tmp_path):
    started = tmp_path / "version_0"
    (started / "checkpoints").mkdir(parents=True)
    (started / "config.yaml").write_text("x")
    (started / "hparams.yaml").write_text("x")
    assert remove_if_unused(started) and not started.exists()
    for result in ("metrics.csv", "samples.jsonl", "checkpoints/last.ckpt"):
        kept = tmp_path / result.replace("/", "_") / "version_0"
        (kept / "checkpoints").mkdir(parents=True)
        (kept / "config.yaml").write_text("x")
        (kept / result).write_text("x")
        assert not remove_if_unused(kept) and (kept / result).exists()


# every command with an option its help must show (``bench`` stands for itself: it lists the benchmarks)
HELP = {
    "plan": "--gpu-memory-gib",
    "export": "--keep-lora",
    "predict-one": "--question",
    "score": "--benchmark",
    "cold-start": "--vlm",
    "tiny-model": "--vocab",
    "demo": "(default: runs/demo)",  # descriptions and defaults in -h
    "study": "--methods",
    "bench grpo-update": "--contenders",
    "bench rollout-throughput": "--engines",
    "bench eval-throughput": "--questions",
    "bench memory": "--gpus",
    "bench lm-head-logps": "--positions",
    "bench data-scan": "--images",
}


def test_the_help_table_covers_every_command_and_benchmark():
    assert set(HELP) == {*COMMANDS, *(f"bench {name}" for name in BENCHMARKS)} - {"bench"}


@pytest.mark.parametrize("command", list(HELP))
def test_every_command_prints_its_help_and_exits_0(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        entry([*command.split(), "-h"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: vlrl {command} ") and HELP[command] in out, out[:500]


def test_fit_help_is_lightning_cli(capsys):
    with pytest.raises(SystemExit) as exit_info:
        entry(["fit", "-h"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--trainer" in out and "--ckpt_path" in out


def test_vlrl_help_lists_every_command_with_its_line(capsys):
    assert entry(["-h"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, line in [*LIGHTNING_COMMANDS.items(), *((name, line) for name, (_, line) in COMMANDS.items())]:
        assert any(row.split() == [name, *line.split()] for row in lines), name
    assert entry(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out and line in out for name, (_, line) in BENCHMARKS.items())


def test_an_unknown_or_missing_command_is_an_error_naming_the_known_ones(capsys):
    assert entry(["expotr", "ckpt", "out"]) == 2
    err = capsys.readouterr().err
    assert "vlrl: error: unknown command 'expotr'" in err
    assert all(name in err for name in [*LIGHTNING_COMMANDS, *COMMANDS])
    assert entry(["bench", "speed"]) == 2
    err = capsys.readouterr().err
    assert "vlrl bench: error: unknown command 'speed'" in err and all(name in err for name in BENCHMARKS)
    assert entry([]) == 2 and "usage: vlrl <command>" in capsys.readouterr().err
    assert entry(["bench"]) == 2 and "usage: vlrl bench <name>" in capsys.readouterr().err


def test_every_command_names_a_main_that_exists():
    """Commands load on use: each ``module:function`` entry must import and be callable."""
    for target, _ in [*COMMANDS.values(), *BENCHMARKS.values()]:
        assert callable(command_main(target)), target


def _one_error_line(capsys, prefix: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(prefix) and not any("Traceback" in line for line in err), err[-10:]
    return err[-1]


def test_users_mistakes_end_in_one_line_and_exit_2(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """A missing model folder, checkpoint or config, and a resume with nothing to resume: one line each, exit 2."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "demo" / "sft").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "sft" / "export").symlink_to(tiny_checkpoint, target_is_directory=True)
    args = fit_args(tiny_checkpoint, tmp_path / "data", tmp_path / "run", 1)
    model = "--model.init_args.policy.model_name_or_path=runs/demo_sft/export"
    assert entry([*args, model]) == 2
    line = _one_error_line(capsys, "vlrl fit: error: model folder not found: runs/demo_sft/export")
    assert line.endswith("did you mean runs/demo/sft/export?")
    assert entry([*args, "--ckpt_path=last"]) == 2
    assert "no last checkpoint yet" in _one_error_line(capsys, "vlrl fit: error: --ckpt_path=last")
    assert entry([*args, f"--ckpt_path={tmp_path / 'nope.ckpt'}"]) == 2
    _one_error_line(capsys, f"vlrl fit: error: --ckpt_path: checkpoint not found: {tmp_path / 'nope.ckpt'}")
    assert entry(["export", "runs/nope.ckpt", "out"]) == 2
    _one_error_line(capsys, "vlrl export: error: checkpoint not found: runs/nope.ckpt")
    (tmp_path / "orphan.ckpt").write_bytes(b"")
    assert entry(["export", "orphan.ckpt", "out"]) == 2
    _one_error_line(capsys, "vlrl export: error: no config.yaml in the folders above orphan.ckpt")
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").rglob("*.ckpt"))  # nothing ran
