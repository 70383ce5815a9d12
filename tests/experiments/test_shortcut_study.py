"""The shortcut study: the CI smoke of the whole command (tiny model, 2 GRPO steps per method), and its summary and
verdict on hand-made values."""

import json

import pytest

from experiments.shortcut_study import (
    METHODS,
    NOTES_MARKER,
    SPLITS,
    _logged_validations,
    interval_lines,
    intervals,
    main,
    summarise,
    verdict,
)


@pytest.mark.slow
def test_smoke_runs_every_method_and_tracks_every_split(tmp_path):
    result = main(["--out", str(tmp_path), "--smoke", "--jobs", "2"])  # units as processes, two at once
    curves = result["curves"][0]
    assert set(curves) == set(METHODS)
    for method, points in curves.items():
        assert [p["step"] for p in points] == [0, 2]  # after SFT, then after the 2 GRPO steps
        for point in points:
            for split in SPLITS:
                for metric in ("accuracy", "blind_accuracy", "visual_dependency"):
                    assert 0.0 <= abs(point[f"val/{split}/{metric}"]) <= 1.0
            assert ("val/hard/caption_sufficiency" in point) == method.startswith("visionary_r1")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["summary"]) == set(METHODS)
    report = (tmp_path / "report.md").read_text()
    # one row per split, + the cue table's row, + the bootstrap table's row
    assert report.count("| vanilla_grpo |") == len(SPLITS) + 2 and "Smoke run" in report
    assert "## 95% bootstrap intervals" in report and set(saved["rows"]["0"]) == set(METHODS)
    assert "| vanilla_grpo | in_distribution | " in report and "--smoke" in report and "no GPU" in report
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert saved["meta"]["grpo_steps"] == 2 and saved["meta"]["seconds"] > 0 and saved["meta"]["jobs"] == 2
    # each unit ran as its own process, its output in its log
    logs = sorted(p.stem for p in (tmp_path / "seed0" / "logs").glob("*.log"))
    assert logs == sorted([*METHODS, "sft_caption", "sft_think"])
    assert saved["meta"]["unit_seconds"] >= sum(
        json.loads((tmp_path / "seed0" / m / "result.json").read_text())["seconds"] for m in METHODS
    )
    (tmp_path / "report.md").unlink()
    main(["--out", str(tmp_path), "--report-only"])  # re-rendered from results.json alone
    assert (tmp_path / "report.md").read_text() == report
    again = main(["--out", str(tmp_path), "--smoke"])  # as after an interruption: finished runs are kept, not rerun
    assert again["curves"][0] == json.loads(json.dumps(result["curves"][0]))
    assert again["meta"]["unit_seconds"] == saved["meta"]["unit_seconds"]  # nothing ran again
    walls = [r["seconds"] for r in json.loads((tmp_path / "invocations.json").read_text())]
    assert len(walls) == 2 and again["meta"]["seconds"] == pytest.approx(sum(walls), abs=0.1)  # both invocations count
    assert walls[1] < walls[0]


@pytest.mark.slow
def test_one_job_runs_the_units_in_this_process(tmp_path):
    result = main(["--out", str(tmp_path), "--smoke", "--jobs", "1", "--methods", "vanilla_grpo"])
    assert [p["step"] for p in result["curves"][0]["vanilla_grpo"]] == [0, 2]
    assert not (tmp_path / "seed0" / "logs").exists()  # no worker process, no worker log
    assert (tmp_path / "seed0" / "sft_think" / "seconds.json").exists()
    assert not (tmp_path / "seed0" / "sft_caption").exists()  # no method needs the caption template


@pytest.mark.parametrize("spec", ["run:0:no_such_method", "run:0", "sft:x:think"])
def test_a_bad_unit_names_the_expected_forms(tmp_path, spec):
    with pytest.raises(ValueError, match="expected sft:<seed>:<template> or run:<seed>:<method>"):
        main(["--out", str(tmp_path), "--unit", spec])


def test_jobs_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--jobs", "0"])
    assert "--jobs: must be at least 1, got 0" in capsys.readouterr().err


def _curve(reversed_acc: float, dependency: float) -> list[dict]:
    point = {
        "val/cue_reversed/accuracy": reversed_acc,
        "val/hard/accuracy": reversed_acc,
        "val/cue_absent/visual_dependency": dependency,
    }
    return [{"step": 0, **{k: 0.0 for k in point}}, {"step": 10, **point}]


def test_summary_and_verdict_by_hand():
    # three seeds: Visionary-R1 at 0.5/0.6/0.7 on cue-reversed (mean 0.6, std 0.1), vanilla at 0.1/0.1/0.1
    curves = {
        seed: {"visionary_r1": _curve(v, 0.3), "vanilla_grpo": _curve(0.1, 0.0)}
        for seed, v in enumerate([0.5, 0.6, 0.7])
    }
    table = summarise(curves, ["visionary_r1", "vanilla_grpo"])
    cell = table["visionary_r1"]["cue_reversed/accuracy"]
    assert abs(cell["mean"] - 0.6) < 1e-12 and abs(cell["std"] - 0.1) < 1e-12 and cell["n"] == 3
    assert cell["start_mean"] == 0.0
    assert verdict(table).startswith("The claim reproduced at this scale (3 of 3")
    curves = {seed: {"visionary_r1": _curve(0.15, 0.2), "vanilla_grpo": _curve(0.1, 0.0)} for seed in range(3)}
    text = verdict(summarise(curves, ["visionary_r1", "vanilla_grpo"]))
    assert text.startswith("The claim reproduced")  # 0.15 vs 0.1 with zero spread is clearly higher
    curves[0]["visionary_r1"] = _curve(0.0, 0.2)  # one seed falls to 0: the spread now swallows the margin
    text = verdict(summarise(curves, ["visionary_r1", "vanilla_grpo"]))
    assert text.startswith("The claim did not reproduce at this scale (1 of 3")
    assert "cue_reversed/accuracy: Visionary-R1 0.100 ± 0.087 vs vanilla 0.100 ± 0.000 (not clearly higher)" in text


def test_report_only_renders_table_cue_gap_and_verdict(tmp_path):
    def point(step, acc, agree, disagree):
        values = {f"val/{s}/accuracy": acc for s in SPLITS}
        values.update({f"val/{s}/visual_dependency": acc / 2 for s in SPLITS})
        values.update(
            {"val/in_distribution/accuracy/cue_agrees": agree, "val/in_distribution/accuracy/cue_disagrees": disagree}
        )
        return {"step": step, **values}

    curves = {
        seed: {
            "vanilla_grpo": [point(0, 0.2, 0.2, 0.2), point(10, 0.4, 0.9, 0.0)],
            "visionary_r1": [point(0, 0.2, 0.2, 0.2), point(10, 0.6 + seed / 10, 0.7, 0.5)],
        }
        for seed in range(3)
    }
    meta = {
        "command": "python -m experiments.shortcut_study",
        "machine": "x86_64, 2 CPU cores",
        "seconds": 90.0,
        "unit_seconds": 170.0,
        "jobs": 2,
        "smoke": False,
        "seeds": [0, 1, 2],
        "methods": ["vanilla_grpo", "visionary_r1"],
        "cue_strength": 0.9,
        "sft_steps": 120,
        "grpo_steps": 10,
        "eval_rows": 32,
    }
    (tmp_path / "results.json").write_text(json.dumps({"meta": meta, "curves": curves}))
    main(["--out", str(tmp_path), "--report-only"])
    report = (tmp_path / "report.md").read_text()
    assert "time: 1.5 min, 2 units at a time (2.8 min of cold starts and runs added up); seeds [0, 1, 2]" in report
    assert "The claim reproduced at this scale (3 of 3" in report  # 0.7 ± 0.1 against 0.4 ± 0 on every measure
    assert "| visionary_r1 | cue_reversed | 0.700 ± 0.100 (0.200) | - | +0.350 ± 0.050 (+0.100) |" in report
    assert "| vanilla_grpo | 0.900 ± 0.000 (0.200) | 0.000 ± 0.000 (0.200) |" in report
    assert (tmp_path / "curves.png").stat().st_size > 0
    notes = "\n## Discussion\nwritten by hand\n"
    (tmp_path / "report.md").write_text(report + NOTES_MARKER + notes)
    main(["--out", str(tmp_path), "--report-only"])  # the hand-written part survives a re-render
    assert (tmp_path / "report.md").read_text() == report + NOTES_MARKER + notes


def _rows(start_disagree: float, final_disagree: float, final_reversed: float, n: int = 20) -> dict:
    def split(agree, disagree):
        return {
            **{f"a{i}": [agree, "cue_agrees"] for i in range(n)},
            **{f"d{i}": [disagree, "cue_disagrees"] for i in range(n)},
        }

    start = {"in_distribution": split(0.0, start_disagree), "cue_reversed": {f"r{i}": [0.0, None] for i in range(n)}}
    final = {
        "in_distribution": split(1.0, final_disagree),
        "cue_reversed": {f"r{i}": [final_reversed, None] for i in range(n)},
    }
    return {"start": start, "final": final}


def test_intervals_show_the_cue_learned_and_arms_compared_on_the_same_rows():
    rows = {seed: {"vanilla_grpo": _rows(1.0, 0.0, 0.0), "visionary_r1": _rows(1.0, 1.0, 1.0)} for seed in range(3)}
    iv = intervals(rows, ["vanilla_grpo", "visionary_r1"], draws=200)
    assert iv["vanilla_grpo"]["final:in_distribution/cue_agrees"] == [1.0, 1.0, 1.0]
    assert iv["vanilla_grpo change"]["in_distribution/cue_disagrees"] == [-1.0, -1.0, -1.0]
    assert iv["vanilla_grpo change"]["in_distribution/cue_agrees"] == [1.0, 1.0, 1.0]
    assert iv["visionary_r1 - vanilla_grpo"]["cue_reversed"] == [1.0, 1.0, 1.0]
    mean, low, high = iv["visionary_r1 - vanilla_grpo"]["in_distribution"]  # +1 on disagreeing rows, 0 on the rest
    assert mean == 0.5 and 0.3 < low < 0.5 < high < 0.7
    table = {"vanilla_grpo": {"in_distribution/blind_accuracy": {"mean": 0.8, "std": 0.1, "start_mean": 0.3}}}
    meta = {"cue_strength": 0.9, "methods": ["vanilla_grpo", "visionary_r1"]}
    text = "\n".join(interval_lines(iv, table, meta))
    assert "**Part one: vanilla GRPO learned the cue** (" in text and "scores 0.925 image-blind" in text
    row = "| in_distribution accuracy, cue disagrees | 1.000 [1.000, 1.000] | 0.000 [0.000, 0.000] | -1.000 [-1.000, "
    assert row in text and "| cue_absent accuracy, cue disagrees | - | - | - |" in text  # no cue-absent rows here
    assert "| in_distribution blind accuracy (mean ± std over seeds) | 0.300 | 0.800 ± 0.100 | +0.500 |" in text
    assert "+1.000 [+1.000, +1.000] (higher)" in text


def test_logged_validations_count_updates_not_pools_without_one(tmp_path):
    # 6 rollout batches, the 2nd and 5th without an informative group; validations after batches 3 and 6
    header = "step,rollout/uninformative_steps,train/loss,val/hard/accuracy"
    lines = ["0,0,0.1,", "1,1,,", "2,1,0.1,", "2,,,0.25", "3,1,0.1,", "4,2,,", "5,2,0.1,", "5,,,0.5"]
    (tmp_path / "metrics.csv").write_text("\n".join([header, *lines]) + "\n")
    points, batches = _logged_validations(tmp_path / "metrics.csv")
    assert batches == 6
    assert points == [
        {"step": 2, "batch": 3, "val/hard/accuracy": 0.25},
        {"step": 4, "batch": 6, "val/hard/accuracy": 0.5},
    ]


def _session_alive(session: int) -> bool:
    from pathlib import Path

    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            return True
    return False


@pytest.mark.slow
def test_a_killed_study_keeps_its_finished_units_and_ends_as_an_uninterrupted_one(tmp_path):
    """``vlrl study`` and its unit processes SIGKILLed twice: once in the cold start, once in the GRPO run after the
    cold start finished. Whatever the moment, the same command then keeps the finished units (the SFT export is not
    made again) and ends with the uninterrupted study's curves and rows."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).parents[2]
    args = ["--smoke", "--jobs", "2", "--methods", "vanilla_grpo"]
    whole = main(["--out", str(tmp_path / "whole"), *args])
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "vlrl_cli", "study", "--out", str(out), *args]
    env = {**os.environ, "PYTHONPATH": str(root)}
    sft_done = out / "seed0" / "sft_think" / "seconds.json"
    for ready in (lambda: (out / "seed0" / "logs" / "sft_think.log").exists(), sft_done.exists):
        proc = subprocess.Popen(command, cwd=root, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
        while not ready():  # when to kill changes nothing that is checked below
            assert proc.poll() is None, "the study ended before the moment to kill it"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        while _session_alive(proc.pid):
            time.sleep(0.2)
    made = sft_done.stat().st_mtime
    again = main(["--out", str(out), *args])
    assert sft_done.stat().st_mtime == made  # the finished cold start was kept
    assert (out / "seed0" / "vanilla_grpo" / "result.json").stat().st_mtime > made  # the killed GRPO run ran again
    assert json.loads(json.dumps(again["curves"])) == json.loads(json.dumps(whole["curves"]))
    saved = [json.loads((tmp_path / name / "results.json").read_text()) for name in ("killed", "whole")]
    assert saved[0]["rows"] == saved[1]["rows"] and saved[0]["summary"] == saved[1]["summary"]
