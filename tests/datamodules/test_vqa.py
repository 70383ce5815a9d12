import io
import json
from pathlib import Path

import pytest
from PIL import Image

from datamodules.config import LoaderConfig, PromptConfig
from datamodules.errors import BadDataError
from datamodules.images import BadImageError, load_image
from datamodules.vqa import SyntheticVQADataModule, VQADataset, collate_rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_synthetic_datamodule_yields_image_batches(tmp_path, tiny_checkpoint):
    dm = SyntheticVQADataModule(
        data_dir=str(tmp_path),
        train_size=8,
        val_size=4,
        image_size=56,
        model_name_or_path=str(tiny_checkpoint),
        prompts={"template": "caption"},  # as a notebook writes it: the image bounds stay unset, so image_size^2
        loader=LoaderConfig(batch_size=4),
    )
    assert (dm.template, dm.batch_size, dm.min_pixels, dm.max_pixels) == ("caption", 4, 56 * 56, 56 * 56)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["prompt"]) == 4 and batch["skipped"] == {}
    assert all(isinstance(im, Image.Image) and im.size == (56, 56) for ims in batch["images"] for im in ims)
    assert all("<info>" in p and p.endswith("<|im_start|>assistant\n") for p in batch["prompt"])
    val = next(iter(dm.val_dataloader()))
    assert set(val["id"]).isdisjoint(batch["id"])


def test_prompt_length_matches_the_processor(synthetic_dir, tokenizer, processor):
    ds = VQADataset(synthetic_dir / "train.jsonl", tokenizer, PromptConfig(min_pixels=56 * 56, max_pixels=112 * 112))
    item = ds[0]
    enc = processor(text=[item["prompt"]], images=item["images"], return_tensors="pt")
    assert item["prompt_length"] == enc["input_ids"].shape[1]


def test_geometry3k_row_with_images_list_and_default_type(tmp_path, tokenizer):
    Image.new("RGB", (60, 90), "white").save(tmp_path / "a.png")
    buf = io.BytesIO()
    Image.new("L", (70, 70), 128).save(buf, format="PNG")  # grayscale, converted to RGB
    rows = [{"images": ["a.png"], "problem": "<image>Find x.", "answer": "3"}]
    path = write_jsonl(tmp_path / "geo.jsonl", rows)
    with pytest.raises(KeyError, match="default_problem_type"):
        VQADataset(path, tokenizer)
    ds = VQADataset(path, tokenizer, PromptConfig(default_problem_type="math", template="think"))
    item = ds[0]
    assert item["problem_type"] == "math" and item["solution"] == "3" and item["images"][0].mode == "RGB"
    assert item["images"][0].size[0] % 28 == 0 and item["images"][0].size[1] % 28 == 0


def test_column_mapping_and_missing_columns(tmp_path, tokenizer):
    Image.new("RGB", (56, 56)).save(tmp_path / "a.png")
    path = write_jsonl(tmp_path / "d.jsonl", [{"pic": "a.png", "q": "How many?", "gt": "2", "kind": "numerical"}])
    with pytest.raises(KeyError, match="'image'"):
        VQADataset(path, tokenizer)
    columns = {"image": "pic", "problem": "q", "solution": "gt", "problem_type": "kind"}
    ds = VQADataset(path, tokenizer, PromptConfig(columns=columns))
    assert ds[0]["problem"] == "How many?"
    with pytest.raises(KeyError, match="'nope'"):
        VQADataset(path, tokenizer, PromptConfig(columns={"image": "nope"}))


def test_unknown_problem_type_fails_at_load_naming_the_row(tmp_path, tokenizer):
    Image.new("RGB", (56, 56)).save(tmp_path / "a.png")
    rows = [
        {"image": "a.png", "problem": "q", "solution": "1", "problem_type": "numerical"},
        {"image": "a.png", "problem": "q", "solution": "1", "problem_type": "astrology"},
    ]
    with pytest.raises(BadDataError, match=r"d\.jsonl row index 1, column 'problem_type': unknown problem_type 'astro"):
        VQADataset(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer)


def test_bad_images_are_found_at_load_and_a_corrupt_body_when_read(tmp_path, tokenizer):
    """Missing and unreadable files: found by the scan (``datamodules.scan``), before any row is read; a file whose
    header reads but whose body is cut off: found when its row is read, an error or a counted skip."""
    Image.new("RGB", (56, 56), "red").save(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:-30])  # header intact, body cut
    row = {"problem": "q", "solution": "1", "problem_type": "ocr"}
    images = ["missing.png", "corrupt.png", "good.png", "cut.png"]
    path = write_jsonl(tmp_path / "d.jsonl", [{"image": image, **row} for image in images])
    with pytest.raises(BadDataError, match=r"row index 0, column 'image': image file not found: missing\.png") as e:
        VQADataset(path, tokenizer)
    assert "(and 1 more bad row: missing_image 1, bad_image 1;" in str(e.value)
    skipping = VQADataset(path, tokenizer, PromptConfig(skip_bad_rows=True))
    assert len(skipping) == 2 and [r.reason for r in skipping.dropped] == ["missing_image", "bad_image"]
    batch = collate_rows([skipping[0], skipping[1]])
    assert batch["index"] == [2] and batch["skipped"] == {"bad_row": 1}
    assert batch["skipped_messages"][0].startswith(f"{path} row index 3: cannot read image cut.png")
    with pytest.raises(BadImageError, match=r"e\.jsonl row index 0: cannot read image cut\.png"):
        VQADataset(write_jsonl(tmp_path / "e.jsonl", [{"image": "cut.png", **row}]), tokenizer)[0]


def test_long_prompts_are_skipped_and_counted_never_cut(synthetic_dir, tokenizer):
    ds = VQADataset(
        synthetic_dir / "train.jsonl",
        tokenizer,
        PromptConfig(min_pixels=56 * 56, max_pixels=56 * 56, max_prompt_length=20),
    )
    batch = collate_rows([ds[i] for i in range(3)])
    assert batch["skipped"] == {"prompt_too_long": 3}
    strict = VQADataset(
        synthetic_dir / "train.jsonl", tokenizer, PromptConfig(max_prompt_length=20, skip_long_prompts=False)
    )
    with pytest.raises(ValueError, match="max_prompt_length"):
        strict[0]


def test_max_pixels_bounds_image_tokens(synthetic_dir, tokenizer):
    small = VQADataset(
        synthetic_dir / "train.jsonl", tokenizer, PromptConfig(min_pixels=28 * 28, max_pixels=28 * 28 * 4)
    )
    assert small[0]["images"][0].size == (56, 56)


def test_empty_dataset_is_an_error(tmp_path, tokenizer):
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"e\.jsonl: the dataset is empty"):
        VQADataset(tmp_path / "e.jsonl", tokenizer)
    (tmp_path / "broken.jsonl").write_text('{"image": "a.png", "problem": \n')
    with pytest.raises(ValueError, match=r"broken\.jsonl: cannot be read as json"):
        VQADataset(tmp_path / "broken.jsonl", tokenizer)


def test_image_sources_bytes_dict_pil(tmp_path):
    buf = io.BytesIO()
    Image.new("RGBA", (30, 30), (255, 0, 0, 0)).save(buf, format="PNG")
    for value in (buf.getvalue(), {"bytes": buf.getvalue(), "path": None}, Image.open(io.BytesIO(buf.getvalue()))):
        image = load_image(value, where="row index 0")
        assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    with pytest.raises(BadImageError, match="row index 3"):
        load_image(12, where="row index 3")


FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_visionary_r1_rows_as_its_readme_shows_them_load_without_mapping(tokenizer):
    path = FIXTURES / "visionary_r1" / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {"prompt", "solution", "problem_type", "image"} == set(rows[0])  # no problem column: it is in the prompt
    ds = VQADataset(path, tokenizer, PromptConfig(min_pixels=56 * 56, max_pixels=56 * 56))
    batch = collate_rows([ds[i] for i in range(len(ds))])
    assert batch["skipped"] == {}
    assert batch["problem"] == [r["prompt"][1]["content"][1]["text"] for r in rows]
    assert batch["problem_type"] == ["numerical", "multiple_choice", "free_form", "ocr"]
    assert batch["solution"] == [r["solution"] for r in rows]  # "<answer> 2 </answer>": the rewards strip the tags
    assert all(p.count("<|image_pad|>") == 1 and "stand-in" not in p for p in batch["prompt"])  # our system prompt


def test_visionary_r1_rows_with_embedded_images_load(tmp_path, tokenizer):
    from datasets import Dataset
    from datasets import Image as ImageFeature

    src = FIXTURES / "visionary_r1"
    rows = [json.loads(line) for line in (src / "train.jsonl").read_text().splitlines()]
    for row in rows:
        row["image"] = str(src / row["image"])
    Dataset.from_list(rows).cast_column("image", ImageFeature()).to_parquet(tmp_path / "train.parquet")
    item = VQADataset(tmp_path / "train.parquet", tokenizer, PromptConfig(min_pixels=56 * 56, max_pixels=56 * 56))[1]
    assert item["images"][0].size == (56, 56) and item["problem_type"] == "multiple_choice"


def test_vision_r1_rl_rows_in_geometry3k_shape_load(tokenizer):
    ds = VQADataset(
        FIXTURES / "vision_r1_rl" / "train.jsonl",
        tokenizer,
        PromptConfig(template="think", default_problem_type="math", min_pixels=56 * 56, max_pixels=56 * 56),
    )
    assert [ds[i]["solution"] for i in range(len(ds))] == ["70", "12"]


def test_a_broken_jsonl_line_is_named_or_skipped_and_counted(tmp_path, tokenizer, caplog):
    Image.new("RGB", (56, 56)).save(tmp_path / "a.png")
    good = json.dumps({"image": "a.png", "problem": "q", "solution": "1", "problem_type": "numerical"})
    (tmp_path / "d.jsonl").write_text("\n".join([good, good, "", "[1, 2]", good, "{oops"]) + "\n")
    with pytest.raises(
        ValueError,
        match=r"d\.jsonl: cannot be read as json: line 4 is a JSON list, not an object "
        r"\(and 1 more: lines 6\); set skip_bad_rows",
    ):
        VQADataset(tmp_path / "d.jsonl", tokenizer)
    with caplog.at_level("WARNING"):
        ds = VQADataset(tmp_path / "d.jsonl", tokenizer, PromptConfig(skip_bad_rows=True))
    assert "skipping 2 unreadable line(s)" in caplog.text
    batch = collate_rows([ds[i] for i in range(len(ds))])
    assert len(ds) == 5 and len(batch["prompt"]) == 3 and batch["skipped"] == {"bad_row": 2}
    assert [m.split(": ", 1)[1][:6] for m in batch["skipped_messages"]] == ["line 4", "line 6"]
