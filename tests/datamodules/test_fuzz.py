"""Fuzzed RL data: every malformed row is left out at load by the scan, or (a truncated image body, seen only when
decoded) a counted skip when read, each naming its row; without ``skip_bad_rows``, an error naming it. Odd but valid
images (tiny, huge, grey, palette, 16-bit, CMYK, RGBA) load as RGB."""

import json
from collections import Counter

import pytest
from PIL import Image

from datamodules.config import PromptConfig
from datamodules.vqa import VQADataset, collate_rows
from tests.datamodules.fuzzing import BAD_KINDS, ODD_GOOD_IMAGES, bad_row, fuzzed_rows, write_odd_images

# the image bounds these tests were written for (VQADataset's own defaults until the settings became PromptConfig)
BOUNDS = dict(min_pixels=56 * 56, max_pixels=112 * 112)


def _write(tmp_path, rows):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# what the scan at load calls each bad kind; a truncated body is seen only when the row is read
SCAN_REASONS = {
    "missing_file": "missing_image",
    "corrupt": "bad_image",
    "bomb": "bad_image",
    "sliver": "bad_image",
    "image_wrong_type": "bad_image",
    "missing_solution": "bad_solution",
    "empty_problem": "bad_problem",
    "problem_not_text": "bad_problem",
    "unknown_problem_type": "unknown_problem_type",
    "null_problem_type": "unknown_problem_type",
}


def test_each_bad_kind_is_an_error_naming_its_row(tmp_path, tokenizer):
    images = write_odd_images(tmp_path / "images")
    for kind in BAD_KINDS:
        rows = [{**bad_row(kind, images), "id": "x"}]
        try:
            ds = VQADataset(_write(tmp_path, rows), tokenizer, PromptConfig(**BOUNDS))
        except ValueError as e:  # the scan at load (datamodules.scan)
            assert "row index 0, column" in str(e) and kind in SCAN_REASONS, (kind, e)
            continue
        except KeyError as e:  # a column no row has (here: the only row lacks a solution) names file and column
            assert kind == "missing_solution" and "fuzz.jsonl" in str(e) and "'solution'" in str(e)
            continue
        assert kind == "truncated"
        with pytest.raises(ValueError, match="row index 0") as err:
            ds[0]
        if kind in ("missing_file", "corrupt", "truncated", "bomb", "sliver"):
            assert rows[0]["image"].split("/")[-1] in str(err.value), kind


def test_fuzzed_rows_are_dropped_or_skipped_and_counted_exactly(tmp_path, tokenizer):
    images = write_odd_images(tmp_path / "images")
    rows, injected, bad = fuzzed_rows(300, 0.3, images, seed=1)
    assert set(injected) == set(BAD_KINDS)  # every kind appears at this size
    ds = VQADataset(_write(tmp_path, rows), tokenizer, PromptConfig(skip_bad_rows=True, **BOUNDS))
    scanned = Counter()
    for kind, n in injected.items():
        scanned[SCAN_REASONS.get(kind, "read")] += n
    assert Counter(r.reason for r in ds.dropped) == {k: n for k, n in scanned.items() if k != "read"}
    batch = collate_rows([ds[i] for i in range(len(ds))])
    assert batch["skipped"] == {"bad_row": injected["truncated"]} and len(ds) == len(rows) - len(ds.dropped)
    assert len(batch["prompt"]) == len(rows) - sum(injected.values())
    messages = [r.message for r in ds.dropped] + batch["skipped_messages"]
    named = sorted(int(m.split(" row index ")[1].split(":")[0].split(",")[0]) for m in messages)
    kept = {int(i.split("-")[1]) for i in batch["id"]}
    assert set(named) == {int(i.split("-")[1]) for i in bad} and len(named) == len(bad)
    assert kept.isdisjoint(named) and len(kept) + len(named) == len(rows)
    for ims in batch["images"]:
        assert all(
            isinstance(im, Image.Image) and im.mode == "RGB" and 56 * 56 <= im.width * im.height <= 112 * 112
            for im in ims
        )


@pytest.mark.parametrize("kind", ODD_GOOD_IMAGES)
def test_odd_but_valid_images_load(tmp_path, tokenizer, kind):
    images = write_odd_images(tmp_path / "images")
    row = {"id": "odd", "image": images[kind], "problem": "Colour?", "solution": "A", "problem_type": "multiple_choice"}
    item = VQADataset(_write(tmp_path, [row]), tokenizer, PromptConfig(**BOUNDS))[0]
    assert item["images"][0].mode == "RGB"
