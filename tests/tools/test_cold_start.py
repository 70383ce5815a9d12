"""The cold-start pipeline on the tiny model: stages, caches and resume, filters, the ShareGPT output the SFT
datamodule reads, reasoning models' chains of thought (``reasoning_content`` / ``reasoning`` fields, a ``<think>`` the
chat template opened) kept in the data, the installed ``vlrl-cold-start`` command's exit status, and vLLM end to end
on CPU with its KV cache sized by us. (The chat clients themselves: tests/clients.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clients import HFChatClient, OpenAIChatClient
from datamodules.synthetic import write_synthetic_dataset
from tests.chat_server import ANSWER, DESCRIPTION, REASONING, ChatServer
from tests.forked import ForkedRun, run_vlrl_forked
from tools.cold_start import FilterConfig, run_pipeline
from tools.cold_start.filters import rejection_reason, repeated_ngram_share
from tools.cold_start.pipeline import STAGES, main

ROOT = Path(__file__).parents[2]
GOOD = "<think>The description says the shape is red, and red is option A.</think> <answer>A</answer>"
COMMAND = Path(sys.executable).parent / "vlrl-cold-start"  # the console script scripts/setup.sh installs


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("cold_rows")
    write_synthetic_dataset(out, 6, 0, "train", 56, tasks=["shape_color"])
    return out / "train.jsonl"


@pytest.fixture(scope="module")
def model_client(tiny_checkpoint):
    return HFChatClient(str(tiny_checkpoint), max_new_tokens=12)


@pytest.fixture(scope="module")
def answer_b_rows(rows):
    """The synthetic rows with every solution B but the last (C): what the fake reasoning server's answer, B, gets
    right and wrong."""
    lines = [json.loads(x) for x in rows.open()]
    for i, row in enumerate(lines):
        row["solution"] = "<answer> B </answer>" if i < len(lines) - 1 else "<answer> C </answer>"
    path = rows.with_name("answer_b.jsonl")  # beside the images its relative paths name
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))
    return path


class Counting:
    """Wraps a real chat client and records how many requests reached it."""

    def __init__(self, inner):
        self.inner, self.requests = inner, 0

    def chat(self, requests):
        self.requests += len(requests)
        return self.inner.chat(requests)


def test_filters_name_the_first_failing_check():
    config = FilterConfig(min_words=3, max_words=40, ngram=3, max_repeated_ngrams=0.3)
    assert rejection_reason(GOOD, "<answer> A </answer>", "multiple_choice", config) is None
    assert rejection_reason(GOOD, "B", "multiple_choice", config) == "wrong_answer"
    assert rejection_reason("A", "A", "multiple_choice", config) == "format"
    assert rejection_reason("<think>x</think> <answer>A</answer>", "A", "multiple_choice", config) == "too_short"
    long = "<think>" + " ".join(f"w{i}" for i in range(60)) + "</think> <answer>A</answer>"
    assert rejection_reason(long, "A", "multiple_choice", config) == "too_long"
    loop = "<think>" + "so it is red " * 6 + "</think> <answer>A</answer>"
    assert rejection_reason(loop, "A", "multiple_choice", config) == "repetitive"
    assert repeated_ngram_share("a b c a b c", 3) == pytest.approx(1 - 3 / 4)  # abc bca cab abc: 1 of 4 repeated
    assert repeated_ngram_share("a b", 3) == 0.0


def test_pipeline_runs_every_stage_and_resumes_without_redoing_rows(rows, model_client, tmp_path):
    counting = Counting(model_client)
    first = run_pipeline(str(rows), str(tmp_path), counting, limit=3, batch_size=2, progress=False)
    assert counting.requests == 3 * len(STAGES)
    assert first["stages"]["reasoning"] == {"done": 3, "new": 3, "failed": 0}
    assert first["kept"] + sum(first["rejected"].values()) == 3  # a random model's text fails the filters
    cache = tmp_path / "stages" / "reasoning.jsonl"
    with cache.open("a") as f:
        f.write('{"id": "train-3", "te')  # a run killed mid-write leaves a torn line
    counting.requests = 0
    second = run_pipeline(str(rows), str(tmp_path), counting, batch_size=2, progress=False)
    assert counting.requests == 3 * len(STAGES)  # only rows 3-5, each stage once
    assert {s: v["done"] for s, v in second["stages"].items()} == dict.fromkeys(STAGES, 6)
    assert second["stages"]["pseudo_cot"]["new"] == 3
    assert json.loads((tmp_path / "report.json").read_text()) == second
    # the second stage saw the first stage's output for its own row
    pseudo = {json.loads(x)["id"]: json.loads(x)["text"] for x in (tmp_path / "stages/pseudo_cot.jsonl").open()}
    assert set(pseudo) == {f"train-{i}" for i in range(6)}


def test_kept_rows_load_in_the_sft_datamodule(rows, model_client, tmp_path, tiny_checkpoint):
    from datamodules.config import SFTExampleConfig, SFTLoaderConfig
    from datamodules.sft import SFTDataModule

    cache = tmp_path / "stages"
    cache.mkdir()
    truth = {json.loads(x)["id"]: json.loads(x)["solution"].split()[1] for x in rows.open()}
    for stage in STAGES:  # a finished earlier run: good reasoning for rows 0-3, a wrong answer for row 4
        lines = []
        for i in range(5):
            answer = truth[f"train-{i}"] if i < 4 else ("B" if truth["train-4"] != "B" else "C")
            text = GOOD.replace("<answer>A</answer>", f"<answer>{answer}</answer>") if stage == "reasoning" else "x"
            lines.append(json.dumps({"id": f"train-{i}", "text": text}))
        (cache / f"{stage}.jsonl").write_text("\n".join(lines) + "\n")
    counting = Counting(model_client)
    report = run_pipeline(str(rows), str(tmp_path), counting, limit=5, progress=False)
    assert counting.requests == 0 and report["kept"] == 4 and report["rejected"] == {"wrong_answer": 1}
    kept = [json.loads(x) for x in (tmp_path / "cold_start.jsonl").open()]
    assert kept[0]["conversations"][0]["value"].startswith("<image>What colour")
    assert kept[0]["conversations"][1]["value"].endswith(f"<answer>{truth['train-0']}</answer>")
    dm = SFTDataModule(
        train_data=str(tmp_path / "cold_start.jsonl"),
        model_name_or_path=str(tiny_checkpoint),
        examples=SFTExampleConfig(min_pixels=56 * 56, max_pixels=56 * 56),
        loader=SFTLoaderConfig(batch_size=4),
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["num_examples"] == 4 and batch["skipped"] == {} and "pixel_values" in batch
    assert (batch["labels"] != -100).any(1).all()  # every row trains on its assistant reply


@pytest.mark.parametrize(
    ("reasoner_model", "kept_text"),
    [
        ("deepseek-reasoner", f"<think>{REASONING}</think> {ANSWER}"),
        ("vllm-reasoning-parser", f"<think>{REASONING}</think> {ANSWER}"),
        ("no-reasoning-parser", f"<think>{REASONING}\n</think>\n\n{ANSWER}"),
    ],
)
def test_reasoning_models_chain_of_thought_is_kept(answer_b_rows, reasoner_model, kept_text, tmp_path):
    with ChatServer() as server:
        vlm = OpenAIChatClient(server.url, "describer", api_key_env=None)
        reasoner = OpenAIChatClient(server.url, reasoner_model, api_key_env=None, keep_reasoning=True)
        report = run_pipeline(str(answer_b_rows), str(tmp_path), vlm, reasoner, progress=False)
    # the reasoner saw the description (the modality bridge) and answered B: 5 right, the last row wrong. Before the
    # reasoning was read, every reply was "<answer>B</answer>" alone and all 6 were rejected for their format.
    assert DESCRIPTION in server.requests[-1]["messages"][-1]["content"]
    assert report["kept"] == 5 and report["rejected"] == {"wrong_answer": 1}
    kept = [json.loads(x) for x in (tmp_path / "cold_start.jsonl").open()]
    assert [k["conversations"][1]["value"] for k in kept] == [kept_text] * 5
    rejected = json.loads((tmp_path / "rejected.jsonl").read_text())
    assert rejected == {"id": "train-5", "reason": "wrong_answer", "text": kept_text}


def test_reasoning_cut_off_is_rejected_for_its_format_not_retried(answer_b_rows, tmp_path):
    with ChatServer() as server:
        vlm = OpenAIChatClient(server.url, "describer", api_key_env=None)
        report = run_pipeline(
            str(answer_b_rows),
            str(tmp_path),
            vlm,
            OpenAIChatClient(server.url, "cut-off", api_key_env=None, keep_reasoning=True),
            progress=False,
        )
    assert report["stages"]["reasoning"] == {"done": 6, "new": 6, "failed": 0}
    assert report["kept"] == 0 and report["rejected"] == {"format": 6}


def _http_config(path: Path, url: str, reasoner: str = "deepseek-reasoner") -> Path:
    path.write_text(
        json.dumps(
            {
                "vlm": {
                    "class_path": "clients.OpenAIChatClient",
                    "init_args": {
                        "base_url": url,
                        "model": "describer",
                        "api_key_env": None,
                        "max_retries": 0,
                        "timeout_s": 5,
                    },
                },
                "reasoner": {
                    "class_path": "clients.OpenAIChatClient",
                    "init_args": {"base_url": url, "model": reasoner, "api_key_env": None, "keep_reasoning": True},
                },
                "min_pixels": 56 * 56,
                "max_pixels": 56 * 56,
                "progress": False,
            }
        )
    )
    return path


def _command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert COMMAND.exists(), f"{COMMAND} missing: run scripts/setup.sh (it installs the project's console scripts)"
    return subprocess.run([str(COMMAND), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_installed_command_exits_0_on_success_and_non_zero_on_failure(answer_b_rows, tmp_path):
    with ChatServer() as server:
        config = _http_config(tmp_path / "cold.yaml", server.url)
        done = _command(
            "--config", str(config), "--data", str(answer_b_rows), "--out", str(tmp_path / "out"), cwd=tmp_path
        )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert json.loads(done.stdout) == report and report["kept"] == 5
    assert "[vlrl-cold-start] cold start: 6 rows, 5 kept" in done.stderr

    bad_flag = _command(
        "--config",
        str(config),
        "--data",
        str(answer_b_rows),
        "--out",
        str(tmp_path / "o2"),
        "--no-such-option",
        "1",
        cwd=tmp_path,
    )
    assert bad_flag.returncode == 2 and "--no-such-option" in bad_flag.stderr

    missing = _command(
        "--config", str(config), "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o3"), cwd=tmp_path
    )
    assert missing.returncode == 2 and missing.stdout == ""  # the user's mistake: one line, no traceback
    assert missing.stderr.strip().splitlines()[-1] == (
        f"vlrl-cold-start: error: data source not found: {tmp_path / 'nope.jsonl'}"
    )

    # the server is gone: every request fails, the report is still written, and the status says to rerun
    gone = _command("--config", str(config), "--data", str(answer_b_rows), "--out", str(tmp_path / "o4"), cwd=tmp_path)
    assert gone.returncode == 1 and json.loads(gone.stdout)["stages"]["pseudo_cot"]["failed"] == 6
    assert "vlrl-cold-start: error: requests failed {'pseudo_cot': 6}; rerun the same command" in gone.stderr


def test_main_returns_an_exit_status_and_run_cli_the_report(answer_b_rows, tmp_path, capsys):
    from tools.cold_start import run_cli

    with ChatServer() as server:
        config = str(_http_config(tmp_path / "cold.yaml", server.url))
        assert main(["--config", config, "--data", str(answer_b_rows), "--out", str(tmp_path / "a")]) == 0
        report = run_cli(["--config", config, "--data", str(answer_b_rows), "--out", str(tmp_path / "b")])
    assert json.loads(capsys.readouterr().out) == report and report["kept"] == 5


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_client_end_to_end_from_the_installed_command(answer_b_rows, think_checkpoint, tmp_path):
    """The shipped config as users run it, with the VLM swapped for the tiny checkpoint (whose template opens
    ``<think>``) and the reasoner's endpoint for a local DeepSeek-style server."""
    pytest.importorskip("vllm")
    with ChatServer() as server:
        done = _command(
            "--config",
            str(ROOT / "configs" / "cold_start" / "vision_r1_bridge.yaml"),
            "--data",
            str(answer_b_rows),
            "--out",
            str(tmp_path / "out"),
            "--vlm.init_args.model",
            str(think_checkpoint),
            "--vlm.init_args.max_new_tokens",
            "8",
            "--vlm.init_args.max_model_len",
            "1024",
            "--vlm.init_args.dtype",
            "float32",
            "--vlm.init_args.enforce_eager",
            "true",
            # more than any machine running tests has free: vLLM's CPU backend, left to size its KV cache from this
            # share of the node's memory, refuses to start ("Available memory on node 0 ... is less than desired")
            "--vlm.init_args.gpu_memory_utilization",
            "0.99",
            "--reasoner.init_args.base_url",
            server.url,
            "--reasoner.init_args.api_key_env",
            "null",
            "--min_pixels",
            str(56 * 56),
            "--max_pixels",
            str(56 * 56),
            "--progress",
            "false",
            cwd=tmp_path,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "KV cache fixed at 1 GiB" in done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {s: v["done"] for s, v in report["stages"].items()} == dict.fromkeys(STAGES, 6)
    assert report["kept"] == 5 and report["rejected"] == {"wrong_answer": 1}
    stages = {s: [json.loads(x)["text"] for x in (tmp_path / "out" / "stages" / f"{s}.jsonl").open()] for s in STAGES}
    for stage in ("pseudo_cot", "description"):  # vLLM's replies, with the <think> their prompt opened put back
        assert len(stages[stage]) == 6 and all(t.startswith("<think>\n") for t in stages[stage])
    asked = [r["messages"][-1]["content"] for r in server.requests]
    assert len(asked) == 6 and all(any(d in text for text in asked) for d in stages["description"])  # the bridge
    assert stages["reasoning"][0] == f"<think>{REASONING}</think> {ANSWER}"


def test_shipped_config_parses_and_carries_the_default_prompts():
    from jsonargparse import ArgumentParser

    from tools.cold_start import Prompts, run_pipeline

    parser = ArgumentParser()
    parser.add_argument("--config", action="config")
    parser.add_function_arguments(run_pipeline)
    config = ROOT / "configs" / "cold_start" / "vision_r1_bridge.yaml"
    cfg = parser.parse_args(["--config", str(config), "--data", "rows.jsonl", "--out", "out"])  # checks every key
    assert cfg.vlm.class_path == "clients.VLLMChatClient" and cfg.reasoner.class_path == "clients.OpenAIChatClient"
    assert cfg.vlm.init_args.keep_reasoning and cfg.reasoner.init_args.keep_reasoning  # the filters need the <think>
    assert cfg.prompts.reasoning == Prompts().reasoning and cfg.filters.max_words == 6000
    assert cfg.vlm.init_args.kv_cache_gib is None  # a GPU recipe; on CPU the client fixes 1 GiB


@pytest.mark.slow
def test_killed_at_seeded_moments_the_command_resumes_without_redoing_work(answer_b_rows, tmp_path):
    """``vlrl-cold-start`` SIGKILLed with a request in flight, at a seeded request of each run (the server kills it),
    then run again with the same command until it finishes: its outputs equal an uninterrupted run's, and what was
    asked again is at most the batch in flight at each kill (2 requests)."""
    import random

    with ChatServer() as server:
        config = _http_config(tmp_path / "cold.yaml", server.url)
        args = ["cold-start", "--config", str(config), "--data", str(answer_b_rows), "--batch_size", "2", "--out"]
        whole = run_vlrl_forked([*args, str(tmp_path / "whole")], cwd=tmp_path)  # a process of its own (tests.forked)
        assert whole.returncode == 0, whole.stderr[-3000:]
        needed, schedule, kills = len(server.requests), random.Random(0), 0
        while True:
            with ForkedRun([*args, str(tmp_path / "killed")], cwd=tmp_path) as run:
                # the 3rd to 6th request of this run: at least one batch of 2 answered first, so each gets further
                server.kill_at = (len(server.requests) + schedule.randint(3, 6), run.pid)
                finished = run.wait(timeout=600)
            if finished.returncode == 0:
                break
            assert finished.returncode == -9, finished.stderr[-3000:]
            kills += 1
        asked = len(server.requests) - needed
    assert kills >= 4 and asked <= needed + 2 * kills, (kills, asked, needed)
    for name in ("cold_start.jsonl", "rejected.jsonl", *(f"stages/{s}.jsonl" for s in STAGES)):
        lines = sorted((tmp_path / "killed" / name).read_text().splitlines())
        assert lines == sorted((tmp_path / "whole" / name).read_text().splitlines()), name
