"""``vlrl plan``: the shipped recipes' memory per GPU before anything loads, what fits instead, the shapes of local,
released and not-yet-exported checkpoints, and the fixed state checked against the tensors of a real (tiny) run."""

import math

import pytest
import torch

from tools.memory import GIB
from tools.plan import H100_GIB, PlanError, check_fit, model_shapes, plan
from tools.plan_cli import main, parse_fit_config

pytestmark = pytest.mark.slow  # each parses a recipe through LightningCLI (a few seconds)

H100 = int(H100_GIB * GIB)


def test_overrides_reach_the_plan_as_in_vlrl_fit():
    base = parse_fit_config(["-c", "configs/visionary_r1.yaml"])
    smaller = parse_fit_config(["-c", "configs/visionary_r1.yaml", "--model.init_args.update.micro_batch_size=2"])
    assert plan(smaller, 1, H100).phases["update"] < plan(base, 1, H100).phases["update"]


def test_ptst_takes_its_shapes_from_the_recipe_that_exports_its_start_point():
    shapes, source = model_shapes("runs/vision_r1_cold_start/export")
    assert "vision_r1_cold_start.yaml" in source and shapes["text_config"]["hidden_size"] == 3584  # 7B
    cfg = parse_fit_config(["-c", "configs/vision_r1_ptst.yaml"])
    phases = plan(cfg, 8, H100).phases
    assert {"update (stage 1)", "update (stage 2)"} <= set(phases)  # the two published stages


def test_an_unknown_model_is_named(tmp_path, capsys):
    with pytest.raises(PlanError, match="'nowhere/model' has no config.json"):
        model_shapes("nowhere/model")
    code = main(["-c", "configs/visionary_r1.yaml", "--model.init_args.policy.model_name_or_path=nowhere/model"])
    assert code == 2 and "nowhere/model" in capsys.readouterr().err


def test_check_fit_raises_with_the_overlays_that_fit():
    cfg = parse_fit_config(["-c", "configs/visionary_r1.yaml"])
    with pytest.raises(MemoryError, match=r"what fits: -c configs/memory/adamw_8bit.yaml \(peak"):
        check_fit(cfg, 1, H100)
    assert check_fit(cfg, 1, 141 * GIB).fits  # an H200


def test_fixed_state_equals_the_tensors_of_a_real_step(tiny_checkpoint, tmp_path):
    """The plan's fixed state (fp32 parameters, AdamW moments, bf16 reference) against the bytes of the tensors a
    tiny GRPO module holds after an optimizer step, with the demo recipe's settings (frozen embeddings)."""
    from lightning_modules.policy import FrozenReference, load_policy
    from tools.plan import CUDA_CONTEXT_GIB

    cfg = parse_fit_config(
        [
            "-c",
            "configs/demo_grpo.yaml",
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
            "--model.init_args.policy.reference_dtype=bfloat16",
            '--model.init_args.engine={"class_path": "rollout.hf.HFEngine"}',  # the policy generates: no engine copy
            f"--data.init_args.data_dir={tmp_path}",
        ]
    )
    policy = load_policy(str(tiny_checkpoint), "float32", freeze_embeddings=True)
    reference = FrozenReference(policy, "bfloat16")
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    for p in policy.parameters():
        if p.requires_grad:
            p.grad = torch.ones_like(p)
    opt.step()
    measured = sum(p.numel() * p.element_size() for p in policy.parameters())
    measured += sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if t.dim() > 0)
    measured += sum(p.numel() * p.element_size() for p in reference.model.parameters())
    planned = plan(cfg, 1, H100).phases["fixed"] - int(CUDA_CONTEXT_GIB * GIB)  # the HF engine: nothing asleep
    assert math.isclose(planned, measured, rel_tol=1e-3), (planned, measured)


def test_a_vllm_share_too_small_for_one_step_s_kv_cache_does_not_fit():
    """PTST's first stage on 7B: 4 prompts x (4096 + G 16 x 4096) tokens of K and V (prefix caching shares each
    prompt) is 14.9 GiB; at the old 0.3 share an 80 GB GPU leaves vLLM 7.4 GiB after its weights, so the plan refuses
    it as the engine would at start-up."""
    args = ["-c", "configs/vision_r1_ptst.yaml", "-c", "configs/strategy/fsdp.yaml"]
    assert plan(parse_fit_config(args), 16, H100).fits  # the recipe's 0.6
    short = plan(parse_fit_config([*args, "--model.init_args.engine.init_args.gpu_memory_utilization=0.3"]), 16, H100)
    assert not short.fits and any(
        "cannot hold one step of stage 1 (278,528 tokens = 14.9 GiB)" in note for note in short.notes
    )
