"""The ablation notebook's reading of a study (``notebooks/ablation.ipynb``): is every arm alive, do the arms differ,
and on which common measure, with intervals.

The runs themselves are the shortcut study's (``experiments.shortcut_study``): each arm starts from a cold start in
its own template and trains on the shortcut-prone benchmark, whose cue-reversed split tells an arm that answers from
the wording from one that looks. This module only reads what the study wrote:

- ``arm_health``: per seed and arm, whether the training reward carried a signal (rollouts of a step scored
  differently at least once) and moved over the run, which reward components never changed (a warning: a format
  reward the model already meets, or a judge that never accepts, teaches nothing), and whether the arm's final
  answers equal another arm's on every held-out row (the two arms then learned nothing that tells them apart);
  ``health_problems`` turns these into the warnings the notebook prints, the blocking ones first;
- ``comparison``: held-out accuracy and cue-reversed accuracy with 95% bootstrap intervals (seeds, then rows),
  visual dependency with its spread over seeds, and each arm against vanilla GRPO, paired on rows;
- ``reading``: those comparisons in words, saying plainly when the intervals show no difference;
- ``plot_ablation``: the figure (error bars; one reward panel per arm, since the arms' rewards have different
  ranges).
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

from tools.run_logs import read_scalars

ARMS = ("vanilla_grpo", "visionary_r1", "hard_format")
# the common measures: (label, key in the study's intervals or summary, where it comes from)
MEASURES = (
    ("held-out accuracy", "in_distribution", "interval"),
    ("cue-reversed accuracy", "cue_reversed", "interval"),
    ("visual dependency (cue-absent)", "cue_absent/visual_dependency", "spread"),
)


def fit_log_dir(out: Path, seed: int, arm: str) -> Path:
    """The log folder of ``arm``'s GRPO run for ``seed`` in a study written to ``out`` (the newest version)."""
    versions = sorted((Path(out) / f"seed{seed}" / arm / "logs").glob("version_*"), key=lambda p: p.stat().st_mtime)
    if not versions:
        raise FileNotFoundError(f"no GRPO run of {arm} for seed {seed} under {out}")
    return versions[-1]


def final_answers(log_dir: Path, split: str = "in_distribution") -> dict[str, str | None]:
    """Row id -> the extracted answer of the run's last evaluation on ``split``."""
    path = Path(log_dir) / f"results_val_{split}_questions.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {str(r["id"]): r.get("answer") for r in records}


def reward_signal(scalars: dict[str, list[tuple[int, float]]]) -> dict:
    """One run's training reward: first and last mean, whether any step's rollouts scored differently (the signal
    GRPO learns from), whether the mean moved over the run, and the reward components whose mean never changed
    (with that value). Pure."""
    total = [v for _, v in scalars.get("reward/total", [])]
    spread = [v for _, v in scalars.get("reward/total_std", [])]
    components = {
        k: [v for _, v in values]
        for k, values in scalars.items()
        if k.startswith("reward/") and k not in ("reward/total", "reward/total_std") and "/" not in k[7:]
    }
    flat = {k[7:]: values[0] for k, values in sorted(components.items()) if len(values) > 1 and len(set(values)) == 1}
    return {
        "steps": len(total),
        "reward_first": total[0] if total else float("nan"),
        "reward_last": total[-1] if total else float("nan"),
        "live": any(s > 0 for s in spread),
        "moved": len(set(total)) > 1,
        "flat_rewards": flat,
    }


def arm_health(out: Path, seeds, arms=ARMS) -> dict:
    """``{"runs": [{seed, arm, steps, reward_first, reward_last, live, flat_rewards}], "same_answers": [{seed, arms,
    rows, same}]}``: every arm's reward signal, and for each pair of arms the held-out rows answered alike."""
    runs, answers = [], {}
    for seed in seeds:
        for arm in arms:
            log_dir = fit_log_dir(out, seed, arm)
            runs.append({"seed": seed, "arm": arm, **reward_signal(read_scalars(log_dir))})
            answers[seed, arm] = final_answers(log_dir)
    pairs = []
    for seed in seeds:
        for a, b in combinations(arms, 2):
            shared = answers[seed, a].keys() & answers[seed, b].keys()
            same = sum(answers[seed, a][i] == answers[seed, b][i] for i in shared)
            pairs.append({"seed": seed, "arms": [a, b], "rows": len(shared), "same": same})
    return {"runs": runs, "same_answers": pairs}


def health_problems(health: dict) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` in words. Problems make the comparison meaningless: an arm whose reward carried no
    signal or never moved, two arms with the same answer on every row in every seed. Warnings: a reward component
    that never changed (it teaches nothing, though the others may). Pure."""
    problems, warnings = [], []
    for run in health["runs"]:
        where = f"{run['arm']} (seed {run['seed']})"
        if not run["live"]:
            problems.append(f"{where}: every rollout of every step scored the same: no reward signal, no learning")
        elif not run["moved"]:
            problems.append(f"{where}: the mean reward was the same at every step")
        for name, value in run["flat_rewards"].items():
            warnings.append(f"{where}: reward {name!r} was {value:g} at every step (it taught nothing)")
    by_pair: dict[tuple, list[dict]] = {}
    for pair in health["same_answers"]:
        by_pair.setdefault(tuple(pair["arms"]), []).append(pair)
    for (a, b), seeds in by_pair.items():
        if all(p["rows"] and p["same"] == p["rows"] for p in seeds):
            problems.append(f"{a} and {b} gave the same answer on every held-out row in every seed")
    return problems, warnings


def comparison(result: dict, arms=ARMS) -> dict[str, dict[str, dict]]:
    """arm -> measure label -> {value, low, high, start, kind}; interval bounds for accuracies (95% bootstrap),
    mean ± std over seeds for visual dependency. ``result``: what ``experiments.shortcut_study.main`` returns. Pure."""
    table: dict[str, dict[str, dict]] = {}
    for arm in arms:
        for label, key, kind in MEASURES:
            if kind == "interval":
                final = result["intervals"].get(arm, {}).get(f"final:{key}")
                start = result["intervals"].get(arm, {}).get(f"start:{key}")
                if final:
                    table.setdefault(arm, {})[label] = {
                        "value": final[0],
                        "low": final[1],
                        "high": final[2],
                        "start": start[0] if start else float("nan"),
                        "kind": "95% interval",
                    }
            elif (cell := result["summary"].get(arm, {}).get(key)) is not None:
                table.setdefault(arm, {})[label] = {
                    "value": cell["mean"],
                    "low": cell["mean"] - cell["std"],
                    "high": cell["mean"] + cell["std"],
                    "start": cell["start_mean"],
                    "kind": "± std over seeds",
                }
    return table


def reading(result: dict, arms=ARMS) -> list[str]:
    """Each arm against vanilla GRPO on the common measures, in words. Accuracies are compared paired on rows
    (clearly higher or lower when the 95% interval of the difference excludes 0); visual dependency by whether the
    two means differ by more than their spreads over seeds. Pure."""
    table, lines = comparison(result, arms), []
    base = table.get("vanilla_grpo", {})
    for arm in arms:
        if arm == "vanilla_grpo" or arm not in table:
            continue
        for label, key, kind in MEASURES:
            if label not in table[arm] or label not in base:
                continue
            if kind == "interval":
                diff = result["intervals"].get(f"{arm} - vanilla_grpo", {}).get(key)
                if not diff:
                    continue
                word = "higher" if diff[1] > 0 else "lower" if diff[2] < 0 else "no clear difference"
                lines.append(
                    f"{arm} vs vanilla_grpo, {label}: {diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}] ({word})"
                )
            else:
                a, b = table[arm][label], base[label]
                apart = abs(a["value"] - b["value"]) > (a["high"] - a["value"]) + (b["high"] - b["value"])
                word = ("higher" if a["value"] > b["value"] else "lower") if apart else "no clear difference"
                lines.append(f"{arm} vs vanilla_grpo, {label}: {a['value']:+.3f} vs {b['value']:+.3f} ({word})")
    if lines and all(line.endswith("(no clear difference)") for line in lines):
        lines.insert(0, "No arm differs clearly from vanilla GRPO on any common measure at this scale:")
    return lines


def plot_ablation(result: dict, out: Path, path: Path, arms=ARMS) -> Path:
    """Top row: the common measures per arm, after SFT (hollow) and after GRPO (bar, with its interval or spread).
    Bottom row: each arm's training reward over steps, one panel per arm (mean over seeds, min-max band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, columns = comparison(result, arms), max(len(MEASURES), len(arms))
    fig, axes = plt.subplots(2, columns, figsize=(4.3 * columns, 6.5), squeeze=False)
    for ax in [*axes[0][len(MEASURES) :], *axes[1][len(arms) :]]:
        ax.axis("off")
    for ax, (label, _, _) in zip(axes[0], MEASURES):
        cells = [table.get(arm, {}).get(label) for arm in arms]
        x = [i for i, c in enumerate(cells) if c]
        got = [c for c in cells if c]
        ax.bar(x, [c["value"] for c in got], color=[f"C{i}" for i in x], alpha=0.8)
        ax.errorbar(x, [c["value"] for c in got], yerr=_bounds(got), fmt="none", ecolor="black", capsize=4)
        ax.scatter(x, [c["start"] for c in got], facecolors="none", edgecolors="black", label="after SFT", zorder=3)
        ax.set_xticks(range(len(arms)), arms, rotation=15, fontsize=8)
        ax.set_title(f"{label}\n({got[0]['kind'] if got else '-'})", fontsize=9)
    axes[0][0].legend(fontsize=7)
    _reward_panels(axes[1], out, result["meta"]["seeds"], arms)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bounds(cells: list[dict]) -> list[list[float]]:
    return [[c["value"] - c["low"] for c in cells], [c["high"] - c["value"] for c in cells]]


def _reward_panels(axes, out: Path, seeds, arms) -> None:
    for i, (ax, arm) in enumerate(zip(axes, arms)):
        series = [read_scalars(fit_log_dir(out, seed, arm)).get("reward/total", []) for seed in seeds]
        steps = sorted({s for values in series for s, _ in values})
        by_step = [[v for values in series for s, v in values if s == step] for step in steps]
        ax.plot(steps, [sum(v) / len(v) for v in by_step], color=f"C{i}")
        ax.fill_between(steps, [min(v) for v in by_step], [max(v) for v in by_step], color=f"C{i}", alpha=0.2)
        ax.set_title(f"{arm}: training reward (its own scale)", fontsize=9)
        ax.set_xlabel("step")
