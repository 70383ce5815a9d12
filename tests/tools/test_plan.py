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


def _update_peak(policy, prompts, completions: int, group_size: int, chunk: int, checkpointing: bool, tmp_path):
    """Peak bytes allocated on top of the ones live before, over one update forward and backward of the policy (the
    module's grouped log-prob forward, under bf16 autocast as ``bf16-mixed`` runs it), from the profiler's memory
    timeline. The LM head takes its GPU path (the autograd one: on CPU a fused kernel stands in for it)."""
    import json

    from torch.profiler import ProfilerActivity, profile

    from lightning_modules import logprobs

    u = prompts["input_ids"].shape[0]
    n = u * group_size
    generator = torch.Generator().manual_seed(0)
    completion_ids = torch.randint(0, 500, (n, completions), generator=generator)  # [N, C]

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logps, _ = logprobs.grouped_completion_logps(
                policy,
                prompts["input_ids"],
                prompts["attention_mask"],
                completion_ids,
                torch.ones_like(completion_ids),
                torch.arange(u).repeat_interleave(group_size),
                prompts["pixel_values"],
                prompts["image_grid_thw"],
                prompts.get("mm_token_type_ids"),
                chunk_size=chunk,
                shared_prefix=not checkpointing,
            )  # [N, C]
        logps.sum().backward()

    fused, logprobs.fusable = logprobs.fusable, lambda hidden, lm_head: False
    try:
        step()  # warm-up: lazily built buffers (rotary tables) are not the update's
        policy.zero_grad(set_to_none=True)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as p:
            step()
    finally:
        logprobs.fusable = fused
    p.export_memory_timeline(str(tmp_path / "timeline.json"), device="cpu")
    _times, sizes = json.loads((tmp_path / "timeline.json").read_text())  # [T], [T, categories]
    totals = [sum(row) for row in sizes]
    return max(totals) - totals[0]


@pytest.mark.parametrize(
    "vocabulary, checkpointing, lora, chunk, prompts, group_size, completions",
    [
        ("task", True, False, 1024, 2, 4, 48),  # the recipe's settings: activations and the LM head of similar size
        ("task", False, False, 1024, 2, 4, 48),  # the shared-prefix forward
        ("task", False, True, 1024, 1, 8, 32),
        ("qwen", True, False, 128, 2, 4, 48),  # Qwen's 151,936-token vocabulary: the LM head dominates, 3 chunks
        ("qwen", False, True, 1024, 1, 8, 32),  # one chunk holding all 256 positions
    ],
)
def test_update_phase_agrees_with_the_tiny_model_s_measured_peak(
    request, vocabulary, checkpointing, lora, chunk, prompts, group_size, completions, tmp_path
):
    """The plan's update phase less its fixed state (gradients, autocast's bf16 weight copies, one micro-batch's
    activations, the LM head's kept logits and one chunk's backward pass) against the peak measured over a real
    forward and backward of the tiny model at the same shapes, through the Visionary-R1 recipe's own settings.
    The stated margin: the plan is within -10% / +30% of the measured peak. It counts every term at once (an upper
    bound: gradients arrive while activations are freed), so it lands above the peak, most with checkpointing."""
    from PIL import Image
    from transformers import AutoProcessor

    from lightning_modules.policy import load_policy

    checkpoint = request.getfixturevalue("tiny_checkpoint" if vocabulary == "task" else "qwen_checkpoint")
    processor = AutoProcessor.from_pretrained(checkpoint)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the shape? " * 3}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    image = Image.new("RGB", (112, 112), (120, 30, 200))  # the checkpoint's max_pixels: 16 merged image tokens
    inputs = dict(processor(text=[text] * prompts, images=[image] * prompts, return_tensors="pt"))
    cfg = parse_fit_config(
        [
            "-c",
            "configs/visionary_r1.yaml",
            *(["-c", "configs/lora.yaml"] if lora else []),
            f"--model.init_args.policy.model_name_or_path={checkpoint}",
            f"--model.init_args.policy.gradient_checkpointing={str(checkpointing).lower()}",
            '--model.init_args.engine={"class_path": "rollout.hf.HFEngine"}',  # no engine memory beside the update
            f"--model.init_args.rollout.group_size={group_size}",
            f"--model.init_args.rollout.max_new_tokens={completions}",
            f"--model.init_args.update.micro_batch_size={prompts * group_size}",
            f"--model.init_args.update.logps_chunk_size={chunk}",
            f"--data.init_args.prompts.max_prompt_length={inputs['input_ids'].shape[1]}",
            f"--data.init_args.prompts.max_pixels={112 * 112}",
        ]
    )
    phases = plan(cfg, 1, H100).phases
    planned = phases["update"] - phases["fixed"]
    settings = cfg["model"]["init_args"]["policy"]
    policy = load_policy(
        str(checkpoint),
        "float32",
        gradient_checkpointing=checkpointing,
        freeze_vision_tower=settings["freeze_vision_tower"],
        freeze_embeddings=settings["freeze_embeddings"],
        lora=settings.get("lora"),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as calibrated; make test runs one thread, where CPU kernels' workspaces differ
    try:
        measured = _update_peak(policy, inputs, completions, group_size, chunk, checkpointing, tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert 0.9 * measured <= planned <= 1.3 * measured, (planned / GIB, measured / GIB)
