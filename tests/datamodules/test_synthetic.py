import json
from collections import Counter

from datamodules.synthetic import TASKS, make_row, write_synthetic_dataset
from rewards import AccuracyReward, FormatReward


def test_rows_are_seeded_and_reproducible():
    a, b = make_row(7, seed=3), make_row(7, seed=3)
    assert a.problem == b.problem and a.answer == b.answer and a.image.tobytes() == b.image.tobytes()
    assert make_row(7, seed=4).image.tobytes() != a.image.tobytes() or make_row(7, seed=4).answer != a.answer


def test_every_task_and_problem_type_covered_and_targets_score_full_marks():
    rows = [make_row(i, seed=0) for i in range(len(TASKS) * 4)]
    assert {r.task for r in rows} == set(TASKS)
    assert {r.problem_type for r in rows} == set(TASKS.values())
    acc = AccuracyReward()
    for template in ("caption", "think"):
        completions = [r.target(template) for r in rows]
        assert FormatReward(template)(completions).min().item() == 1.0
        scores = acc(completions, solution=[r.answer for r in rows], problem_type=[r.problem_type for r in rows])
        assert scores.min().item() == 1.0


def test_the_image_matters_answers_vary_for_identical_questions():
    rows = [make_row(i, seed=1) for i in range(600)]
    by_question = {}
    for r in rows:
        by_question.setdefault(r.problem, []).append(r.answer)
    for question, answers in by_question.items():
        if len(answers) >= 20:  # the most common answer to the same text stays far from certain
            top = Counter(answers).most_common(1)[0][1] / len(answers)
            assert top < 0.6, (question, Counter(answers))


def test_written_files_load_as_jsonl(tmp_path):
    path = write_synthetic_dataset(tmp_path, n=6, seed=0, image_size=56)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 6 and all((tmp_path / r["image"]).is_file() for r in rows)
    assert rows[0]["solution"].startswith("<answer>")
    sft = [json.loads(line) for line in (tmp_path / "train_sft_caption.jsonl").read_text().splitlines()]
    assert sft[0]["conversations"][0]["value"].startswith("<image>") and sft[0]["images"] == [rows[0]["image"]]
