import json
from pathlib import Path

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
    assert (item["input_ids"] == processor.image_token_id).sum().item() == 4  # 56x56 image -> 2x2 tokens
    assert item["image_grid_thw"].tolist() == [[1, 4, 4]]


def test_llama_factory_style_mapping_and_multi_turn(tmp_path, processor):
    from PIL import Image

    Image.new("RGB", (56, 56), "blue").save(tmp_path / "x.png")
    row = {
        "msgs": [
            {"role": "user", "content": "<image>colour?"},
            {"role": "assistant", "content": "blue"},
            {"role": "user", "content": "sure?"},
            {"role": "assistant", "content": "yes"},
        ],
        "pics": ["x.png"],
    }
    (tmp_path / "d.jsonl").write_text(json.dumps(row) + "\n")
    fmt = ShareGPTFormat(
        messages="msgs",
        images="pics",
        system=None,
        role_tag="role",
        content_tag="content",
        user_tag="user",
        assistant_tag="assistant",
    )
    item = ShareGPTDataset(tmp_path / "d.jsonl", processor, fmt, min_pixels=56 * 56, max_pixels=56 * 56)[0]
    learned = processor.tokenizer.decode(item["input_ids"][item["labels"] != IGNORE_INDEX])
    assert learned == "blue<|im_end|>yes<|im_end|>"


def test_bad_rows_name_the_row(tmp_path, processor):
    rows = [
        {"conversations": [{"from": "human", "value": "hi"}]},
        {"conversations": [{"from": "robot", "value": "hi"}, {"from": "gpt", "value": "x"}]},
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = ShareGPTDataset(tmp_path / "d.jsonl", processor, ShareGPTFormat(images=None, system=None))
    with pytest.raises(ValueError, match="row index 0.*no assistant turn"):
        ds[0]
    with pytest.raises(ValueError, match="row index 1.*robot"):
        ds[1]


def test_datamodule_batches_pad_right_and_skip_long(synthetic_dir, tiny_checkpoint):
    dm = SFTDataModule(
        str(synthetic_dir / "train_sft_think.jsonl"),
        model_name_or_path=str(tiny_checkpoint),
        batch_size=3,
        min_pixels=56 * 56,
        max_pixels=56 * 56,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape and batch["num_examples"] == 3
    assert batch["image_grid_thw"].shape == (3, 3)
    assert batch["mm_token_type_ids"].shape == batch["input_ids"].shape
    image_token_id = dm.processor.image_token_id
    assert (batch["mm_token_type_ids"].bool() == (batch["input_ids"] == image_token_id)).all()
    short = SFTDataModule(
        str(synthetic_dir / "train_sft_think.jsonl"),
        model_name_or_path=str(tiny_checkpoint),
        batch_size=3,
        max_length=10,
        min_pixels=56 * 56,
        max_pixels=56 * 56,
    )
    short.setup("fit")
    assert next(iter(short.train_dataloader()))["skipped"] == {"too_long": 3}


FIXTURES = Path(__file__).parents[1] / "fixtures"
COLD = FIXTURES / "vision_r1_cold"
COLD_NAMES = ["vision_r1_llava_cot_full", "vision_r1_mulberry_sft_full"]


def learned_text(processor, item) -> str:
    return processor.tokenizer.decode(item["input_ids"][item["labels"] != IGNORE_INDEX])


def test_vision_r1_cold_as_published_reads_both_files_each_with_its_own_mapping(tiny_checkpoint, processor):
    dm = SFTDataModule(
        dataset_dir=str(COLD),
        datasets=COLD_NAMES,
        model_name_or_path=str(tiny_checkpoint),
        batch_size=6,
        min_pixels=56 * 56,
        max_pixels=56 * 56,
        max_length=1024,
    )
    dm.setup("fit")
    llava, mulberry = dm.datasets["train"].datasets
    assert (llava.fmt.images, llava.fmt.user_tag, llava.fmt.assistant_tag) == ("image", "human", "gpt")
    assert (mulberry.fmt.images, mulberry.fmt.user_tag, mulberry.fmt.assistant_tag) == ("images", "user", "assistant")
    assert llava.fmt.extra_user_tags == [] and llava.fmt.system is None  # LLaMA-Factory's defaults, nothing added
    published = {name: json.loads((COLD / f"{name}.json").read_text()) for name in COLD_NAMES}
    for ds, name in ((llava, COLD_NAMES[0]), (mulberry, COLD_NAMES[1])):
        for i, row in enumerate(published[name]):
            item = ds[i]
            assert learned_text(processor, item) == row["conversations"][1]["value"] + "<|im_end|>"
            assert item["image_grid_thw"].tolist() == [[1, 4, 4]]  # 56x56 -> 2x2 tokens, resolved under dataset_dir
    batch = next(iter(dm.train_dataloader()))
    assert batch["num_examples"] == 6 and batch["skipped"] == {}


def test_the_cold_start_recipe_reads_the_fixture_with_only_dataset_dir(tiny_checkpoint, tmp_path):
    from vlrl_cli import main

    config = Path(__file__).parents[2] / "configs" / "vision_r1_cold_start.yaml"
    cli = main(
        [
            "-c",
            str(config),
            f"--data.init_args.dataset_dir={COLD}",
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        run=False,
    )
    cli.datamodule.setup("fit")
    assert [d.source for d in cli.datamodule.datasets["train"].datasets] == [
        str(COLD / f"{name}.json") for name in COLD_NAMES
    ]


def copy_cold(tmp_path, **edits) -> Path:
    """The Vision-R1-cold fixture in ``tmp_path`` with ``dataset_info.json`` entries updated by ``edits``."""
    import shutil

    out = tmp_path / "cold"
    shutil.copytree(COLD, out)
    info = json.loads((out / "dataset_info.json").read_text())
    for name, entry in edits.items():
        info[name] = entry if entry is None else {**info.get(name, {}), **entry}
    (out / "dataset_info.json").write_text(json.dumps({k: v for k, v in info.items() if v is not None}))
    return out


def test_dataset_info_problems_are_errors_naming_the_file_and_key(tmp_path):
    from datamodules.sft import read_dataset_info

    with pytest.raises(KeyError, match=r"dataset_info\.json: no dataset named 'nope'.*vision_r1_llava_cot_full"):
        read_dataset_info(COLD, ["nope"])
    with pytest.raises(FileNotFoundError, match=r"dataset_info\.json: not found"):
        read_dataset_info(tmp_path, COLD_NAMES)
    cases = [
        ({"formatting": "alpaca"}, ValueError, r"'x'.*formatting 'alpaca'"),
        ({"formatting": None}, ValueError, r"formatting None"),
        ({"hf_hub_url": "a/b"}, ValueError, r"'x'.*hf_hub_url.*only local files"),
        ({"file_name": "missing.json"}, FileNotFoundError, r"'x'.*file_name 'missing\.json' not found"),
        ({"colums": {}}, ValueError, r"'x'.*unknown key\(s\) \['colums'\]"),
        ({"columns": {"videos": "v"}}, ValueError, r"'x'.*columns \['videos'\] not supported"),
        ({"tags": {"role": "from"}}, ValueError, r"'x'.*tags \['role'\] not supported"),
        ({"ranking": True}, ValueError, r"'x'.*ranking"),
    ]
    for i, (entry, error, pattern) in enumerate(cases):
        base = {"file_name": "vision_r1_mulberry_sft_full.json", "formatting": "sharegpt"}
        root = copy_cold(tmp_path / str(i), x={**base, **entry})
        with pytest.raises(error, match=pattern):
            read_dataset_info(root, ["x"])
    no_format = copy_cold(tmp_path / "nf", x={"file_name": "vision_r1_mulberry_sft_full.json"})
    with pytest.raises(ValueError, match=r"formatting 'alpaca' \(the default\)"):
        read_dataset_info(no_format, ["x"])


def test_a_column_the_entry_names_must_exist(tmp_path, processor):
    from datamodules.sft import read_dataset_info

    root = copy_cold(
        tmp_path,
        vision_r1_llava_cot_full={"columns": {"messages": "conversations", "images": "image", "system": "system"}},
    )
    entry = read_dataset_info(root, [COLD_NAMES[0]])[0]
    with pytest.raises(KeyError, match=r"vision_r1_llava_cot_full.*columns\.system names 'system'"):
        ShareGPTDataset(entry.files, processor, entry.fmt, name=entry.name, image_root=root)


def test_mulberry_images_as_one_path_string_also_load(tmp_path, processor):
    root = copy_cold(tmp_path)
    rows = json.loads((root / f"{COLD_NAMES[1]}.json").read_text())
    for row in rows:
        row["images"] = row["images"][0]
    (root / f"{COLD_NAMES[1]}.json").write_text(json.dumps(rows))
    from datamodules.sft import read_dataset_info

    entry = read_dataset_info(root, [COLD_NAMES[1]])[0]
    ds = ShareGPTDataset(
        entry.files, processor, entry.fmt, image_root=root, name=entry.name, min_pixels=56 * 56, max_pixels=56 * 56
    )
    assert ds[0]["image_grid_thw"].tolist() == [[1, 4, 4]]


def test_num_samples_draws_every_row_then_repeats(tmp_path, processor):
    from datamodules.sft import read_dataset_info

    root = copy_cold(tmp_path, vision_r1_mulberry_sft_full={"num_samples": 5})
    entry = read_dataset_info(root, [COLD_NAMES[1]])[0]
    ds = ShareGPTDataset(
        entry.files,
        processor,
        entry.fmt,
        image_root=root,
        name=entry.name,
        num_samples=entry.num_samples,
        min_pixels=56 * 56,
        max_pixels=56 * 56,
    )
    assert len(ds) == 5 and sorted(ds.rows[:3]) == [0, 1, 2] and all(0 <= r < 3 for r in ds.rows)


def test_train_data_and_datasets_are_exclusive():
    with pytest.raises(ValueError, match="not both"):
        SFTDataModule("a.jsonl", dataset_dir=str(COLD), datasets=COLD_NAMES)
    with pytest.raises(ValueError, match="set dataset_dir"):
        SFTDataModule(datasets=COLD_NAMES)
    with pytest.raises(ValueError, match="no training data"):
        SFTDataModule()
    with pytest.raises(ValueError, match="format applies to train_data"):
        SFTDataModule(dataset_dir=str(COLD), datasets=COLD_NAMES, format=ShareGPTFormat())


def test_turns_alternate_and_a_leading_system_turn_replaces_the_column(tmp_path, processor):
    rows = [
        {
            "system": "column",
            "conversations": [
                {"from": "system", "value": "turn"},
                {"from": "human", "value": "q"},
                {"from": "gpt", "value": "a"},
            ],
        },
        {
            "conversations": [
                {"from": "human", "value": "q"},
                {"from": "human", "value": "q"},
                {"from": "gpt", "value": "a"},
            ]
        },
        {
            "conversations": [
                {"from": "human", "value": "q"},
                {"from": "gpt", "value": "a"},
                {"from": "human", "value": "q2"},
            ]
        },
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = ShareGPTDataset(tmp_path / "d.jsonl", processor, ShareGPTFormat(images=None))
    text = processor.tokenizer.decode(ds[0]["input_ids"])
    assert "turn" in text and "column" not in text
    with pytest.raises(ValueError, match=r"row index 1.*alternate.*turn 1 is 'human'"):
        ds[1]
    with pytest.raises(ValueError, match=r"row index 2.*last turn is a user turn"):
        ds[2]


def test_a_broken_jsonl_line_is_named_or_skipped_and_counted(tmp_path, tiny_checkpoint, caplog):
    good = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    lines = [json.dumps(good), '{"conversations": [{"from": "human", "val', json.dumps(good)]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    strict = SFTDataModule(str(tmp_path / "d.jsonl"), model_name_or_path=str(tiny_checkpoint), batch_size=3)
    with pytest.raises(ValueError, match=r"d\.jsonl: cannot be read as json: line 2 is not valid JSON"):
        strict.setup("fit")
    dm = SFTDataModule(
        str(tmp_path / "d.jsonl"), model_name_or_path=str(tiny_checkpoint), batch_size=3, skip_bad_rows=True
    )
    with caplog.at_level("WARNING"):
        dm.setup("fit")
    assert "skipping 1 unreadable line(s)" in caplog.text and "line 2" in caplog.text
    batch = next(iter(dm.train_dataloader()))
    assert batch["num_examples"] == 2 and batch["skipped"] == {"bad_row": 1}
    assert batch["skipped_messages"][0].startswith(f"{tmp_path / 'd.jsonl'}: line 2 is not valid JSON")
