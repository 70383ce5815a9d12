"""``RolloutBatch.select_groups`` (dynamic sampling's kept groups) on a real rollout of the tiny model."""

import pytest
import torch
from PIL import Image

from rollout.batch import RolloutBatch
from tests.rollouts import tiny_rollout

G = 2


@pytest.fixture(scope="module")
def batch(tiny_checkpoint, processor):
    # three prompts with different image sizes, so each group's pixel patches differ in number
    questions = ["Colour?", "How many shapes are there?", "Shape?"]
    images = [
        Image.new("RGB", size, colour) for size, colour in [((56, 56), "red"), ((112, 84), "blue"), ((84, 56), "green")]
    ]
    _, out = tiny_rollout(tiny_checkpoint, processor, questions, images, G, max_new_tokens=5)
    n = 3 * G
    return RolloutBatch(
        input_ids=torch.cat([out.prompt_ids, out.completion_ids], 1),
        attention_mask=torch.cat([out.prompt_mask, out.completion_mask], 1),
        completion_mask=out.completion_mask,
        advantages=torch.arange(n, dtype=torch.float32),
        rewards=torch.arange(n, dtype=torch.float32) * 10,
        images_per_row=[1] * n,
        model_inputs=out.model_inputs,
        ref_logps=torch.randn(n, out.completion_ids.shape[1]),
        group_size=G,
    )


def test_selected_groups_carry_their_own_rows_and_images(batch):
    picked = batch.select_groups([2, 0])  # out of order: rows 4, 5, 0, 1
    rows = [4, 5, 0, 1]
    assert picked.num_rows == 4 and picked.group_size == G
    assert torch.equal(picked.input_ids, batch.input_ids[rows])
    assert picked.advantages.tolist() == [4.0, 5.0, 0.0, 1.0] and picked.rewards.tolist() == [40.0, 50.0, 0.0, 10.0]
    assert torch.equal(picked.ref_logps, batch.ref_logps[rows]) and picked.old_logps is None
    assert torch.equal(picked.model_inputs["mm_token_type_ids"], batch.model_inputs["mm_token_type_ids"][rows])
    for new, old in enumerate(rows):  # every row's pixel values and grid are its own
        a, b = picked.rows(new, new + 1), batch.rows(old, old + 1)
        assert torch.equal(a["pixel_values"], b["pixel_values"])
        assert torch.equal(a["image_grid_thw"], b["image_grid_thw"])
    sizes = {int(batch.rows(r, r + 1)["image_grid_thw"].prod()) for r in (0, 2, 4)}
    assert len(sizes) == 3  # the groups' images really differ in patch count
    grouped = picked.groups(0, 4)  # the grouped forward still finds one prompt per group
    assert grouped["prompt_index"].tolist() == [0, 0, 1, 1]
