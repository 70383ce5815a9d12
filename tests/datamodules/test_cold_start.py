"""The cold-start pipeline on the tiny model: stages, caches and resume, filters, the ShareGPT output the SFT
datamodule reads, the HTTP backend against a real OpenAI-compatible server on localhost, and vLLM end to end."""

import base64
import io
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from PIL import Image

from datamodules.cold_start import ChatRequest, FilterConfig, HFBackend, OpenAIBackend, run_pipeline
from datamodules.cold_start.filters import rejection_reason, repeated_ngram_share
from datamodules.cold_start.pipeline import STAGES
from datamodules.synthetic import write_synthetic_dataset

ROOT = Path(__file__).parents[2]
GOOD = "<think>The description says the shape is red, and red is option A.</think> <answer>A</answer>"


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("cold_rows")
    write_synthetic_dataset(out, 6, 0, "train", 56, tasks=["shape_color"])
    return out / "train.jsonl"


@pytest.fixture(scope="module")
def backend(tiny_checkpoint):
    return HFBackend(str(tiny_checkpoint), max_new_tokens=12)


class Counting:
    """Wraps a real backend and records how many requests reached it."""

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


def test_pipeline_runs_every_stage_and_resumes_without_redoing_rows(rows, backend, tmp_path):
    counting = Counting(backend)
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


def test_kept_rows_load_in_the_sft_datamodule(rows, backend, tmp_path, tiny_checkpoint):
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
    counting = Counting(backend)
    report = run_pipeline(str(rows), str(tmp_path), counting, limit=5, progress=False)
    assert counting.requests == 0 and report["kept"] == 4 and report["rejected"] == {"wrong_answer": 1}
    kept = [json.loads(x) for x in (tmp_path / "cold_start.jsonl").open()]
    assert kept[0]["conversations"][0]["value"].startswith("<image>What colour")
    assert kept[0]["conversations"][1]["value"].endswith(f"<answer>{truth['train-0']}</answer>")
    dm = SFTDataModule(train_data=str(tmp_path / "cold_start.jsonl"), model_name_or_path=str(tiny_checkpoint),
                       batch_size=4, min_pixels=56 * 56, max_pixels=56 * 56)  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["num_examples"] == 4 and batch["skipped"] == {} and "pixel_values" in batch
    assert (batch["labels"] != -100).any(1).all()  # every row trains on its assistant reply


class _ModelHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/chat/completions endpoint answering with the tiny model (a real model behind a real
    HTTP server): images arrive as PNG data URLs."""

    backend = None
    auth: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _ModelHandler.auth.append(self.headers.get("Authorization"))
        system, text, images = None, "", []
        for message in body["messages"]:
            if message["role"] == "system":
                system = message["content"]
                continue
            parts = (
                message["content"]
                if isinstance(message["content"], list)
                else [{"type": "text", "text": message["content"]}]
            )
            for part in parts:
                if part["type"] == "text":
                    text = part["text"]
                else:
                    data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                    images.append(Image.open(io.BytesIO(data)).convert("RGB"))
        reply = _ModelHandler.backend.chat([ChatRequest(text, images, system)])[0]
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_http_backend_against_a_local_server_matches_the_model(backend, tmp_path, monkeypatch):
    _ModelHandler.backend = backend
    server = HTTPServer(("127.0.0.1", 0), _ModelHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("VLRL_TEST_COLD_KEY", "secret")
        http = OpenAIBackend(f"http://127.0.0.1:{server.server_port}/v1", "tiny", api_key_env="VLRL_TEST_COLD_KEY",
                             concurrency=2)  # fmt: skip
        image = Image.new("RGB", (56, 56), (40, 170, 60))
        requests = [ChatRequest("What colour is it?", [image]), ChatRequest("Say hi.", [], "Be brief.")]
        assert http.chat(requests) == backend.chat(requests)  # the image survives the trip (greedy, same tokens)
        assert set(_ModelHandler.auth) == {"Bearer secret"}
        dead = OpenAIBackend("http://127.0.0.1:9/v1", "tiny", timeout_s=1, max_retries=0)
        assert dead.chat(requests[:1]) == [None]  # a failed call is None: the pipeline counts and retries it
    finally:
        server.shutdown()


def test_vllm_backend_end_to_end_from_the_command_line(rows, tiny_checkpoint, tmp_path):
    config = tmp_path / "cold.yaml"
    config.write_text(json.dumps({
        "vlm": {"class_path": "datamodules.cold_start.VLLMBackend",
                "init_args": {"model": str(tiny_checkpoint), "max_new_tokens": 8, "max_model_len": 1024,
                              "enforce_eager": True, "dtype": "float32"}},
        "batch_size": 4, "min_pixels": 56 * 56, "max_pixels": 56 * 56, "progress": False,
    }))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "datamodules.cold_start", "--config", str(config), "--data",
                           str(rows), "--out", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {s: v["done"] for s, v in report["stages"].items()} == dict.fromkeys(STAGES, 6)
    assert report["kept"] + sum(report["rejected"].values()) == 6
    texts = [json.loads(x)["text"] for x in (tmp_path / "out" / "stages" / "reasoning.jsonl").open()]
    assert len(texts) == 6 and all(isinstance(t, str) for t in texts)


def test_shipped_config_parses_and_carries_the_default_prompts():
    from jsonargparse import ArgumentParser

    from datamodules.cold_start import Prompts, run_pipeline

    parser = ArgumentParser()
    parser.add_argument("--config", action="config")
    parser.add_function_arguments(run_pipeline)
    config = ROOT / "configs" / "cold_start" / "vision_r1_bridge.yaml"
    cfg = parser.parse_args(["--config", str(config), "--data", "rows.jsonl", "--out", "out"])  # checks every key
    assert cfg.vlm.class_path.endswith("VLLMBackend") and cfg.reasoner.class_path.endswith("OpenAIBackend")
    assert cfg.prompts.reasoning == Prompts().reasoning and cfg.filters.max_words == 6000
