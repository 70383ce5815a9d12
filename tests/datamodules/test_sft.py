import json

import pytest

from datamodules.sft import IGNORE_INDEX, SFTDataModule, ShareGPTDataset, ShareGPTFormat, assistant_mask


def test_assistant_mask_by_hand():
    # ids: 1 2 | S A N | 5 6 E | 7 | S A N | 8 E ; start sequence [S, A, N], end E
    S, A, N, E = 90, 91, 92, 99
    ids = [1, 2, S, A, N, 5, 6, E, 7, S, A, N, 8, E]
    assert assistant_mask(ids, [S, A, N], E) == [False] * 5 + [True] * 3 + [False] * 4 + [True] * 2


def test_labels_cover_only_assistant_replies(synthetic_dir, processor):
    ds = ShareGPTDataset(synthetic_dir / "train_sft_caption.jsonl", processor, min_pixels=56 * 56, max_pixels=56 * 56)
    item = ds[0]
    learned = processor.tokenizer.decode(item["input_ids"][item["labels"] != IGNORE_INDEX])
    row = json.loads((synthetic_dir / "train_sft_caption.jsonl").read_text().splitlines()[0])
    assert learned == row["conversations"][1]["value"] + "<|im_end|>"
    assert (item["input_ids"] == 151655).sum().item() == 4  # 56x56 image -> 2x2 tokens
    assert item["image_grid_thw"].tolist() == [[1, 4, 4]]


def test_llama_factory_style_mapping_and_multi_turn(tmp_path, processor):
    from PIL import Image

    Image.new("RGB", (56, 56), "blue").save(tmp_path / "x.png")
    row = {"msgs": [{"role": "user", "content": "<image>colour?"}, {"role": "assistant", "content": "blue"},
                    {"role": "user", "content": "sure?"}, {"role": "assistant", "content": "yes"}],
           "pics": ["x.png"]}  # fmt: skip
    (tmp_path / "d.jsonl").write_text(json.dumps(row) + "\n")
    fmt = ShareGPTFormat(messages="msgs", images="pics", system=None, role_tag="role", content_tag="content",
                         user_tag="user", assistant_tag="assistant")  # fmt: skip
    item = ShareGPTDataset(tmp_path / "d.jsonl", processor, fmt, min_pixels=56 * 56, max_pixels=56 * 56)[0]
    learned = processor.tokenizer.decode(item["input_ids"][item["labels"] != IGNORE_INDEX])
    assert learned == "blue<|im_end|>yes<|im_end|>"


def test_bad_rows_name_the_row(tmp_path, processor):
    rows = [{"conversations": [{"from": "human", "value": "hi"}]},
            {"conversations": [{"from": "robot", "value": "hi"}, {"from": "gpt", "value": "x"}]}]  # fmt: skip
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = ShareGPTDataset(tmp_path / "d.jsonl", processor, ShareGPTFormat(images=None, system=None))
    with pytest.raises(ValueError, match="row 0.*no assistant turn"):
        ds[0]
    with pytest.raises(ValueError, match="row 1.*robot"):
        ds[1]


def test_datamodule_batches_pad_right_and_skip_long(synthetic_dir, tiny_checkpoint):
    dm = SFTDataModule(str(synthetic_dir / "train_sft_think.jsonl"), model_name_or_path=str(tiny_checkpoint),
                       batch_size=3, min_pixels=56 * 56, max_pixels=56 * 56)  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape and batch["num_examples"] == 3
    assert batch["image_grid_thw"].shape == (3, 3)
    assert batch["mm_token_type_ids"].shape == batch["input_ids"].shape
    assert (batch["mm_token_type_ids"].bool() == (batch["input_ids"] == 151655)).all()
    short = SFTDataModule(str(synthetic_dir / "train_sft_think.jsonl"), model_name_or_path=str(tiny_checkpoint),
                          batch_size=3, max_length=10, min_pixels=56 * 56, max_pixels=56 * 56)  # fmt: skip
    short.setup("fit")
    assert next(iter(short.train_dataloader()))["skipped"] == {"too_long": 3}
