"""Per-question evaluation records: built from a batch, merged across ranks in dataset order, written as JSONL."""

from __future__ import annotations

import json

import torch

from evaluation.records import question_rows, write_question_rows
from lightning_modules.outputs import gather_rows
from tests.forked import fork_server


def _batch(indices: list[int]) -> dict:
    return {
        "index": indices,
        "id": [f"q{i}" for i in indices],
        "solution": ["A"] * len(indices),
        "category": ["colour" if i % 2 == 0 else "shape" for i in indices],
    }


def test_question_rows_extract_the_answer_as_the_reward_reads_it(tmp_path):
    texts = ["<think>red</think><answer>A</answer>", "it is B", "<answer> B </answer>"]
    rows = question_rows(_batch([4, 0, 2]), texts, [1.0, 0.0, 0.0])
    assert [(r["id"], r["answer"], r["score"]) for r in rows] == [("q4", "A", 1.0), ("q0", None, 0.0), ("q2", "B", 0.0)]
    # with the text fallback (the plain template) an untagged reply is its own answer
    assert question_rows(_batch([0]), ["it is B"], [0.0], ("text",))[0]["answer"] == "it is B"
    path = write_question_rows(gather_rows(rows), tmp_path, "val_heldout")
    assert path.name == "results_val_heldout_questions.jsonl"
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in written] == ["q0", "q2", "q4"]  # dataset order
    assert written[0] == {
        "id": "q0",
        "category": "colour",
        "solution": "A",
        "answer": None,
        "score": 0.0,
        "completion": "it is B",
    }


def _rank(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    # a distributed sampler deals rows round-robin: rank 0 gets 0, 2, 4 and rank 1 gets 1, 3
    indices = [0, 2, 4] if rank == 0 else [1, 3]
    scores = [float(i % 3 == 0) for i in indices]
    rows = gather_rows(question_rows(_batch(indices), [f"reply {i}" for i in indices], scores))
    with open(f"{out}.{rank}", "w") as f:
        json.dump(rows, f)
    dist.destroy_process_group()


def test_rows_of_all_ranks_are_merged_in_dataset_order(tmp_path):
    args = (str(tmp_path / "init"), str(tmp_path / "rows"))
    fork_server()  # the ranks fork from it: no import of the stack again (tests.forked)
    torch.multiprocessing.start_processes(_rank, args=args, nprocs=2, start_method="forkserver")
    merged = [json.loads((tmp_path / f"rows.{rank}").read_text()) for rank in (0, 1)]
    assert merged[0] == merged[1]  # every rank holds the merged rows
    assert [r["index"] for r in merged[0]] == [0, 1, 2, 3, 4]
    assert [r["score"] for r in merged[0]] == [1.0, 0.0, 0.0, 1.0, 0.0]  # indices 0 and 3 are multiples of 3
