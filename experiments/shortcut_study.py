"""The shortcut-learning study: does plain GRPO learn to answer from the question's wording, and does Visionary-R1's
caption -> reason -> answer format with a caption reward keep the image in use?

For each seed: a tiny random-weight Qwen2.5-VL, the shortcut-prone benchmark of ``datamodules.shortcut`` (seeded),
one cold-start SFT per template on ``--sft-rows`` rows of the benchmark's cold-start stream (chain of thought written
from the scene, the cue absent unless ``--sft-cue-strength`` says otherwise: the start has no prior from the wording),
then one GRPO run per method from that template's SFT export, same budget (``configs/shortcut/base.yaml`` +
``configs/shortcut/<method>.yaml``):

- ``vanilla_grpo``: think template, accuracy + format;
- ``visionary_r1``: caption template, accuracy + format + 0.1 x caption reward judged by the policy's own engine;
- ``visionary_r1_oracle``: the same, the caption judged by rule (``rewards.OracleJudge``): an informative caption
  is always rewarded, whatever the policy's competence as a judge;
- ``hard_format``: think template, Vision-R1's hard formatting result reward.

Every held-out split (in-distribution, cue-absent, cue-reversed, hard) is evaluated after SFT (step 0), every
``--eval-every`` rollout batches and after the last update, with the shortcut diagnostics; curves count GRPO updates
(a pool that dynamic sampling finds uninformative is a batch without one). ``results.json`` keeps every value;
``report.md`` has the table of final means and spreads over seeds, the curves (``curves.png``), the command, the
machine and the time.
Each finished run leaves ``<out>/seed<S>/<method>/result.json``; the same command run again after an interruption
(or with more ``--methods``) keeps those runs and the SFT exports, runs only the rest, and counts the time of
the kept ones (``seconds`` in their files) in the study's.

The cold starts and runs are independent units (a run waits only for its template's cold start). ``--jobs N``
(default: one per core) runs N at once, each a process of this command (``--unit``) pinned to its own cores
(``experiments.jobs``), its output in ``seed<S>/logs/<unit>.log``; ``--jobs 1`` runs them one after another in this
process.

    vlrl study --out runs/shortcut            # the documented full run
    vlrl study --out /tmp/smoke --smoke       # CI: 2 GRPO steps, tiny splits
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from datamodules.shortcut import write_shortcut_benchmark
from experiments.jobs import Unit, run_units, usable_cores
from experiments.stats import bootstrap_ci, paired_differences
from tools.lightning_cli import main as vlrl
from tools.tiny_model import write_random_checkpoint

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
METHODS = ("vanilla_grpo", "visionary_r1", "visionary_r1_oracle", "hard_format")
TEMPLATE = {
    "vanilla_grpo": "think",
    "visionary_r1": "caption",
    "visionary_r1_oracle": "caption",
    "hard_format": "think",
}
SPLITS = ("in_distribution", "cue_absent", "cue_reversed", "hard")
# per split, what is tracked (val/<split>/<metric>); caption sufficiency only exists with a caption reward
METRICS = (
    "accuracy",
    "blind_accuracy",
    "visual_dependency",
    "caption_sufficiency",
    "reasoning_words_correct",
    "format_rate",
    "accuracy/cue_agrees",
    "accuracy/cue_disagrees",
)
TABLE = (  # report columns: heading, metric, number format
    ("accuracy", "accuracy", "{:.3f}"),
    ("blind accuracy", "blind_accuracy", "{:.3f}"),
    ("visual dependency", "visual_dependency", "{:+.3f}"),
    ("caption sufficiency", "caption_sufficiency", "{:.3f}"),
    ("format", "format_rate", "{:.3f}"),
    ("reasoning words (right)", "reasoning_words_correct", "{:.1f}"),
)


def _grpo_args(args, seed: int, method: str, model: Path, data: Path, out: Path) -> list[str]:
    val = {split: str(data / f"{split}.jsonl") for split in SPLITS}
    return [
        "-c",
        str(CONFIGS / "shortcut" / "base.yaml"),
        "-c",
        str(CONFIGS / "shortcut" / f"{method}.yaml"),
        f"--seed_everything={seed}",
        f"--model.init_args.policy.model_name_or_path={model}",
        f"--data.init_args.train_data={data / 'train.jsonl'}",
        f"--data.init_args.val_data={json.dumps(val)}",
        f"--data.init_args.loader.limit_val={args.eval_rows}",
        f"--data.init_args.loader.seed={seed}",
        f"--trainer.default_root_dir={out}",
        f"--trainer.logger.init_args.save_dir={out}",
        f"--trainer.max_steps={args.grpo_steps}",
        f"--trainer.val_check_interval={args.eval_every}",
        *args.grpo_args.split(),
    ]


def _val_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith("val/")}


def _seed_dir(args, seed: int) -> Path:
    return Path(args.out) / f"seed{seed}"


def prepare_seed(args, seed: int) -> None:
    """The seed's tiny random-weight checkpoint and benchmark (deterministic: a rerun writes the same files)."""
    out, px = _seed_dir(args, seed), args.image_size
    write_random_checkpoint(out / "tiny", min_pixels=px * px, max_pixels=px * px, seed=seed, vocab="task")
    write_shortcut_benchmark(
        out / "data",
        args.train_rows,
        args.eval_rows,
        seed,
        args.cue_strength,
        px,
        distractors=args.distractors,
        n_sft=args.sft_rows,
        sft_cue_strength=args.sft_cue_strength,
    )


def _unit_record(out: str | Path, unit: str) -> Path:
    """The file a finished unit (``seed<S>/sft_<template>`` or ``seed<S>/<method>``) leaves: its presence means
    done, and it holds the unit's seconds."""
    return Path(out) / unit / ("seconds.json" if unit.split("/")[-1].startswith("sft_") else "result.json")


def _unit_seconds(path: Path) -> float:
    saved = json.loads(path.read_text())
    return float(saved["seconds"] if isinstance(saved, dict) else saved)


def _write_json(path: Path, value) -> None:
    """Whole or not at all: a unit killed while writing its record must not leave a file that reads as done."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


def _invocations(out: Path, seconds: float | None = None, jobs: int = 1) -> float:
    """The wall seconds of every invocation of the study in ``out`` (``invocations.json``), after adding this one's
    when ``seconds`` is given: an interrupted study's time is the sum of its invocations', however many ran at once."""
    path = out / "invocations.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    if seconds is not None:
        runs.append({"seconds": round(seconds, 1), "jobs": jobs})
        _write_json(path, runs)
    return sum(r["seconds"] for r in runs)


def cold_start(args, seed: int, template: str) -> None:
    """The seed's cold-start SFT for ``template``, exported to ``seed<S>/sft_<template>/export``."""
    out, px = _seed_dir(args, seed), args.image_size
    run, began = out / f"sft_{template}", time.monotonic()
    vlrl(
        [
            "fit",
            "-c",
            str(CONFIGS / "demo_sft.yaml"),
            f"--seed_everything={seed}",
            f"--model.init_args.policy.model_name_or_path={out / 'tiny'}",
            f"--model.init_args.export_dir={run / 'export'}",
            f"--data.init_args.train_data={out / 'data' / f'train_sft_{template}.jsonl'}",
            "--data.init_args.val_data=null",
            f"--data.init_args.examples.min_pixels={px * px}",
            f"--data.init_args.examples.max_pixels={px * px}",
            f"--trainer.max_steps={args.sft_steps}",
            "--trainer.limit_val_batches=0",
            f"--trainer.default_root_dir={run}",
            f"--trainer.logger.init_args.save_dir={run}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    _write_json(_unit_record(args.out, f"seed{seed}/sft_{template}"), round(time.monotonic() - began, 1))


def run_method(args, seed: int, method: str) -> None:
    """One GRPO arm from its template's SFT export: the after-SFT evaluation, the run, and a final evaluation when
    the last scheduled one came before the last batch. Leaves ``seed<S>/<method>/result.json`` (curve, per-row
    scores, seconds)."""
    out, began = _seed_dir(args, seed), time.monotonic()
    run, data = out / method, out / "data"
    model = out / f"sft_{TEMPLATE[method]}" / "export"
    # the after-SFT evaluation samples from the recipe's own engine, as every later one does
    start = vlrl(
        ["validate", *_grpo_args(args, seed, method, model, data, run / "start"), "--trainer.enable_progress_bar=false"]
    )
    points = [{"step": 0, **_val_metrics(start.trainer.callback_metrics)}]
    fit = vlrl(["fit", *_grpo_args(args, seed, method, model, data, run)])
    logged, batches = _logged_validations(Path(fit.trainer.logger.log_dir) / "metrics.csv")
    points += logged
    if points[-1].get("batch", 0) < batches:  # ``--eval-every`` counts batches, not updates: evaluate the end
        fit.trainer.validate(fit.model, datamodule=fit.datamodule)
        points.append({"step": fit.trainer.global_step, "batch": batches, **_val_metrics(fit.trainer.callback_metrics)})
    rows = {"start": _question_scores(start.model.log_dir), "final": _question_scores(fit.model.log_dir)}
    seconds = round(time.monotonic() - began, 1)
    _write_json(_unit_record(args.out, f"seed{seed}/{method}"), {"curve": points, "rows": rows, "seconds": seconds})


def _units(args, argv: Sequence[str]) -> list[Unit]:
    """The study as units for ``experiments.jobs``: one cold start per seed and template, then one run per seed and
    method after its template's cold start. Each is this command again with ``--unit``."""
    units = []
    for seed in args.seeds:
        for template in sorted({TEMPLATE[m] for m in args.methods}):
            name = f"sft_{template}"
            units.append(_unit(args, argv, seed, name, f"sft:{seed}:{template}", ()))
        for method in args.methods:
            after = (f"seed{seed}/sft_{TEMPLATE[method]}",)
            units.append(_unit(args, argv, seed, method, f"run:{seed}:{method}", after))
    return units


def _unit(args, argv: Sequence[str], seed: int, name: str, spec: str, after: tuple[str, ...]) -> Unit:
    """``argv`` again with the unit; ``--out`` made absolute, since the worker runs from the project's root."""
    log = _seed_dir(args, seed) / "logs" / f"{name}.log"
    command = ("-m", "experiments.shortcut_study", *argv, "--out", str(Path(args.out).resolve()), "--unit", spec)
    return Unit(f"seed{seed}/{name}", command, log, after)


def _run_unit(args, spec: str) -> None:
    """``--unit sft:<seed>:<template>`` or ``--unit run:<seed>:<method>``: one unit, in this process."""
    kind, seed, name = (spec.split(":") + ["", "", ""])[:3]
    if kind == "sft" and name in TEMPLATE.values() and seed.isdigit():
        return cold_start(args, int(seed), name)
    if kind == "run" and name in METHODS and seed.isdigit():
        return run_method(args, int(seed), name)
    raise ValueError(f"--unit {spec!r}: expected sft:<seed>:<template> or run:<seed>:<method>")


def run_study(args, argv: Sequence[str]) -> None:
    """Every unit not finished by an earlier invocation: in this process when ``--jobs 1``, else as parallel
    processes pinned to their own cores."""
    units = _units(args, argv)
    kept = {u.name for u in units if _unit_record(args.out, u.name).exists()}  # finished by an earlier invocation
    todo = [replace(u, after=tuple(set(u.after) - kept)) for u in units if u.name not in kept]
    for seed in args.seeds:
        prepare_seed(args, seed)
    if args.jobs == 1:
        for unit in todo:
            _run_unit(args, unit.argv[-1])
    elif todo:
        run_units(todo, min(args.jobs, len(todo)))


def collect(args) -> tuple[dict, dict]:
    """``curves`` (seed -> method -> [{step, val/...}], step 0 = after SFT) and ``rows`` (seed -> method ->
    "start"/"final" -> split -> {row id: [score, category]}) from the runs' ``result.json``."""
    curves: dict[int, dict] = {}
    rows: dict[int, dict] = {}
    for seed in args.seeds:
        for method in args.methods:
            done = json.loads(_unit_record(args.out, f"seed{seed}/{method}").read_text())
            curves.setdefault(seed, {})[method] = done["curve"]
            rows.setdefault(seed, {})[method] = done["rows"]
    return curves, rows


def _question_scores(log_dir: Path) -> dict[str, dict[str, list]]:
    """split -> {row id: [score, category]} from the last validation's per-question files in ``log_dir``."""
    scores = {}
    for split in SPLITS:
        path = Path(log_dir) / f"results_val_{split}_questions.jsonl"
        if path.exists():
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            scores[split] = {str(r["id"]): [float(r["score"]), r.get("category")] for r in records}
    return scores


def _logged_validations(metrics_csv: Path) -> tuple[list[dict], int]:
    """The validation rows of a CSVLogger file as [{step, batch, val/...}], one per validation (keys merged per
    step), and the number of rollout batches run. The logger counts rollout batches; under dynamic sampling a pool
    without an informative group is a batch without an update, so ``step`` (GRPO updates) is the batch count less
    those pools (``rollout/uninformative_steps``)."""
    by_batch: dict[int, dict] = {}
    skipped: dict[int, int] = {}
    batches = 0
    for row in csv.DictReader(metrics_csv.open()):
        batch = int(row["step"]) + 1  # logged at the last batch run
        batches = max(batches, batch)
        if row.get("rollout/uninformative_steps") not in ("", None):
            skipped[batch] = int(float(row["rollout/uninformative_steps"]))
        values = {k: float(v) for k, v in row.items() if k.startswith("val/") and v not in ("", None)}
        if values:
            by_batch.setdefault(batch, {}).update(values)
    points = [{"step": b - skipped.get(b, 0), "batch": b, **values} for b, values in sorted(by_batch.items())]
    return points, batches


def summarise(curves: dict[int, dict[str, list[dict]]], methods) -> dict[str, dict[str, dict[str, float]]]:
    """method -> "<split>/<metric>" -> {mean, std, n, start_mean} over seeds, at the last evaluation. Pure."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for method in methods:
        for split in SPLITS:
            for metric in METRICS:
                key = f"val/{split}/{metric}"
                final = [c[method][-1][key] for c in curves.values() if key in c[method][-1]]
                start = [c[method][0][key] for c in curves.values() if key in c[method][0]]
                if final:
                    table.setdefault(method, {})[f"{split}/{metric}"] = {
                        "mean": statistics.fmean(final),
                        "std": statistics.stdev(final) if len(final) > 1 else 0.0,
                        "n": len(final),
                        "start_mean": statistics.fmean(start) if start else float("nan"),
                    }
    return table


def verdict(table: dict) -> str:
    """Does the caption format beat vanilla GRPO where shortcuts fail (cue-reversed and hard accuracy, visual
    dependency on cue-absent), by more than the spread over seeds? Pure; the report states it as measured."""
    if "visionary_r1" not in table or "vanilla_grpo" not in table:
        return "not decided: both vanilla_grpo and visionary_r1 are needed"
    lines, wins = [], 0
    for key in ("cue_reversed/accuracy", "hard/accuracy", "cue_absent/visual_dependency"):
        a, b = table["visionary_r1"].get(key), table["vanilla_grpo"].get(key)
        if a is None or b is None:
            continue
        margin = a["mean"] - b["mean"]
        clear = margin > a["std"] + b["std"]
        wins += clear
        lines.append(
            f"{key}: Visionary-R1 {a['mean']:.3f} ± {a['std']:.3f} vs vanilla {b['mean']:.3f} ± "
            f"{b['std']:.3f} ({'clearly higher' if clear else 'not clearly higher'})"
        )
    head = (
        "The claim reproduced at this scale"
        if wins == len(lines) and lines
        else "The claim did not reproduce at this scale"
    )
    return head + f" ({wins} of {len(lines)} measures clearly favour the caption format):\n- " + "\n- ".join(lines)


def plot(curves: dict[int, dict[str, list[dict]]], methods, path: Path) -> None:
    """Accuracy (top) and visual dependency (bottom) over GRPO steps, per split; one line per method and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (("accuracy", "accuracy"), ("visual_dependency", "visual dependency"))
    fig, axes = plt.subplots(
        len(rows), len(SPLITS), figsize=(4 * len(SPLITS), 3.0 * len(rows)), sharey="row", squeeze=False
    )
    for (metric, label), ax_row in zip(rows, axes):
        for ax, split in zip(ax_row, SPLITS):
            key = f"val/{split}/{metric}"
            for method in methods:
                for i, seed_curves in enumerate(curves.values()):
                    points = [p for p in seed_curves[method] if key in p]
                    ax.plot(
                        [p["step"] for p in points],
                        [p[key] for p in points],
                        alpha=0.7,
                        marker=".",
                        color=f"C{list(methods).index(method)}",
                        label=method if i == 0 else None,
                    )
            ax.set_title(f"{split}: {label}", fontsize=9)
            ax.set_xlabel("GRPO step")
        ax_row[0].set_ylabel(label)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


NOTES_MARKER = "<!-- notes: text below this line is kept when the report is re-rendered -->"


def _cell(values: dict, key: str, fmt: str) -> str:
    v = values.get(key)
    return f"{fmt.format(v['mean'])} ± {v['std']:.3f} ({fmt.format(v['start_mean'])})" if v else "-"


def write_report(meta: dict, table: dict, out: Path, extra: Sequence[str] = ()) -> Path:
    """``report.md`` from the summary table and the run's facts (``meta``: command, machine, seconds, seeds, ...)."""
    lines = [
        "# Shortcut study: results",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; time: {meta['seconds'] / 60:.1f} min, {meta.get('jobs', 1)} units at a time "
        f"({meta.get('unit_seconds', meta['seconds']) / 60:.1f} min of cold starts and runs added up); seeds "
        f"{meta['seeds']}; cue strength "
        f"{meta['cue_strength']}; {meta.get('distractors', 0)} distractors; {meta['sft_steps']} SFT steps per "
        f"template, {meta['grpo_steps']} GRPO steps per method; {meta['eval_rows']} rows per held-out split.",
        "",
        (
            "Smoke run: it checks the pipeline end to end; its numbers decide nothing."
            if meta["smoke"]
            else verdict(table)
        ),
        "",
        "Final evaluation (one completion per row, sampled as `evaluation.sampling` in "
        "configs/shortcut/base.yaml says), "
        "mean ± spread (std) over seeds, with the after-SFT mean in brackets:",
        "",
        "| method | split | " + " | ".join(name for name, _, _ in TABLE) + " |",
        "|---|---|" + "---|" * len(TABLE),
    ]
    for method, values in table.items():
        for split in SPLITS:
            cells = [_cell(values, f"{split}/{key}", fmt) for _, key, fmt in TABLE]
            lines.append(f"| {method} | {split} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Where the wording is the cue: in-distribution accuracy on rows whose colour agrees with the cue and "
        "on rows where it does not (a model answering from the wording scores high on the first, ~0 on the "
        "second):",
        "",
        "| method | cue agrees | cue disagrees |",
        "|---|---|---|",
    ]
    for method, values in table.items():
        agree, disagree = (
            _cell(values, f"in_distribution/accuracy/{c}", "{:.3f}") for c in ("cue_agrees", "cue_disagrees")
        )
        lines.append(f"| {method} | {agree} | {disagree} |")
    lines += ["", *extra, "![accuracy and visual dependency over GRPO steps per split](curves.png)", ""]
    path = out / "report.md"
    notes = path.read_text().partition(NOTES_MARKER)[2] if path.exists() else ""  # kept across re-renders
    path.write_text("\n".join(lines) + (NOTES_MARKER + notes if notes else ""))
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="vlrl study", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/shortcut")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--cue-strength", type=float, default=0.9)
    parser.add_argument("--train-rows", type=int, default=512)
    parser.add_argument("--sft-rows", type=int, default=256, help="cold-start rows: reasoning traces are scarce")
    parser.add_argument(
        "--sft-cue-strength",
        type=float,
        default=0.0,
        help="the cold start's cue: 0 starts RL from a policy with no prior from the wording",
    )
    parser.add_argument("--eval-rows", type=int, default=200, help="rows per held-out split")
    parser.add_argument("--sft-steps", type=int, default=600)
    parser.add_argument("--grpo-steps", type=int, default=300)
    parser.add_argument(
        "--eval-every", type=int, default=250, help="rollout batches between evaluations (one more at the end)"
    )
    parser.add_argument(
        "--distractors",
        type=int,
        default=2,
        choices=[0, 1, 2],
        help="objects of other shapes beside the asked one (colour-question splits)",
    )
    parser.add_argument("--image-size", type=int, default=56)
    parser.add_argument("--grpo-args", default="", help="extra CLI overrides for every GRPO run, space-separated")
    parser.add_argument("--smoke", action="store_true", help="CI: one seed, 2 GRPO steps, HF engine, tiny splits")
    parser.add_argument("--report-only", action="store_true", help="re-render the report of --out's results.json")
    parser.add_argument(
        "--jobs",
        type=_positive,
        default=len(usable_cores()),
        help="units (cold starts, runs) at once, each a process pinned to its share of the cores (default: one per "
        "core); 1 runs everything in this process",
    )
    parser.add_argument(
        "--unit", help=argparse.SUPPRESS
    )  # a worker of --jobs: sft:<seed>:<template>, run:<seed>:<method>
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.train_rows, args.sft_rows, args.eval_rows = args.seeds[:1], 16, 8, 4
        args.sft_steps, args.grpo_steps, args.eval_every = 2, 2, 2
        args.grpo_args = (
            '--model.init_args.engine={"class_path":"rollout.hf.HFEngine"} '
            "--model.init_args.rollout.group_size=2 --model.init_args.rollout.max_new_tokens=8 "
            "--model.init_args.rollout.dynamic_sampling=false --data.init_args.loader.batch_size=2 "
            "--model.init_args.evaluation.max_new_tokens=8 --trainer.enable_progress_bar=false " + args.grpo_args
        )
    out = Path(args.out)
    if args.report_only:  # re-render the table, plot and report of a finished run from its results.json
        saved = json.loads((out / "results.json").read_text())
        curves = {int(seed): c for seed, c in saved["curves"].items()}
        rows = {int(seed): r for seed, r in saved.get("rows", {}).items()}
        return _finish(curves, rows, list(saved["meta"]["methods"]), saved["meta"], out)
    if args.unit:
        _run_unit(args, args.unit)
        return {}
    start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    try:
        run_study(args, argv)
    finally:  # an interrupted invocation's time still counts in the study's
        seconds = _invocations(out, time.monotonic() - start, args.jobs)
    curves, rows = collect(args)
    units = [_unit_record(out, u.name) for u in _units(args, argv)]
    meta = {
        "command": " ".join(["vlrl study", *argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, {platform.system()}, no GPU"
        if not _has_gpu()
        else f"{platform.machine()}, {os.cpu_count()} CPU cores, GPU",
        "seconds": round(seconds, 1),  # wall time, every invocation's
        # the finished units' own times added up, each measured on its share of the cores
        "unit_seconds": round(sum(_unit_seconds(path) for path in units), 1),
        "smoke": args.smoke,
        **{
            k: getattr(args, k)
            for k in (
                "seeds",
                "methods",
                "cue_strength",
                "train_rows",
                "sft_rows",
                "eval_rows",
                "sft_steps",
                "grpo_steps",
                "eval_every",
                "image_size",
                "distractors",
                "sft_cue_strength",
                "jobs",
            )
        },
    }
    return _finish(curves, rows, list(args.methods), meta, out)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _finish(curves: dict, rows: dict, methods: list[str], meta: dict, out: Path) -> dict:
    table = summarise(curves, methods)
    iv = intervals(rows, methods) if rows else {}
    saved = {"meta": meta, "curves": curves, "summary": table, "intervals": iv, "rows": rows}
    (out / "results.json").write_text(json.dumps(saved, indent=1))
    plot(curves, methods, out / "curves.png")
    report = write_report(meta, table, out, interval_lines(iv, table, meta) if iv else [])
    print(report.read_text())
    return {"curves": curves, "summary": table, "intervals": iv, "meta": meta}


CUE_CATEGORIES = ("cue_agrees", "cue_disagrees")
CUE_SPLITS = ("in_distribution", "cue_absent")  # the splits with rows of both categories


def _per_seed(rows: dict, method: str, stage: str, split: str, category: str | None = None) -> list[dict]:
    """One {row id: score} per seed for ``method`` at ``stage`` ("start"/"final") on ``split`` (and category)."""
    out = []
    for seed_rows in rows.values():
        scored = seed_rows.get(method, {}).get(stage, {}).get(split, {})
        out.append({i: score for i, (score, cat) in scored.items() if category is None or cat == category})
    return out


def intervals(rows: dict, methods, draws: int = 2000) -> dict[str, dict[str, list[float]]]:
    """Hierarchical bootstrap intervals ``[mean, low, high]`` (``experiments.stats``). Pure.

    ``<method>`` -> ``<stage>:<split>`` and ``<stage>:<cue split>/<cue category>`` accuracy;
    ``<method> - vanilla_grpo`` -> ``<split>`` final accuracy, paired on rows; ``<method> change`` -> the final minus
    the after-SFT accuracy of the same rows, per split and cue category."""
    keys = [(split, None) for split in SPLITS] + [(split, c) for split in CUE_SPLITS for c in CUE_CATEGORIES]
    out: dict[str, dict[str, list[float]]] = {}
    for method in methods:
        for split, category in keys:
            name = split if category is None else f"{split}/{category}"
            start, final = (_per_seed(rows, method, stage, split, category) for stage in ("start", "final"))
            if not any(final):
                continue
            for stage, scores in (("start", start), ("final", final)):
                out.setdefault(method, {})[f"{stage}:{name}"] = list(
                    bootstrap_ci([list(s.values()) for s in scores], draws)
                )
            out.setdefault(f"{method} change", {})[name] = list(bootstrap_ci(paired_differences(final, start), draws))
            if method != "vanilla_grpo" and "vanilla_grpo" in methods and category is None:
                base = _per_seed(rows, "vanilla_grpo", "final", split)
                diff = bootstrap_ci(paired_differences(final, base), draws)
                out.setdefault(f"{method} - vanilla_grpo", {})[name] = list(diff)
    return out


def _ci(value: list[float] | None, sign: bool = False) -> str:
    if not value:
        return "-"
    fmt = "{:+.3f}" if sign else "{:.3f}"
    return f"{fmt.format(value[0])} [{fmt.format(value[1])}, {fmt.format(value[2])}]"


def _clear(value: list[float]) -> str:
    return "higher" if value[1] > 0 else "lower" if value[2] < 0 else "no clear difference"


def interval_lines(iv: dict, table: dict, meta: dict) -> list[str]:
    """The report's section of bootstrap intervals: part one (does vanilla GRPO learn the cue?), final accuracy
    per arm, and each arm against vanilla GRPO, paired on rows."""
    lines = [
        "## 95% bootstrap intervals",
        "",
        "Seeds, then rows within each seed, resampled (2000 draws; `experiments/stats.py`). Accuracy is one "
        "sampled completion per row; blind accuracy and visual dependency have no per-row record, so they keep "
        "the spread over seeds above.",
        "",
    ]
    van, change = iv.get("vanilla_grpo"), iv.get("vanilla_grpo change")
    if van and change:
        blind = table.get("vanilla_grpo", {}).get("in_distribution/blind_accuracy")
        cue_only = meta["cue_strength"] + (1 - meta["cue_strength"]) / 4
        falls = [change[f"{s}/cue_disagrees"][2] < 0 for s in CUE_SPLITS if f"{s}/cue_disagrees" in change]
        learned = any(falls) and blind is not None and blind["mean"] > blind["start_mean"]
        lines += [
            f"**Part one: vanilla GRPO {'learned' if learned else 'did not clearly learn'} the cue** (learned: "
            "its in-distribution blind accuracy rose and its accuracy where the cue disagrees fell, the interval "
            f"below 0, on a split with such rows). A model answering from the wording alone scores "
            f"{cue_only:.3f} image-blind on in-distribution rows, 1 where the cue agrees and 0 where it "
            "disagrees; on cue-absent rows the colour is independent of the shape, so 3 in 4 disagree.",
            "",
            "| vanilla GRPO | after SFT | after GRPO | change (paired) |",
            "|---|---|---|---|",
        ]
        for split in CUE_SPLITS:
            for category in CUE_CATEGORIES:
                name = f"{split}/{category}"
                lines.append(
                    f"| {split} accuracy, {category.replace('_', ' ')} | {_ci(van.get('start:' + name))} | "
                    f"{_ci(van.get('final:' + name))} | {_ci(change.get(name), True)} |"
                )
        if blind:
            lines.append(
                f"| in_distribution blind accuracy (mean ± std over seeds) | {blind['start_mean']:.3f} | "
                f"{blind['mean']:.3f} ± {blind['std']:.3f} | {blind['mean'] - blind['start_mean']:+.3f} |"
            )
        lines.append("")
    columns = [*SPLITS, *(f"{s}/{c}" for s in CUE_SPLITS for c in CUE_CATEGORIES)]
    lines += ["Final accuracy:", "", "| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for method in meta["methods"]:
        if method in iv:
            lines.append(f"| {method} | " + " | ".join(_ci(iv[method].get("final:" + c)) for c in columns) + " |")
    diffs = [m for m in meta["methods"] if f"{m} - vanilla_grpo" in iv]
    if diffs:
        lines += [
            "",
            "Against vanilla GRPO (final accuracy, paired on rows):",
            "",
            "| method | " + " | ".join(SPLITS) + " |",
            "|---|" + "---|" * len(SPLITS),
        ]
        for method in diffs:
            values = iv[f"{method} - vanilla_grpo"]
            cells = [f"{_ci(values.get(s), True)} ({_clear(values[s])})" if s in values else "-" for s in SPLITS]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + [""]


if __name__ == "__main__":
    main()
