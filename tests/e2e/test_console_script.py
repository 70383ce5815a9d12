"""The installed ``vlrl`` command, run as a shell or scheduler runs it: exit status 0 after a finished run, non-zero
after a failed one (a console script that returned the CLI object exited 1 after every successful run); ``vlrl -h``
lists the commands and ``vlrl export -h`` prints that command's options."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

VLRL = Path(sys.executable).parent / "vlrl"
DEMO = Path(__file__).parents[2] / "configs" / "demo_sft.yaml"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(VLRL), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def sft_args(tiny_checkpoint, train_data, tmp_path) -> list[str]:
    return [
        "fit",
        "-c",
        str(DEMO),
        f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
        f"--model.init_args.export_dir={tmp_path / 'export'}",
        f"--data.init_args.train_data={train_data}",
        "--data.init_args.val_data=null",
        "--data.init_args.loader.batch_size=2",
        "--data.init_args.examples.min_pixels=3136",
        "--data.init_args.examples.max_pixels=3136",
        "--trainer.max_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]


@pytest.mark.skipif(not VLRL.exists(), reason="the vlrl console script is not installed in this environment")
def test_installed_command_exits_0_after_a_finished_run_and_non_zero_after_a_failed_one(
    tiny_checkpoint, synthetic_dir, tmp_path
):
    done = run(*sft_args(tiny_checkpoint, synthetic_dir / "train_sft_think.jsonl", tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "VLRLCLI object" not in done.stdout + done.stderr
    assert (tmp_path / "export" / "config.json").exists(), "the run really trained and exported"

    missing = run(*sft_args(tiny_checkpoint, tmp_path / "no_such.jsonl", tmp_path), cwd=tmp_path)
    assert missing.returncode == 2  # the user's mistake: one line, no traceback
    assert "no_such.jsonl" in missing.stderr and "Traceback" not in missing.stderr, missing.stderr[-3000:]

    bad_key = run("fit", "-c", str(DEMO), "--model.init_args.no_such_option=1", cwd=tmp_path)
    assert bad_key.returncode == 2
    assert "no_such_option" in bad_key.stderr


@pytest.mark.skipif(not VLRL.exists(), reason="the vlrl console script is not installed in this environment")
def test_installed_command_lists_its_commands_and_prints_a_command_s_help(tmp_path):
    listed = run("-h", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-3000:]
    for name in ("fit", "predict", "export", "score", "cold-start", "demo", "bench", "study", "tiny-model"):
        assert f"\n  {name} " in listed.stdout, name
    export = run("export", "-h", cwd=tmp_path)
    assert export.returncode == 0 and export.stdout.startswith("usage: vlrl export ") and "--keep-lora" in export.stdout
    unknown = run("train", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown command 'train'" in unknown.stderr
