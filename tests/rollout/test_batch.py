"""``RolloutBatch``: prompts stored once, completions per row; its per-row and grouped views, dynamic sampling's
``select_groups`` and ``from_rollout``'s vision-token masking, on a batch small enough to check by hand, and once on a
real rollout of the tiny model."""

import pytest
import torch
from PIL import Image

from rollout.batch import RolloutBatch, parity_batch
from rollout.engine import Rollout
from tests.rollouts import tiny_rollout

G = 3


@pytest.fixture
def hand() -> RolloutBatch:
    """2 prompts x G=3. Prompt 0: ids [pad, 11, 12], one image of 2x2 = 4 patches (pixel rows 0..3); prompt 1: ids
    [21, 22, 23], two images of 2x1 and 1x2 = 2 + 2 patches (pixel rows 4..7). Completion row r continues prompt r // 3.
    """
    return RolloutBatch(
        prompt_ids=torch.tensor([[0, 11, 12], [21, 22, 23]]),  # [2, 3]
        prompt_mask=torch.tensor([[0, 1, 1], [1, 1, 1]]),
        completion_ids=torch.tensor([[1, 2], [3, 4], [5, 0], [6, 7], [8, 0], [9, 9]]),  # [6, 2]
        completion_attention=torch.tensor([[1, 1], [1, 1], [1, 0], [1, 1], [1, 0], [1, 1]]),
        completion_mask=torch.tensor([[1, 1], [1, 1], [1, 0], [1, 1], [1, 0], [0, 1]]),  # row 5: a masked vision token
        advantages=torch.arange(6.0),
        rewards=torch.arange(6.0) * 10,
        images_per_prompt=[1, 2],
        model_inputs={
            "pixel_values": torch.arange(8.0)[:, None],  # [8 patches, D=1]: each patch's value is its index
            "image_grid_thw": torch.tensor([[1, 2, 2], [1, 2, 1], [1, 1, 2]]),  # [3 images, 3]
            "mm_token_type_ids": torch.tensor([[0, 1, 0], [1, 1, 0]]),  # [2, 3]
        },
        ref_logps=-torch.arange(12.0).view(6, 2),
        group_size=G,
    )


def test_counts(hand):
    assert (hand.num_rows, hand.num_groups, hand.group_size) == (6, 2, 3)
    assert (hand.prompt_length, hand.completion_length) == (3, 2)


def test_rows_expand_each_prompt_in_front_of_its_completions(hand):
    rows = hand.rows(0, 6)  # the layout the engines used to return: one prompt copy per completion
    p0, p1 = [0, 11, 12], [21, 22, 23]
    assert rows["input_ids"].tolist() == [p0 + [1, 2], p0 + [3, 4], p0 + [5, 0], p1 + [6, 7], p1 + [8, 0], p1 + [9, 9]]
    m0, m1 = [0, 1, 1], [1, 1, 1]
    assert rows["attention_mask"].tolist() == [
        m0 + [1, 1],
        m0 + [1, 1],
        m0 + [1, 0],
        m1 + [1, 1],
        m1 + [1, 0],
        m1 + [1, 1],  # the masked vision token stays attended
    ]
    assert rows["mm_token_type_ids"].tolist() == [[0, 1, 0, 0, 0]] * 3 + [[1, 1, 0, 0, 0]] * 3
    assert rows["pixel_values"][:, 0].tolist() == [0, 1, 2, 3] * 3 + [4, 5, 6, 7] * 3  # each row's own images
    assert rows["image_grid_thw"].tolist() == [[1, 2, 2]] * 3 + [[1, 2, 1], [1, 1, 2]] * 3
    assert rows["completion_mask"].tolist() == hand.completion_mask.tolist()
    assert rows["advantages"].tolist() == [0, 1, 2, 3, 4, 5] and rows["old_logps"] is None
    assert torch.equal(rows["ref_logps"], hand.ref_logps)


def test_rows_past_the_end_are_cut(hand):
    rows = hand.rows(4, 8)  # the last micro-batch: rows 4 and 5 of prompt 1
    assert rows["input_ids"].tolist() == [[21, 22, 23, 8, 0], [21, 22, 23, 9, 9]]
    assert rows["pixel_values"][:, 0].tolist() == [4, 5, 6, 7, 4, 5, 6, 7]


def test_groups_starting_inside_a_group_slice_prompts_directly(hand):
    groups = hand.groups(2, 5)  # row 2 (the end of prompt 0's group), rows 3 and 4 (prompt 1)
    assert groups["prompt_ids"].tolist() == [[0, 11, 12], [21, 22, 23]]
    assert groups["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert groups["prompt_index"].tolist() == [0, 1, 1]
    assert groups["completion_ids"].tolist() == [[5, 0], [6, 7], [8, 0]]
    assert groups["completion_attention"].tolist() == [[1, 0], [1, 1], [1, 0]]
    assert groups["completion_mask"].tolist() == [[1, 0], [1, 1], [1, 0]]
    assert groups["mm_token_type_ids"].tolist() == [[0, 1, 0], [1, 1, 0]]  # [U, P]
    assert groups["pixel_values"][:, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # each prompt's images once
    assert groups["image_grid_thw"].tolist() == [[1, 2, 2], [1, 2, 1], [1, 1, 2]]
    assert groups["advantages"].tolist() == [2, 3, 4]
    assert groups["ref_logps"].tolist() == [[-4, -5], [-6, -7], [-8, -9]]
    rows = hand.rows(2, 5)
    assert torch.equal(groups["input_ids"], rows["input_ids"])  # the per-row keys are there too
    assert torch.equal(groups["attention_mask"], rows["attention_mask"])


def test_groups_of_one_prompt(hand):
    groups = hand.groups(3, 8)  # prompt 1's group, asked past the end
    assert groups["prompt_ids"].tolist() == [[21, 22, 23]] and groups["prompt_index"].tolist() == [0, 0, 0]
    assert groups["pixel_values"][:, 0].tolist() == [4, 5, 6, 7]
    assert groups["image_grid_thw"].tolist() == [[1, 2, 1], [1, 1, 2]]


def test_select_groups_carry_their_prompts_images_and_rows(hand):
    picked = hand.select_groups([1, 0])  # out of order: prompt 1 (rows 3, 4, 5), then prompt 0 (rows 0, 1, 2)
    assert (picked.num_rows, picked.num_groups, picked.group_size) == (6, 2, 3)
    assert picked.prompt_ids.tolist() == [[21, 22, 23], [0, 11, 12]]
    assert picked.images_per_prompt == [2, 1]
    assert picked.model_inputs["pixel_values"][:, 0].tolist() == [4, 5, 6, 7, 0, 1, 2, 3]
    assert picked.model_inputs["image_grid_thw"].tolist() == [[1, 2, 1], [1, 1, 2], [1, 2, 2]]
    assert picked.model_inputs["mm_token_type_ids"].tolist() == [[1, 1, 0], [0, 1, 0]]
    assert picked.advantages.tolist() == [3, 4, 5, 0, 1, 2] and picked.rewards.tolist() == [30, 40, 50, 0, 10, 20]
    assert picked.old_logps is None and picked.ref_logps[:, 0].tolist() == [-6, -8, -10, 0, -2, -4]
    want, got = hand.rows(0, 6), picked.rows(0, 6)
    order = [3, 4, 5, 0, 1, 2]
    for key in ("input_ids", "attention_mask", "completion_mask", "mm_token_type_ids"):
        assert torch.equal(got[key], want[key][order]), key
    assert got["pixel_values"][:, 0].tolist() == [4, 5, 6, 7] * 3 + [0, 1, 2, 3] * 3
    one = hand.select_groups([1])
    assert one.num_rows == 3 and one.groups(0, 3)["prompt_index"].tolist() == [0, 0, 0]


def test_to_moves_every_tensor(hand):
    moved = hand.to(torch.device("meta"))
    assert moved.prompt_ids.is_meta and moved.completion_attention.is_meta and moved.ref_logps.is_meta
    assert all(v.is_meta for v in moved.model_inputs.values()) and moved.images_per_prompt == [1, 2]


def test_prompt_and_completion_counts_must_agree(hand):
    with pytest.raises(ValueError, match="2 prompts x group_size 2 != 6 completions"):
        RolloutBatch(**{**vars(hand), "group_size": 2})
    with pytest.raises(ValueError, match="images_per_prompt has 1 entries for 2 prompts"):
        RolloutBatch(**{**vars(hand), "images_per_prompt": [3]})


def test_from_rollout_masks_vision_tokens_inside_completions():
    V, PAD = 7, 0  # a vision token id, the pad id
    out = Rollout(
        prompt_ids=torch.tensor([[5, 6]]),  # [1, 2]
        prompt_mask=torch.tensor([[1, 1]]),
        completion_ids=torch.tensor([[V, 3, 9], [4, 9, PAD]]),  # [2, 3]; 9 ends a completion
        completion_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]),
        texts=["a", "b"],
        truncated=torch.tensor([False, False]),
        group_size=2,
        images_per_prompt=[0],
        engine_logps=torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, 0.0]]),
    )
    batch = RolloutBatch.from_rollout(
        out,
        advantages=torch.tensor([1.0, -1.0]),
        rewards=torch.tensor([1.0, 0.0]),
        temperature=0.0,
        truncated_sampling=True,
        vision_token_ids=[V],
        pad_token_id=PAD,
    )
    assert batch.vision_tokens_masked == 1
    assert batch.completion_ids.tolist() == [[PAD, 3, 9], [4, 9, PAD]]
    assert batch.completion_mask.tolist() == [[0, 1, 1], [1, 1, 0]]  # out of the loss
    assert batch.completion_attention.tolist() == [[1, 1, 1], [1, 1, 0]]  # still attended
    assert batch.rows(0, 2)["input_ids"].tolist() == [[5, 6, PAD, 3, 9], [5, 6, 4, 9, PAD]]
    assert batch.temperature == 1.0 and batch.truncated_sampling and batch.group_size == 2
    assert batch.images_per_prompt == [0] and torch.equal(batch.engine_logps, out.engine_logps)
    assert batch.groups(0, 2)["prompt_index"].tolist() == [0, 0] and "pixel_values" not in batch.groups(0, 2)


def test_a_real_rollout_keeps_each_prompt_once(tiny_checkpoint, processor):
    # three prompts with different image sizes, so each group's pixel patches differ in number
    questions = ["Colour?", "How many shapes are there?", "Shape?"]
    images = [
        Image.new("RGB", size, colour) for size, colour in [((56, 56), "red"), ((112, 84), "blue"), ((84, 56), "green")]
    ]
    _, out = tiny_rollout(tiny_checkpoint, processor, questions, images, 2, max_new_tokens=5)
    tok = processor.tokenizer
    batch = RolloutBatch.from_rollout(
        out,
        advantages=torch.arange(6.0),
        rewards=torch.zeros(6),
        temperature=1.0,
        truncated_sampling=False,
        vision_token_ids=[tok.convert_tokens_to_ids("<|image_pad|>")],
        pad_token_id=tok.pad_token_id,
    )
    assert batch.num_groups == 3 and batch.num_rows == 6 and batch.images_per_prompt == [1, 1, 1]
    grids = out.model_inputs["image_grid_thw"]  # [3 images, 3]
    assert len({int(g.prod()) for g in grids}) == 3  # the prompts' images really differ in patch count
    rows = batch.rows(0, 6)
    assert torch.equal(rows["image_grid_thw"], grids.repeat_interleave(2, 0))  # each row's image, for its forward
    assert torch.equal(rows["input_ids"][:, : batch.prompt_length], out.prompt_ids.repeat_interleave(2, 0))
    picked = batch.select_groups([2, 0])
    assert torch.equal(picked.groups(0, 4)["image_grid_thw"], grids[[2, 0]])
    want = torch.cat([batch.rows(4, 6)["pixel_values"], batch.rows(0, 2)["pixel_values"]])
    assert torch.equal(picked.rows(0, 4)["pixel_values"], want)


def test_parity_batch_compares_only_the_text_both_sides_saw(tokenizer):
    """A vision token sampled mid-completion is padded for the policy; from there on the two texts differ."""
    v = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    out = Rollout(
        prompt_ids=torch.tensor([[5, 6]]),  # [1, 2]
        prompt_mask=torch.tensor([[1, 1]]),
        completion_ids=torch.tensor([[3, v, 4, 8], [4, 8, 9, 9]]),  # [2, 4]
        completion_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        texts=["a", "b"],
        truncated=torch.tensor([False, False]),
        group_size=2,
        images_per_prompt=[0],
        engine_logps=torch.zeros(2, 4),
    )
    batch, valid = parity_batch(out, tokenizer)
    assert batch.completion_ids[0, 1] == tokenizer.pad_token_id and batch.advantages.tolist() == [0.0, 0.0]
    assert valid.tolist() == [[True, False, False, False], [True, True, True, False]]
