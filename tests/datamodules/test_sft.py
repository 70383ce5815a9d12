import hashlib
import json
from pathlib import Path

import pytest

from datamodules.config import SFTExampleConfig, SFTLoaderConfig
from datamodules.sft import IGNORE_INDEX, SFTDataModule, ShareGPTDataset, ShareGPTFormat, piece_labels
from tests.conftest import FAMILIES

PIXELS_56 = SFTExampleConfig(min_pixels=56 * 56, max_pixels=56 * 56)  # one 56 x 56 image: 2 x 2 image tokens


def test_piece_labels_by_hand():
    # pieces: prompt [1 2 S] | reply [5 6 E N] | prompt [7 S] | reply [8 E N]; E = <|im_end|>, N = its newline
    E, N, S, X = 99, 198, 90, IGNORE_INDEX
    pieces, replies = [[1, 2, S], [5, 6, E, N], [7, S], [8, E, N]], [False, True, False, True]
    assert piece_labels(pieces, replies, E) == [X, X, X, 5, 6, E, N, X, X, 8, E, N]  # LLaMA-Factory's labels
    assert piece_labels(pieces, replies, E, mask_after_end=True) == [X, X, X, 5, 6, E, X, X, X, 8, E, X]
    assert piece_labels([[1], [5, 6]], [False, True], E, mask_after_end=True) == [X, 5, 6]  # no end: all kept


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_cover_only_assistant_replies(synthetic_dir, family_checkpoint, family):
    from transformers import AutoProcessor

    from datamodules.images import checkpoint_image_factor

    processor = AutoProcessor.from_pretrained(family_checkpoint(family))
    side = checkpoint_image_factor(family_checkpoint(family)) * 2  # 56, or 64 for Qwen3-VL: 2x2 image tokens
    examples = SFTExampleConfig(min_pixels=side**2, max_pixels=side**2)
    ds = ShareGPTDataset(synthetic_dir / "train_sft_caption.jsonl", processor, examples=examples)
    item = ds[0]
    learned = processor.tokenizer.decode(item["input_ids"][item["labels"] != IGNORE_INDEX])
    row = json.loads((synthetic_dir / "train_sft_caption.jsonl").read_text().splitlines()[0])
    assert learned == row["conversations"][1]["value"] + "<|im_end|>\n"
    assert (item["input_ids"] == processor.image_token_id).sum().item() == 4  # one image -> 2x2 tokens
    assert item["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert item["attention_mask"].all() and len(item["attention_mask"]) == len(item["input_ids"]) == len(item["labels"])
    prompt = processor.tokenizer.decode(item["input_ids"][item["labels"] == IGNORE_INDEX])
    assert prompt.startswith("<|im_start|>system\n")  # the row's own system turn (a system prompt in every row)


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
    item = ShareGPTDataset(tmp_path / "d.jsonl", processor, fmt, PIXELS_56)[0]
    learned = processor.tokenizer.decode(item["input_ids"][item["labels"] != IGNORE_INDEX])
    assert learned == "blue<|im_end|>\nyes<|im_end|>\n"


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


def test_missing_or_unreadable_images_stop_the_load_or_drop_their_rows(tmp_path, processor):
    """The scan at load (``datamodules.scan``) checks every row's images; the rows kept give the same tokens."""
    from PIL import Image

    from datamodules.errors import BadDataError

    Image.new("RGB", (56, 56), "blue").save(tmp_path / "x.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    turns = [{"from": "human", "value": "<image>colour?"}, {"from": "gpt", "value": "blue"}]
    rows = [{"conversations": turns, "images": images} for images in (["x.png"], ["gone.png"], ["x.png", "bad.png"])]
    rows.append({"conversations": [{"from": "human", "value": "no image?"}, {"from": "gpt", "value": "none"}]})
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BadDataError) as error:
        ShareGPTDataset(tmp_path / "d.jsonl", processor, examples=PIXELS_56)
    assert str(error.value) == (
        f"{tmp_path / 'd.jsonl'} row index 1, column 'images': image file not found: gone.png (under {tmp_path}) "
        "(and 1 more bad row: missing_image 1, bad_image 1; skip_bad_rows=true skips them)"
    )
    skipping = SFTExampleConfig(min_pixels=56 * 56, max_pixels=56 * 56, skip_bad_rows=True)
    ds = ShareGPTDataset(tmp_path / "d.jsonl", processor, examples=skipping)
    assert len(ds) == 2 and [(r.reason, r.index) for r in ds.dropped] == [("missing_image", 1), ("bad_image", 2)]
    (tmp_path / "good.jsonl").write_text("".join(json.dumps(rows[i]) + "\n" for i in (0, 3)))
    clean = ShareGPTDataset(tmp_path / "good.jsonl", processor, examples=PIXELS_56)
    for kept, expected in zip((ds[0], ds[1]), (clean[0], clean[1])):
        assert kept.keys() == expected.keys() and all((kept[k] == expected[k]).all() for k in kept)


def test_datamodule_batches_pad_right_and_skip_long(synthetic_dir, tiny_checkpoint):
    dm = SFTDataModule(
        str(synthetic_dir / "train_sft_think.jsonl"),
        model_name_or_path=str(tiny_checkpoint),
        examples=PIXELS_56,
        loader=SFTLoaderConfig(batch_size=3),
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
        examples=SFTExampleConfig(min_pixels=56 * 56, max_pixels=56 * 56, max_length=10),
        loader=SFTLoaderConfig(batch_size=3),
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
        examples=SFTExampleConfig(min_pixels=56 * 56, max_pixels=56 * 56, max_length=1024),
        loader=SFTLoaderConfig(batch_size=6),
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
            assert learned_text(processor, item) == row["conversations"][1]["value"] + "<|im_end|>\n"
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
        ShareGPTDataset(entry.files, processor, entry.fmt, SFTExampleConfig(image_root=str(root)), name=entry.name)


def test_mulberry_images_as_one_path_string_also_load(tmp_path, processor):
    root = copy_cold(tmp_path)
    rows = json.loads((root / f"{COLD_NAMES[1]}.json").read_text())
    for row in rows:
        row["images"] = row["images"][0]
    (root / f"{COLD_NAMES[1]}.json").write_text(json.dumps(rows))
    from datamodules.sft import read_dataset_info

    entry = read_dataset_info(root, [COLD_NAMES[1]])[0]
    examples = SFTExampleConfig(min_pixels=56 * 56, max_pixels=56 * 56, image_root=str(root))
    ds = ShareGPTDataset(entry.files, processor, entry.fmt, examples, name=entry.name)
    assert ds[0]["image_grid_thw"].tolist() == [[1, 4, 4]]


def test_num_samples_draws_every_row_then_repeats(tmp_path, processor):
    from datamodules.sft import read_dataset_info

    root = copy_cold(tmp_path, vision_r1_mulberry_sft_full={"num_samples": 5})
    entry = read_dataset_info(root, [COLD_NAMES[1]])[0]
    ds = ShareGPTDataset(
        entry.files,
        processor,
        entry.fmt,
        SFTExampleConfig(min_pixels=56 * 56, max_pixels=56 * 56, image_root=str(root)),
        name=entry.name,
        num_samples=entry.num_samples,
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
    three = SFTLoaderConfig(batch_size=3)
    strict = SFTDataModule(str(tmp_path / "d.jsonl"), model_name_or_path=str(tiny_checkpoint), loader=three)
    with pytest.raises(ValueError, match=r"d\.jsonl: cannot be read as json: line 2 is not valid JSON"):
        strict.setup("fit")
    dm = SFTDataModule(
        str(tmp_path / "d.jsonl"),
        model_name_or_path=str(tiny_checkpoint),
        examples=SFTExampleConfig(skip_bad_rows=True),
        loader=three,
    )
    with caplog.at_level("WARNING"):
        dm.setup("fit")
    assert "skipping 1 unreadable line(s)" in caplog.text and "line 2" in caplog.text
    batch = next(iter(dm.train_dataloader()))
    assert batch["num_examples"] == 2 and batch["skipped"] == {"bad_row": 1}
    assert batch["skipped_messages"][0].startswith(f"{tmp_path / 'd.jsonl'}: line 2 is not valid JSON")


LLAMAFACTORY = FIXTURES / "llamafactory"  # LLaMA-Factory's own output on hand-made rows: see its README.md


@pytest.fixture(scope="module")
def released_bounds_checkpoint(tmp_path_factory):
    """Qwen's tokenizer and processor with Qwen2.5-VL's released pixel bounds (3136 to 12845056): the checkpoint
    ``tests/fixtures/llamafactory/goldens.json`` was made with."""
    from tools.tiny_model import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("released"), min_pixels=3136, max_pixels=12845056)


def pixel_digest(pixel_values) -> dict:
    """As ``tests/fixtures/llamafactory/make_goldens.py`` digests LLaMA-Factory's pixel values."""
    array = pixel_values.float().contiguous().numpy().astype("<f4")
    return {
        "shape": list(array.shape),
        "sum": float(array.astype("float64").sum()),
        "sha256": hashlib.sha256(array.tobytes()).hexdigest(),
    }


def llamafactory_rows(checkpoint, **options) -> tuple[SFTDataModule, dict[str, ShareGPTDataset]]:
    """The fixture's rows through the cold-start path: ``dataset_dir`` + Vision-R1's two entries, our defaults."""
    dm = SFTDataModule(
        dataset_dir=str(LLAMAFACTORY / "vision_r1_cold"),
        datasets=COLD_NAMES,
        model_name_or_path=str(checkpoint),
        examples=SFTExampleConfig(max_length=16384, **options),
    )
    dm.setup("fit")
    return dm, dict(zip(COLD_NAMES, dm.datasets["train"].datasets))


def test_cold_start_examples_equal_llamafactory_token_for_token(released_bounds_checkpoint):
    goldens = json.loads((LLAMAFACTORY / "goldens.json").read_text())
    made, settings = goldens["header"], goldens["header"]["settings"]
    assert made["versions"]["llamafactory"] == "0.9.5" and settings["template"] == "qwen2_vl"
    assert settings["train_on_prompt"] is False
    dm, parts = llamafactory_rows(released_bounds_checkpoint)  # no options: the defaults are LLaMA-Factory's
    examples = dm.hparams.examples  # as a checkpoint holds it
    assert (
        examples["min_pixels"] == settings["image_min_pixels"]
        and examples["max_pixels"] == settings["image_max_pixels"]
    )
    assert dict(dm.processor.image_processor.size) == made["processor_size"]
    assert len(goldens["rows"]) == sum(len(ds) for ds in parts.values()) == 8
    for row in goldens["rows"]:
        item, where = parts[row["dataset"]][row["index"]], f"{row['dataset']} row {row['index']}"
        assert item["input_ids"].tolist() == row["input_ids"], where
        assert item["labels"].tolist() == row["labels"], where
        assert item["image_grid_thw"].tolist() == row["image_grid_thw"], where
        assert pixel_digest(item["pixel_values"]) == row["pixel_values"], where
        assert item["attention_mask"].tolist() == [1] * len(row["input_ids"])
    image_tokens = {
        (name, i): int((parts[name][i]["input_ids"] == dm.processor.image_token_id).sum())
        for name, i in [(COLD_NAMES[0], 0), (COLD_NAMES[1], 0)]
    }
    # 1280x720 and 812x728 at image_max_pixels 589824: more than 589824 / 784 = 752 tokens, as LLaMA-Factory gives
    assert image_tokens == {(COLD_NAMES[0], 0): 777, (COLD_NAMES[1], 0): 754}


def test_the_departures_are_options_off_by_default(released_bounds_checkpoint):
    _, default = llamafactory_rows(released_bounds_checkpoint)
    dm, departed = llamafactory_rows(released_bounds_checkpoint, mask_newline_after_reply=True, image_resize="qwen")
    tok, name = dm.processor.tokenizer, COLD_NAMES[1]
    multi_turn = json.loads((LLAMAFACTORY / "vision_r1_cold" / f"{name}.json").read_text())[2]["conversations"]
    replies = [turn["value"] for turn in multi_turn[1::2]]
    assert tok.decode([t for t in default[name][2]["labels"].tolist() if t != IGNORE_INDEX]) == "".join(
        r + "<|im_end|>\n" for r in replies
    )
    assert tok.decode([t for t in departed[name][2]["labels"].tolist() if t != IGNORE_INDEX]) == "".join(
        r + "<|im_end|>" for r in replies
    )
    # Qwen's rule capped at max_pixels: 1280x720 -> 1008x560 (720 tokens), 812x728 -> 784x700 (700 tokens)
    assert departed[COLD_NAMES[0]][0]["image_grid_thw"].tolist() == [[1, 40, 72]]
    assert departed[name][0]["image_grid_thw"].tolist() == [[1, 50, 56]]
    assert default[COLD_NAMES[0]][0]["image_grid_thw"].tolist() == [[1, 42, 74]]
    with pytest.raises(ValueError, match="image_resize must be"):
        SFTExampleConfig(image_resize="lf")
