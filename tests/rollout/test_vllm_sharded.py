"""vLLM weight sync from an FSDP2-sharded policy on two CPU processes: each rank's engine takes the weights gathered
one ``DTensor`` parameter at a time (``rollout.weights``, ``full_tensor()``), and its sampling log-probs then match
the sharded policy's own log-probs, as in the unsharded sync test (tests/rollout/test_vllm.py)."""

import json
import os

import pytest
import torch
import torch.distributed as dist

from tests.distributed import run_on_ranks

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

SYNCED = 1e-4  # float32 on both sides
STALE = 0.05  # the gap a skipped sync leaves after the perturbation below


def _worker(rank: int, checkpoint: str, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import AutoProcessor

    from datamodules.prompts import build_messages
    from datamodules.synthetic import make_row
    from lightning_modules.policy import load_policy
    from lightning_modules.sharding import gathered_root, shard_model
    from rollout.engine import SamplingConfig
    from rollout.vllm import VLLMEngine
    from tests.rollouts import policy_logps

    processor = AutoProcessor.from_pretrained(checkpoint)
    policy = shard_model(load_policy(checkpoint, "float32"), init_device_mesh("cpu", (2,)))
    row = make_row(rank, 0, 56, ["shape_color"])
    prompt = processor.apply_chat_template(
        build_messages(row.problem, 1, "caption", row.problem_type), add_generation_prompt=True, tokenize=False
    )
    engine = VLLMEngine(max_model_len=1024, enforce_eager=True, kv_cache_gib=0.25)
    engine.setup(policy, processor)
    executor = engine.llm.llm_engine.model_executor
    assert type(executor).__name__ == "ExecutorWithExternalLauncher" and executor.driver_worker.worker.rank == rank
    # the launcher's variables were set for the engine's start only (Lightning reads LOCAL_RANK for the rank's device)
    assert not {"RANK", "LOCAL_RANK", "WORLD_SIZE"} & set(os.environ), "left in the environment"

    def gap() -> float:
        out = engine.generate([prompt], [[row.image]], 3, SamplingConfig(temperature=1.0, max_new_tokens=8))
        with gathered_root(policy):
            logps, valid = policy_logps(policy, out, processor.tokenizer)
        return float(((logps - out.engine_logps).abs() * valid).max())

    gaps = {"loaded": gap()}
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(1.5)  # each rank scales its own shard: the gathered weights are the scaled ones
    gaps["stale"] = gap()
    engine.sync_weights(policy)  # a collective: every rank gathers every parameter
    gaps["synced"] = gap()
    engine.close()
    assert dist.is_initialized(), "closing the engine must leave the trainer's process group alone"
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(gaps, f)


def test_each_ranks_engine_syncs_from_the_sharded_policy(tiny_checkpoint, tmp_path):
    run_on_ranks(_worker, str(tiny_checkpoint), str(tmp_path))
    for rank in (0, 1):
        gaps = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert gaps["loaded"] < SYNCED and gaps["stale"] > STALE and gaps["synced"] < SYNCED, (rank, gaps)
