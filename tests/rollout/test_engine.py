import torch
from PIL import Image

from lightning_modules.logprobs import completion_logps
from lightning_modules.policy import load_policy
from rollout.engine import VISION_TOKENS, SamplingConfig, completion_mask_from_ids, encode_prompts, mask_vision_tokens
from rollout.hf import HFEngine
from tests.rollouts import policy_logps


def test_completion_mask_by_hand():
    E = 9
    ids = torch.tensor([[1, 2, E, 0], [1, 2, 3, 4], [E, 0, 0, 0]])
    mask, truncated = completion_mask_from_ids(ids, [E])
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False]


def _prompts(processor, k):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?" + " why" * i}]}
        for i in range(k)
    ]
    return [processor.apply_chat_template([m], add_generation_prompt=True, tokenize=False) for m in messages]


def test_hf_engine_groups_rows_and_logps_line_up(tiny_checkpoint, processor):
    policy = load_policy(str(tiny_checkpoint), dtype="float32")
    engine = HFEngine(generation_batch_size=3)  # 2 prompts x G=3 -> two generate calls, padded together
    engine.setup(policy, processor)
    images = [[Image.new("RGB", (56, 56), "red")], [Image.new("RGB", (84, 56), "blue")]]
    prompts = _prompts(processor, 2)
    torch.manual_seed(0)
    out = engine.generate(prompts, images, n=3, sampling=SamplingConfig(max_new_tokens=6))
    assert out.completion_ids.shape[0] == 6 and out.completion_ids.shape[1] <= 6 and len(out.texts) == 6
    assert out.group_size == 3 and out.images_per_prompt == [1, 1]
    # each prompt once: its tokens as the processor encodes it, each image once (56x56 -> 4x4 patches, 84x56 -> 4x6)
    enc = encode_prompts(processor, prompts, images)
    assert torch.equal(out.prompt_ids, enc["input_ids"]) and torch.equal(out.prompt_mask, enc["attention_mask"])
    assert out.model_inputs["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 6]]
    assert out.model_inputs["pixel_values"].shape[0] == 16 + 24
    assert torch.equal(out.model_inputs["mm_token_type_ids"], enc["mm_token_type_ids"])  # [2, P]
    assert policy.training  # restored after generation
    # the policy's log-probs of the sampled tokens are finite and computed on exactly these rows
    logps, valid = policy_logps(policy, out, processor.tokenizer)
    assert torch.isfinite(logps[valid]).all()


def test_greedy_is_deterministic(tiny_checkpoint, processor):
    policy = load_policy(str(tiny_checkpoint), dtype="float32")
    engine = HFEngine()
    engine.setup(policy, processor)
    images = [[Image.new("RGB", (56, 56), "green")]]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=5)
    a = engine.generate(_prompts(processor, 1), images, n=2, sampling=greedy)
    b = engine.generate(_prompts(processor, 1), images, n=2, sampling=greedy)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.completion_ids[0], a.completion_ids[1])


def test_vision_tokens_in_completions_are_masked_by_hand():
    ids = torch.tensor([[5, 7, 9, 0], [7, 7, 5, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    new_ids, new_mask, hits = mask_vision_tokens(ids, mask, [7], pad_id=0)
    assert new_ids.tolist() == [[5, 0, 9, 0], [0, 0, 5, 0]]
    assert new_mask.tolist() == [[1, 0, 1, 0], [0, 0, 1, 0]]
    assert hits == 3


def test_generated_image_pad_would_crash_the_forward_unless_masked(tiny_checkpoint, processor):
    import pytest

    policy = load_policy(str(tiny_checkpoint), dtype="float32")
    enc = encode_prompts(processor, _prompts(processor, 1), [[Image.new("RGB", (56, 56), "red")]])
    tok = processor.tokenizer
    completion = torch.tensor(
        [[tok.convert_tokens_to_ids("<|image_pad|>"), 11, tok.convert_tokens_to_ids("<|im_end|>")]]
    )
    mask = torch.ones_like(completion)

    def logps(ids):
        full = torch.cat([enc["input_ids"], ids], 1)
        mm = torch.cat([enc["mm_token_type_ids"], torch.zeros_like(ids)], 1)
        with torch.no_grad():
            return completion_logps(
                policy,
                full,
                torch.ones_like(full),
                ids.shape[1],
                enc["pixel_values"],
                enc["image_grid_thw"],
                mm_token_type_ids=mm,
            )[0]

    with pytest.raises(Exception, match="(?i)image"):
        logps(completion)
    ids, mask, hits = mask_vision_tokens(
        completion, mask, tok.convert_tokens_to_ids(list(VISION_TOKENS)), tok.pad_token_id
    )
    assert hits == 1 and mask.tolist() == [[0, 1, 1]]
    assert torch.isfinite(logps(ids)).all()
