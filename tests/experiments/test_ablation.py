"""experiments/ablation.py on hand-made logs and intervals: dead arms and identical answers are named, the common
measures carry their intervals, and the reading says plainly when nothing differs."""

import json
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger

from experiments.ablation import arm_health, comparison, health_problems, reading, reward_signal


def _log(out, seed, arm, totals, stds, components, answers):
    logger = CSVLogger(out / f"seed{seed}" / arm, name="logs")
    for step, (total, std) in enumerate(zip(totals, stds)):
        logger.log_metrics({"reward/total": total, "reward/total_std": std, **components(step)}, step=step)
    logger.save()
    rows = [{"id": i, "answer": a, "score": 1.0} for i, a in enumerate(answers)]
    records = Path(logger.log_dir) / "results_val_in_distribution_questions.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_reward_signal_tells_live_moving_and_flat_rewards():
    scalars = {
        "reward/total": [(0, 1.0), (1, 1.5)],
        "reward/total_std": [(0, 0.0), (1, 0.5)],
        "reward/format": [(0, 1.0), (1, 1.0)],
        "reward/accuracy": [(0, 0.0), (1, 0.5)],
        "reward/judge/failures": [(0, 0.0), (1, 0.0)],  # a counter, not a reward component
    }
    got = reward_signal(scalars)
    assert got == {
        "steps": 2,
        "reward_first": 1.0,
        "reward_last": 1.5,
        "live": True,
        "moved": True,
        "flat_rewards": {"format": 1.0},
    }


def test_a_dead_arm_and_arms_with_the_same_answers_are_problems(tmp_path):
    _log(tmp_path, 0, "vanilla_grpo", [1.0, 1.2], [0.3, 0.4], lambda s: {"reward/accuracy": 0.1 * s}, "ABCD")
    _log(tmp_path, 0, "hard_format", [0.0, 0.0], [0.0, 0.0], lambda s: {"reward/hard": 0.0}, "ABCD")
    _log(tmp_path, 0, "visionary_r1", [0.5, 0.7], [0.2, 0.1], lambda s: {"reward/caption": 0.0}, "ABCA")
    health = arm_health(tmp_path, [0], ["vanilla_grpo", "visionary_r1", "hard_format"])
    same = {tuple(p["arms"]): (p["same"], p["rows"]) for p in health["same_answers"]}
    assert same[("vanilla_grpo", "hard_format")] == (4, 4) and same[("vanilla_grpo", "visionary_r1")] == (3, 4)
    problems, warnings = health_problems(health)
    assert problems == [
        "hard_format (seed 0): every rollout of every step scored the same: no reward signal, no learning",
        "vanilla_grpo and hard_format gave the same answer on every held-out row in every seed",
    ]
    assert warnings == [
        "visionary_r1 (seed 0): reward 'caption' was 0 at every step (it taught nothing)",
        "hard_format (seed 0): reward 'hard' was 0 at every step (it taught nothing)",
    ]


def _result(diff_low: float, diff_high: float, dependency: tuple[float, float]) -> dict:
    intervals = {
        arm: {
            "final:in_distribution": [0.7, 0.6, 0.8],
            "start:in_distribution": [0.4, 0.3, 0.5],
            "final:cue_reversed": [0.3, 0.2, 0.4],
            "start:cue_reversed": [0.35, 0.3, 0.4],
        }
        for arm in ("vanilla_grpo", "visionary_r1")
    }
    intervals["visionary_r1 - vanilla_grpo"] = {
        "in_distribution": [0.0, -0.05, 0.05],
        "cue_reversed": [(diff_low + diff_high) / 2, diff_low, diff_high],
    }
    summary = {
        "vanilla_grpo": {"cue_absent/visual_dependency": {"mean": 0.1, "std": 0.02, "start_mean": 0.05}},
        "visionary_r1": {
            "cue_absent/visual_dependency": {"mean": dependency[0], "std": dependency[1], "start_mean": 0.05}
        },
    }
    return {"intervals": intervals, "summary": summary}


def test_comparison_carries_intervals_and_spreads():
    table = comparison(_result(-0.1, 0.1, (0.2, 0.03)), ["vanilla_grpo", "visionary_r1"])
    assert table["visionary_r1"]["cue-reversed accuracy"] == {
        "value": 0.3,
        "low": 0.2,
        "high": 0.4,
        "start": 0.35,
        "kind": "95% interval",
    }
    dependency = table["visionary_r1"]["visual dependency (cue-absent)"]
    assert dependency["kind"] == "± std over seeds" and abs(dependency["low"] - 0.17) < 1e-9


def test_reading_says_plainly_when_nothing_differs_and_names_a_clear_difference():
    arms = ["vanilla_grpo", "visionary_r1"]
    none = reading(_result(-0.1, 0.1, (0.11, 0.05)), arms)
    assert none[0] == "No arm differs clearly from vanilla GRPO on any common measure at this scale:"
    assert "visionary_r1 vs vanilla_grpo, cue-reversed accuracy: +0.000 [-0.100, +0.100] (no clear difference)" in none
    clear = reading(_result(0.05, 0.2, (0.3, 0.02)), arms)
    assert "visionary_r1 vs vanilla_grpo, cue-reversed accuracy: +0.125 [+0.050, +0.200] (higher)" in clear
    assert "visionary_r1 vs vanilla_grpo, visual dependency (cue-absent): +0.300 vs +0.100 (higher)" in clear
    assert not clear[0].startswith("No arm")
