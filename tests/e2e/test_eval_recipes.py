"""The evaluation recipes (``configs/eval/*.yaml``) run as shipped, with the CPU overlay, the tiny model and the HF
engine (the recipes' vLLM engine runs in ``bench/eval_throughput.py``), on tiny files in each benchmark's published
shape (``tests/evaluation``). Canned replies, scored by hand in ``tests/evaluation``, stand in for the tiny model's
on the questions that have one; the rest keep the model's own reply. ``results_test.json`` is then what ``vlrl-score``
gives on the completions in ``results_test_questions.jsonl``."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from datamodules.benchmarks import read_published
from evaluation.score import main as vlrl_score
from evaluation.score import score_predictions
from lightning_modules.evaluator import Evaluator
from tests.conftest import FAMILIES
from tests.e2e import HF_ENGINE
from tests.evaluation import test_mathverse, test_mathvision, test_mathvista, test_vlmevalkit
from tests.evaluation.published import write_predictions
from vlrl_cli import main

CONFIGS = Path(__file__).parents[2] / "configs"

# benchmark -> (writer of the published file, canned replies by id, rows those replies get right, questions)
BENCHMARKS = {
    "mathvista": (test_mathvista.write_mathvista, test_mathvista.COMPLETIONS, test_mathvista.RIGHT, 10),
    "mathvision": (test_mathvision.write_mathvision, test_mathvision.COMPLETIONS, test_mathvision.RIGHT, 6),
    "mathverse": (test_mathverse.write_mathverse, test_mathverse.COMPLETIONS, test_mathverse.RIGHT, 9),
    "mmstar": (test_vlmevalkit.write_mmstar, test_vlmevalkit.MMSTAR_COMPLETIONS, {"0", "2"}, 3),
    # 7 rows, 3 questions under CircularEval (copies share index mod 1,000,000)
    "mmbench": (
        test_vlmevalkit.write_mmbench,
        test_vlmevalkit.MMBENCH_COMPLETIONS,
        {"1", "1000001", "2000001", "2", "3"},
        3,
    ),
}


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLRL_CACHE", str(tmp_path / "user-cache"))  # converted rows: never the real ~/.cache


def canned_replies(monkeypatch, replies: dict[str, str]) -> list[int]:
    """The engine generates as usual; a question with a canned reply gets it instead of the model's. Returns the
    list the number of prompts of each engine call is appended to."""
    generate, calls = Evaluator.generate, []

    def eval_generate(self, batch):
        out = generate(self, batch)
        calls.append(len(batch["prompt"]))
        return replace(out, texts=[replies.get(id, text) for id, text in zip(batch["id"], out.texts)])

    monkeypatch.setattr(Evaluator, "generate", eval_generate)
    return calls


@pytest.mark.parametrize("benchmark", sorted(BENCHMARKS))
def test_eval_recipe_writes_what_vlrl_score_gives(benchmark, tiny_checkpoint, tmp_path, monkeypatch):
    write, replies, right, questions = BENCHMARKS[benchmark]
    (tmp_path / "published").mkdir()
    source = write(tmp_path / "published")
    calls = canned_replies(monkeypatch, replies)
    run = tmp_path / "run"
    cli = main(
        [
            "test",
            "-c",
            str(CONFIGS / "eval" / f"{benchmark}.yaml"),
            "-c",
            str(CONFIGS / "cpu.yaml"),
            HF_ENGINE,
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
            f"--data.init_args.source={source}",
            "--model.init_args.evaluation.max_new_tokens=4",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={run}",
        ]
    )
    assert cli.trainer.precision == "bf16-true"  # the recipe's own precision: bf16 runs on CPU
    rows = len(read_published(benchmark, source))
    assert calls == [rows]  # one engine call for the whole batch (val_batch_size 64), not one per question
    log_dir = run / "logs" / "version_0"  # <default_root_dir>/logs/version_N, as the recipe's header says
    result = json.loads((log_dir / "results_test.json").read_text())
    assert 0.0 <= result["accuracy"] <= 1.0 and result["count"] == questions
    assert (result["rows"], result["missing"]) == (rows, 0)  # every row evaluated: none missing
    assert result["categories"] and all(v["count"] > 0 for f in result["categories"].values() for v in f.values())
    by_id = {q["id"]: q for q in result["questions"]}
    assert {id: by_id[id]["correct"] for id in replies} == {id: int(id in right) for id in replies}  # by hand
    assert float(cli.trainer.callback_metrics["test/benchmark_accuracy"]) == pytest.approx(result["accuracy"])

    # vlrl-score on the per-question completions gives the same JSON, apart from naming its input files
    lines = (log_dir / "results_test_questions.jsonl").read_text().splitlines()
    completions = {q["id"]: q["completion"] for q in map(json.loads, lines)}
    assert len(completions) == rows and all(completions[id] == text for id, text in replies.items())
    predictions = write_predictions(tmp_path / "predictions.jsonl", completions)
    out = tmp_path / "offline.json"
    assert (
        vlrl_score(
            ["--benchmark", benchmark, "--source", str(source), "--predictions", str(predictions), "--out", str(out)]
        )
        == 0
    )
    offline = json.loads(out.read_text())
    assert offline.pop("predictions") == [str(predictions)]
    assert result.pop("evaluated") == rows  # every question reached the model
    assert result == offline


def test_an_eval_recipe_without_its_benchmark_file_is_refused(tiny_checkpoint, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "test",
                "-c",
                str(CONFIGS / "eval" / "mathvista.yaml"),
                "-c",
                str(CONFIGS / "cpu.yaml"),
                f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
            ]
        )
    assert "the following arguments are required: source" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("family", FAMILIES)
def test_eval_recipe_with_its_own_vllm_engine(family_checkpoint, family, tmp_path):
    """MMBench's recipe as shipped (its vLLM engine, bf16) plus the CPU overlay, in a fresh process (vLLM runs
    in-process there, as in a user's run), on each model family: every row answered, scored as vlrl-score scores
    the replies."""
    tiny_checkpoint = family_checkpoint(family)
    import os
    import subprocess
    import sys

    (tmp_path / "published").mkdir()
    source = test_vlmevalkit.write_mmbench(tmp_path / "published")
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-c",
        "from vlrl_cli import main; main()",
        "test",
        "-c",
        str(CONFIGS / "eval" / "mmbench.yaml"),
        "-c",
        str(CONFIGS / "cpu.yaml"),
        f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
        f"--data.init_args.source={source}",
        "--model.init_args.evaluation.max_new_tokens=8",
        "--model.init_args.engine.init_args.enforce_eager=true",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={run}",
    ]
    env = {**os.environ, "VLRL_CACHE": str(tmp_path / "user-cache")}
    done = subprocess.run(command, cwd=CONFIGS.parent, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "max_model_len 6144 cut to the model's 4096" in done.stdout + done.stderr  # the engine adapted to CPU
    log_dir = run / "logs" / "version_0"
    result = json.loads((log_dir / "results_test.json").read_text())
    assert (result["count"], result["rows"], result["missing"]) == (3, 7, 0)
    questions = [json.loads(line) for line in (log_dir / "results_test_questions.jsonl").read_text().splitlines()]
    predictions = write_predictions(tmp_path / "predictions.jsonl", {q["id"]: q["completion"] for q in questions})
    offline = score_predictions("mmbench", source, predictions)
    assert result.pop("evaluated") == 7
    assert result == {k: v for k, v in offline.items() if k != "predictions"}
