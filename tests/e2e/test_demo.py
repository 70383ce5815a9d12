"""``vlrl demo`` as ``make demo`` runs it, at a tiny size: quiet (at most 40 lines: stage headers, one bar per
training stage, where each model went, the result table) and every stage's output on disk, the GRPO model exported
by the run itself; on the default family and on Qwen3-VL (``--family``)."""

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

VLRL = Path(sys.executable).parent / "vlrl"


def _on_a_terminal(command: list[str], cwd: Path) -> tuple[int, list[str]]:
    """Run ``command`` with a pseudo-terminal as its stdout and stderr, as ``make demo`` runs in a shell, and return
    its exit status and the lines a terminal shows (a progress bar redraws itself on one line)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # the other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n").rstrip("\n")
    return proc.wait(timeout=60), [line.rsplit("\r", 1)[-1] for line in text.split("\n")]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_the_demo_prints_at_most_40_lines_and_leaves_every_stage_s_files(tmp_path, family):
    out = tmp_path / "demo"
    args = ["demo", "--family", family, "--out", str(out), "--sft-steps", "3", "--grpo-steps", "2"]
    args += ["--eval-rows", "4", "--sft-rows", "8"]
    args += ["--rl-rows", "16", "--grpo-args=--model.init_args.rollout.dynamic_sampling=false"]
    returncode, printed = _on_a_terminal([str(VLRL), *args], tmp_path)
    assert returncode == 0, "\n".join(printed[-40:])
    assert len(printed) <= 40, "\n".join(printed)
    for n in range(1, 6):
        assert any(line.startswith(f"[demo {n}/5] ") for line in printed), n
    assert not [line for line in printed if "Tip:" in line or "Traceback" in line or "WARNING" in line]
    assert f"  model:      {out / 'grpo' / 'export'}  (transformers and vLLM load it)" in printed
    assert [s["name"] for s in json.loads((out / "summary.json").read_text())["stages"]] == [
        "start",
        "after_sft",
        "after_rl",
    ]
    assert (out / "grpo" / "export" / "config.json").exists() and (out / "rewards.png").stat().st_size > 0
    assert json.loads((out / "grpo" / "export" / "config.json").read_text())["model_type"] == family
