"""Grouped log-probs (vision tower once per prompt, shared prompt prefix) against the one-row-per-completion forward."""

import pytest
import torch
from PIL import Image

from lightning_modules.logprobs import (
    completion_logps,
    fusable,
    grouped_completion_logps,
    selective_logps,
    supports_grouped_forward,
)
from lightning_modules.policy import load_policy
from models.families import family_of
from rollout.batch import RolloutBatch
from tests.probes import image_question_inputs
from tests.rollouts import tiny_rollout

G = 3


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen2_vl", "qwen3_vl"])
def setup(family_checkpoint, request):
    # prompts of different lengths and image sizes, so left padding and image-token counts differ
    from transformers import AutoProcessor

    checkpoint = family_checkpoint(request.param)
    questions = ["What colour is the shape in the middle?", "How many?"]
    images = [Image.new("RGB", (56, 56), "red"), Image.new("RGB", (112, 84), "blue")]
    processor = AutoProcessor.from_pretrained(checkpoint)
    model, out = tiny_rollout(checkpoint, processor, questions, images, G, max_new_tokens=10)
    completion_mask = out.completion_mask.clone()
    for row, length in enumerate([10, 3, 7, 1, 10, 5]):  # completions that ended early: padding after their end
        completion_mask[row, length:] = 0
    batch = RolloutBatch(
        prompt_ids=out.prompt_ids,  # [2, P]
        prompt_mask=out.prompt_mask,
        completion_ids=out.completion_ids,  # [6, C]
        completion_attention=completion_mask,
        completion_mask=completion_mask,
        advantages=torch.zeros(2 * G),
        rewards=torch.zeros(2 * G),
        images_per_prompt=[1, 1],
        model_inputs=out.model_inputs,
        group_size=G,
    )
    return model, batch


def _per_row(model, rows, batch):
    return completion_logps(
        model,
        rows["input_ids"],
        rows["attention_mask"],
        batch.completion_length,
        rows["pixel_values"],
        rows["image_grid_thw"],
        chunk_size=7,
        completion_mask=rows["completion_mask"],
        mm_token_type_ids=rows["mm_token_type_ids"],
    )


def _grouped(model, rows, shared_prefix):
    return grouped_completion_logps(
        model,
        rows["prompt_ids"],
        rows["prompt_mask"],
        rows["completion_ids"],
        rows["completion_attention"],
        rows["prompt_index"],
        rows["pixel_values"],
        rows["image_grid_thw"],
        rows["mm_token_type_ids"],
        chunk_size=7,
        completion_mask=rows["completion_mask"],
        shared_prefix=shared_prefix,
    )


def _value_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    logps, entropy = fn()
    (logps * torch.linspace(-1, 1, logps.numel()).view_as(logps)).sum().backward()  # an arbitrary signed weighting
    return logps.detach(), entropy, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("shared_prefix", [True, False])
# the whole batch (asked past its end, as the last micro-batch is); a micro-batch that starts inside a group
@pytest.mark.parametrize("span", [(0, 8), (2, 5)])
def test_grouped_logps_and_gradients_equal_the_per_row_forward(setup, shared_prefix, span):
    model, batch = setup
    if not family_of(model).grouped_forward:
        pytest.skip(f"{family_of(model).name} uses the per-row forward: {family_of(model).per_row_reason}")
    assert supports_grouped_forward(model)
    rows, groups = batch.rows(*span), batch.groups(*span)
    # rows 2..4: the end of group 0 and two rows of group 1 -> 2 distinct prompts, each image once
    assert groups["prompt_ids"].shape[0] == 2 and groups["image_grid_thw"].shape[0] == 2
    assert groups["prompt_index"].tolist() == ([0, 0, 0, 1, 1, 1] if span == (0, 8) else [0, 1, 1])
    want, want_entropy, want_grads = _value_and_grads(model, lambda: _per_row(model, rows, batch))
    got, got_entropy, got_grads = _value_and_grads(model, lambda: _grouped(model, groups, shared_prefix))
    mask = rows["completion_mask"].bool()
    assert torch.allclose(got[mask], want[mask], atol=1e-5)
    assert torch.all(got[~mask] == 0)  # padding after a completion's end holds 0, as in the per-row forward
    assert torch.allclose(got_entropy[mask], want_entropy[mask], atol=1e-5)
    assert want_grads.keys() == got_grads.keys()
    assert any("visual" in name for name in got_grads)  # the vision tower trains through the shared features
    for name, grad in want_grads.items():
        assert torch.allclose(got_grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_a_family_without_the_grouped_forward_would_get_other_values_from_it(setup):
    """Qwen3-VL's DeepStack adds vision features inside the first decoder layers, which the grouped forward leaves
    out: on the tiny Qwen3-VL it gives other log-probs than the model's own forward, so that family trains per row."""
    model, batch = setup
    if family_of(model).grouped_forward:
        pytest.skip("the grouped forward is exact for this family (the test above)")
    assert not supports_grouped_forward(model)
    rows, groups = batch.rows(0, 8), batch.groups(0, 8)
    with torch.no_grad():
        want, _ = _per_row(model, rows, batch)
        got, _ = _grouped(model, groups, shared_prefix=False)
    mask = rows["completion_mask"].bool()
    assert (got[mask] - want[mask]).abs().max() > 1e-3


def test_shared_prefix_falls_back_under_gradient_checkpointing(setup):
    model, batch = setup
    if not family_of(model).grouped_forward:
        pytest.skip(f"{family_of(model).name} uses the per-row forward")
    groups = batch.groups(0, 6)
    want, _ = _grouped(model, groups, shared_prefix=False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()  # transformers drops the cache only in training mode, where a shared prefix would find none
    try:
        got, _ = _grouped(model, groups, shared_prefix=True)  # the key/value cache is off under checkpointing
    finally:
        model.gradient_checkpointing_disable()
    assert torch.allclose(got, want, atol=1e-6)


def _head_values_and_grads(head, hidden, targets, temperature, with_entropy, rows):
    hidden = hidden.clone().requires_grad_(True)
    head.zero_grad(set_to_none=True)
    logps, entropy = selective_logps(hidden[None], head, targets[None], rows, with_entropy, temperature)
    (logps * torch.linspace(-1, 1, logps.numel()).view_as(logps)).sum().backward()  # an arbitrary signed weighting
    weight_grad = next(head.parameters()).grad
    return logps.detach(), entropy, hidden.grad, weight_grad


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("with_entropy", [True, False])
@pytest.mark.parametrize("train_head", [True, False])
def test_fused_head_equals_the_autograd_path(temperature, with_entropy, train_head):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 3000, bias=False)
    head.weight.data *= 8  # peaked distributions, as a trained head gives
    head.weight.requires_grad_(train_head)
    plain = torch.nn.Sequential(head)  # not an nn.Linear: the chunked autograd path
    hidden, targets = torch.randn(37, 16), torch.randint(0, 3000, (37,))
    assert fusable(hidden, head) and not fusable(hidden, plain)
    for rows in (8, 37, 100):  # ragged last chunk, one chunk, a chunk larger than the input
        fused = _head_values_and_grads(head, hidden, targets, temperature, with_entropy, rows)
        reference = _head_values_and_grads(plain, hidden, targets, temperature, with_entropy, 5)
        torch.testing.assert_close(fused[0], reference[0], atol=1e-5, rtol=1e-5)
        assert fused[0].min() < -1.0  # not trivially zero
        if with_entropy:
            torch.testing.assert_close(fused[1], reference[1], atol=1e-5, rtol=1e-5)
            assert not fused[1].requires_grad
        else:
            assert fused[1] is None
        torch.testing.assert_close(fused[2], reference[2], atol=1e-5, rtol=1e-4)
        if train_head:
            torch.testing.assert_close(fused[3], reference[3], atol=1e-5, rtol=1e-4)
        else:
            assert fused[3] is None


def test_fused_head_on_the_model_matches_hand_computed_values(setup):
    model, _ = setup
    head = model.lm_head
    assert fusable(torch.zeros(1, 1), head)  # the tiny model's head takes the fused path
    torch.manual_seed(1)
    hidden, targets = torch.randn(1, 5, head.in_features), torch.randint(0, head.out_features, (1, 5))
    logps, entropy = selective_logps(hidden, head, targets, temperature=0.5)
    logits = (hidden[0] @ head.weight.T).double() / 0.5  # [5, V]
    expected = logits.log_softmax(-1)
    torch.testing.assert_close(logps[0].double(), expected.gather(1, targets[0, :, None])[:, 0], atol=1e-4, rtol=0)
    torch.testing.assert_close(entropy[0].double(), -(expected.exp() * expected).sum(-1), atol=1e-4, rtol=0)
    # other dtypes, a bias, GPU tensors or a sharded weight: the autograd path
    assert not fusable(torch.zeros(1, 1, dtype=torch.bfloat16), torch.nn.Linear(4, 4, bias=False).bfloat16())
    assert not fusable(torch.zeros(1, 1), torch.nn.Linear(4, 4))


def test_selective_logps_match_full_log_softmax():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden, targets = torch.randn(3, 5, 8), torch.randint(0, 50, (3, 5))
    logps, entropy = selective_logps(hidden, head, targets, chunk_size=4)
    full = torch.log_softmax(head(hidden), -1)
    assert torch.allclose(logps, full.gather(-1, targets[..., None]).squeeze(-1), atol=1e-6)
    assert torch.allclose(entropy, -(full.exp() * full).sum(-1), atol=1e-5)


def test_selective_logps_at_a_temperature_are_the_tempered_distribution():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden, targets = torch.randn(2, 4, 8), torch.randint(0, 50, (2, 4))
    logps, entropy = selective_logps(hidden, head, targets, chunk_size=3, temperature=0.5)
    tempered = torch.log_softmax(head(hidden) / 0.5, -1)
    assert torch.allclose(logps, tempered.gather(-1, targets[..., None]).squeeze(-1), atol=1e-5)
    assert torch.allclose(entropy, -(tempered.exp() * tempered).sum(-1), atol=1e-5)
    raw, raw_entropy = selective_logps(hidden, head, targets)
    assert (entropy < raw_entropy).all()  # T < 1 sharpens every position
    with pytest.raises(ValueError, match="temperature must be > 0"):
        selective_logps(hidden, head, targets, temperature=0.0)


def test_completion_logps_match_the_models_own_logits(tiny_checkpoint, processor):
    model = load_policy(str(tiny_checkpoint), dtype="float32")
    enc, c = image_question_inputs(processor)
    logps, _ = completion_logps(
        model,
        enc["input_ids"],
        enc["attention_mask"],
        c,
        enc["pixel_values"],
        enc["image_grid_thw"],
        chunk_size=3,
        mm_token_type_ids=enc["mm_token_type_ids"],  # M-RoPE positions depend on it
    )
    logits = model(**enc).logits[:, -c - 1 : -1].float()
    expected = torch.log_softmax(logits, -1).gather(-1, enc["input_ids"][:, -c:, None]).squeeze(-1)
    assert torch.allclose(logps, expected, atol=1e-5)

    # with a completion mask the LM head skips the masked-out positions; the kept ones are unchanged and train
    mask = torch.ones_like(expected, dtype=torch.long)
    mask[:, -1] = 0  # [1, c]: the last token is padding
    masked, entropy = completion_logps(
        model,
        enc["input_ids"],
        enc["attention_mask"],
        c,
        enc["pixel_values"],
        enc["image_grid_thw"],
        completion_mask=mask,
        mm_token_type_ids=enc["mm_token_type_ids"],
    )
    assert torch.allclose(masked[:, :-1], expected[:, :-1], atol=1e-5) and masked[0, -1] == 0 and entropy[0, -1] == 0
    masked.sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0
