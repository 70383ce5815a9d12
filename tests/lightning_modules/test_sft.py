"""SFTModule's loss: the labelled-token cross-entropy against transformers' own label loss."""

import torch

from datamodules.config import SFTExampleConfig
from datamodules.sft import ShareGPTDataset, collate_sft
from lightning_modules.policy import load_policy
from lightning_modules.sft import labelled_token_loss


def test_labelled_token_loss_equals_hf_label_loss(tiny_checkpoint, synthetic_dir, processor):
    ds = ShareGPTDataset(
        synthetic_dir / "train_sft_think.jsonl", processor, examples=SFTExampleConfig(min_pixels=3136, max_pixels=3136)
    )
    batch = collate_sft([ds[0], ds[1]], processor.tokenizer.pad_token_id)
    model = load_policy(str(tiny_checkpoint), dtype="float32")
    keys = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
    inputs = {k: batch[k] for k in keys}
    ours, tokens = labelled_token_loss(model, inputs, batch["labels"], chunk_size=7)
    reference = model(**inputs, labels=batch["labels"]).loss
    assert tokens == int((batch["labels"][:, 1:] != -100).sum())
    assert torch.allclose(ours, reference, atol=1e-5)
