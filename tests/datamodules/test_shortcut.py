"""The shortcut-prone benchmark: the wording predicts the answer in training at the set strength, not at all in
cue_absent, never in cue_reversed; images agree with the answers; everything is reproducible and loads as RL data."""

import json
import re

import pytest
from PIL import Image

from datamodules.shortcut import COLD_START, CUED_COLOR, SPLITS, make_shortcut_row, write_shortcut_benchmark
from datamodules.synthetic import COLORS, LETTERS
from rewards import AccuracyReward


def _cue_answer(problem: str) -> str:
    """What a model that never looks at the image would answer: the cued colour of the named shape."""
    shape = re.search(r"colour is the (\w+)", problem).group(1)
    return LETTERS[list(COLORS).index(CUED_COLOR[shape])]


@pytest.mark.parametrize(
    ("split", "expected", "tolerance"),
    [
        ("train", 0.8 + 0.2 / 4, 0.03),
        ("in_distribution", 0.8 + 0.2 / 4, 0.03),
        ("cue_absent", 0.25, 0.04),
        ("cue_reversed", 0.0, 0.0),
    ],
)
def test_image_blind_cue_policy_scores_what_the_cue_strength_says(split, expected, tolerance):
    rows = [make_shortcut_row(i, split, seed=1, cue_strength=0.8, image_size=56)[0] for i in range(1200)]
    guesses = [f"<answer>{_cue_answer(r.problem)}</answer>" for r in rows]
    scores = AccuracyReward()(
        guesses, solution=[f"<answer>{r.answer}</answer>" for r in rows], problem_type=[r.problem_type for r in rows]
    )
    assert abs(float(scores.mean()) - expected) <= tolerance


def test_one_object_images_show_the_answer_colour():
    for i in range(40):
        row, category = make_shortcut_row(i, "cue_reversed", seed=0, image_size=56)
        colour = list(COLORS)[LETTERS.index(row.answer)]
        pixels = [p for p in row.image.getdata() if p != (255, 255, 255)]
        assert pixels and max(set(pixels), key=pixels.count) == COLORS[colour]
        assert category == "cue_disagrees"


def test_hard_split_has_crowded_scenes_and_all_question_kinds():
    kinds = set()
    for i in range(60):
        row, kind = make_shortcut_row(i, "hard", seed=0, image_size=112)
        kinds.add(kind)
        groups = re.findall(r"(a|\d) (?:large|small) \w+ (?:circle|square|triangle)", row.caption)
        assert 3 <= sum(1 if n == "a" else int(n) for n in groups) <= 5  # identical objects are grouped ("2 small ...")
        if kind == "count_color":
            colour = re.search(r"How many (\w+) shapes", row.problem).group(1)
            assert int(row.answer) == sum(
                int(n) if n.isdigit() else 1
                for n, c in re.findall(r"(a|\d) (?:large|small) (\w+)", row.caption)
                if c == colour
            )
        else:
            assert row.answer in "ABCD" and row.problem_type == "multiple_choice"
    assert kinds == {"color_of", "count_color", "larger"}


def test_rows_are_reproducible_and_splits_differ():
    a, _ = make_shortcut_row(7, "train", seed=3, image_size=56)
    b, _ = make_shortcut_row(7, "train", seed=3, image_size=56)
    c, _ = make_shortcut_row(7, "cue_absent", seed=3, image_size=56)
    assert a.problem == b.problem and a.image.tobytes() == b.image.tobytes()
    assert (a.problem, a.image.tobytes()) != (c.problem, c.image.tobytes())
    with pytest.raises(ValueError, match="cue_strength"):
        make_shortcut_row(0, "train", cue_strength=1.5)


def test_written_benchmark_loads_as_rl_data_with_categories(tmp_path, tokenizer):
    from datamodules.config import PromptConfig
    from datamodules.vqa import VQADataset

    files = write_shortcut_benchmark(tmp_path, n_train=8, n_eval=4, seed=0, image_size=56)
    assert set(files) == set(SPLITS) and (tmp_path / "train_sft_caption.jsonl").exists()
    for split, path in files.items():
        ds = VQADataset(path, tokenizer, PromptConfig(min_pixels=56 * 56, max_pixels=56 * 56))
        item = ds[0]
        assert isinstance(item["images"][0], Image.Image) and item["category"]
        assert len(ds) == (8 if split == "train" else 4)
    mtime = files["train"].stat().st_mtime_ns
    write_shortcut_benchmark(tmp_path, n_train=8, n_eval=4, seed=0, image_size=56)  # same arguments: not rewritten
    assert files["train"].stat().st_mtime_ns == mtime


def test_distractors_put_the_other_shapes_in_other_colours_beside_the_asked_one():
    for i in range(60):
        row, category = make_shortcut_row(i, "in_distribution", seed=2, image_size=56, distractors=2)
        shape = re.search(r"colour is the (\w+)", row.problem).group(1)
        colour = list(COLORS)[LETTERS.index(row.answer)]
        described = re.findall(r"an? (\w+) (circle|square|triangle)", row.caption)
        assert len(described) == 3 and {s for _, s in described} == {"circle", "square", "triangle"}
        assert (colour, shape) in described
        assert all(c != colour for c, s in described if s != shape)  # only the asked shape has the answer colour
        assert category == ("cue_agrees" if colour == CUED_COLOR[shape] else "cue_disagrees")
        painted = {p for p in row.image.getdata() if p != (255, 255, 255)}
        assert COLORS[colour] in painted and len(painted & set(COLORS.values())) >= 2
    plain, _ = make_shortcut_row(0, "in_distribution", seed=2, image_size=56)
    assert plain.caption.startswith("A ") and plain.caption.count(" ") == 2  # distractors=0: one object, as before
    with pytest.raises(ValueError, match="distractors must be in"):
        make_shortcut_row(0, "train", distractors=3)


def test_cold_start_rows_come_from_their_own_stream_at_their_own_cue_strength(tmp_path):
    write_shortcut_benchmark(tmp_path, n_train=8, n_eval=2, seed=0, image_size=56, n_sft=300, sft_cue_strength=0.0)
    sft = [json.loads(line) for line in (tmp_path / "train_sft_think.jsonl").read_text().splitlines()]
    assert len(sft) == 300 and all(r["images"][0].startswith(f"images/{COLD_START}/") for r in sft)
    answers = [re.search(r"<answer>(\w)</answer>", r["conversations"][1]["value"]).group(1) for r in sft]
    agree = sum(a == _cue_answer(r["conversations"][0]["value"]) for a, r in zip(answers, sft)) / len(sft)
    assert abs(agree - 0.25) < 0.07  # no cue: the cued colour as often as any other
    train = [json.loads(line)["problem"] for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert [r["conversations"][0]["value"].split("\n")[0] for r in sft[:8]] != ["<image>" + p for p in train]
    cued = [make_shortcut_row(i, COLD_START, seed=0, cue_strength=1.0, image_size=56)[0] for i in range(50)]
    assert all(r.answer == _cue_answer(r.problem) for r in cued)
