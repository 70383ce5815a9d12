"""Read a run back, whichever logger wrote it: its scalars from Lightning's ``CSVLogger`` (``metrics.csv``) or
``TensorBoardLogger`` (``events.out.tfevents.*``), its rollout samples (``samples.jsonl``) and evaluation records
(``results_<stage>_questions.jsonl``), and a listing of the runs under a folder. ``notebooks/inspect_run.ipynb`` is
built on it.

A run is a log folder, ``<save_dir>/<name>/version_N``: the folder that holds ``metrics.csv`` or the event files
(the demo recipes and the evaluation configs log to CSV, the GPU training recipes to TensorBoard). A folder with both
(a CSV and a TensorBoard logger sharing one folder, which log the same values) reads as CSV.

Resumed runs read as one run. A TensorBoard run resumed with ``--ckpt_path=last`` appends a new event file to its
folder that opens with ``SessionLog.START`` at the resume step (``tools.lightning_cli.restart_tensorboard_at``):
what the earlier files logged at that step and after is dropped, as TensorBoard drops it (its ``EventAccumulator``,
which reads the files here, purges those events), so each step reads once, with the resumed run's value. Every
scalar is kept (``EventAccumulator`` otherwise keeps a random 10,000 per tag). A CSV run needs nothing: the resume
already rewrote ``metrics.csv`` without the killed run's later rows (``keep_metrics_before``).

The newest run is never picked for the user (it may be an evaluation): ``choose_run`` opens the run named, and with
none named lists the runs to choose from.
"""

from __future__ import annotations

import csv
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

CSV_FILE = "metrics.csv"
EVENTS_GLOB = "events.out.tfevents.*"
SAMPLES_FILE = "samples.jsonl"
FIT_PREFIXES = ("train/", "reward/", "rollout/")  # logged by training steps only
Scalars = dict[str, list[tuple[int, float]]]


@dataclass(frozen=True)
class RunInfo:
    """One run folder, as ``find_runs`` lists it."""

    path: Path
    kind: str  # "CSV" or "TensorBoard"
    stage: str  # "fit", "validate", "test", or "?" (nothing logged that tells)
    last_step: int | None  # the highest step logged; None before the first log
    modified: float  # the newest file's modification time (seconds since the epoch)


class NoRunChosen(LookupError):
    """No run named, or a name that is not a run folder; the message lists the runs to choose from."""


def run_kind(run_dir: str | Path) -> str | None:
    """``"CSV"`` for a folder holding ``metrics.csv``, ``"TensorBoard"`` for one holding event files, else None."""
    run_dir = Path(run_dir)
    if (run_dir / CSV_FILE).is_file():
        return "CSV"
    if any(p.is_file() for p in run_dir.glob(EVENTS_GLOB)):
        return "TensorBoard"
    return None


def read_scalars(run_dir: str | Path) -> Scalars:
    """Every scalar the run logged, ``{key: [(step, value), ...]}`` in the order logged, keys sorted. TensorBoard
    values are float32 (what its event files store)."""
    run_dir = Path(run_dir)
    kind = run_kind(run_dir)
    if kind is None:
        raise FileNotFoundError(f"{run_dir} holds neither {CSV_FILE} nor TensorBoard event files: not a run folder")
    return _csv_scalars(run_dir / CSV_FILE) if kind == "CSV" else _tensorboard_scalars(run_dir)


def _csv_scalars(path: Path) -> Scalars:
    """The columns of Lightning's ``metrics.csv`` but ``step``; a row leaves empty the keys it did not log."""
    scalars: Scalars = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("step"):  # a row cut short (a run being written)
                continue
            step = int(float(row["step"]))
            for key, value in row.items():
                if key not in (None, "step") and value not in (None, ""):
                    scalars.setdefault(key, []).append((step, float(value)))
    return dict(sorted(scalars.items()))


def _tensorboard_scalars(run_dir: Path) -> Scalars:
    """The scalars of all event files in ``run_dir``, as TensorBoard shows them (orphaned steps purged)."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    events = ea.EventAccumulator(str(run_dir), size_guidance={ea.SCALARS: 0}, purge_orphaned_data=True)
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in sorted(events.Tags()[ea.SCALARS])}


def run_stage(run_dir: str | Path, keys) -> str:
    """``fit`` when the run logged training metrics (``train/``, ``reward/``, ``rollout/``), else ``test`` or
    ``validate`` by its metric keys (``test/...``, ``val/...``) or result files (``results_test*``, ``results_val*``),
    else ``?``."""
    if any(key.startswith(FIT_PREFIXES) for key in keys):
        return "fit"
    names = [*keys, *(p.name.removeprefix("results_") for p in Path(run_dir).glob("results_*"))]
    for prefix, stage in (("test", "test"), ("val", "validate")):
        if any(re.match(rf"{prefix}([/_.]|$)", name) for name in names):
            return stage
    return "?"


def describe_run(run_dir: str | Path) -> RunInfo:
    """The run's kind, stage, last step and modification time (reads its scalars)."""
    run_dir = Path(run_dir)
    scalars = read_scalars(run_dir)
    last = max((step for points in scalars.values() for step, _ in points), default=None)
    modified = max((p.stat().st_mtime for p in run_dir.iterdir() if p.is_file()), default=run_dir.stat().st_mtime)
    return RunInfo(run_dir, run_kind(run_dir), run_stage(run_dir, scalars), last, modified)


def find_runs(root: str | Path) -> list[RunInfo]:
    """The run folders under ``root`` (``root`` included), newest first; none when ``root`` does not exist."""
    root = Path(root)
    if not root.is_dir():
        return []
    folders = {p.parent for pattern in (CSV_FILE, EVENTS_GLOB) for p in root.rglob(pattern) if p.is_file()}
    return sorted((describe_run(folder) for folder in folders), key=lambda run: run.modified, reverse=True)


def format_runs(runs: list[RunInfo], root: str | Path) -> str:
    """``runs`` as a table, one run a line, paths relative to ``root`` where they lie under it."""
    rows = [("run", "kind", "stage", "last step", "modified")]
    for run in runs:
        path = run.path.relative_to(root) if run.path.is_relative_to(root) else run.path
        step = "-" if run.last_step is None else str(run.last_step)
        rows.append(
            (str(path), run.kind, run.stage, step, time.strftime("%Y-%m-%d %H:%M", time.localtime(run.modified)))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def choose_run(run: str | Path | None, runs_root: str | Path) -> Path:
    """The run folder ``run`` names: a path absolute or relative to the working directory, to ``runs_root``'s parent
    (``runs/...`` from the repository) or to ``runs_root``. With no run named (None or empty), or a folder that is
    not a run, raises ``NoRunChosen`` listing the runs under ``runs_root`` (or under the folder named)."""
    runs_root = Path(runs_root)
    if not run:
        raise NoRunChosen("No run named. " + _listing(runs_root, runs_root))
    found = next((p for p in (Path(run), runs_root.parent / run, runs_root / run) if p.is_dir()), None)
    if found is None:
        raise NoRunChosen(f"RUN={run}: no such folder. " + _listing(runs_root, runs_root))
    if run_kind(found) is None:
        raise NoRunChosen(
            f"RUN={run}: {found} is not a run folder (no {CSV_FILE}, no event files). " + _listing(found, runs_root)
        )
    return found


def _listing(where: Path, runs_root: Path) -> str:
    """What to set RUN to: the runs under ``where`` as a table, or that there are none."""
    runs = find_runs(where)
    if not runs:
        return (
            f"There are no run folders (with {CSV_FILE} or TensorBoard event files) under {where}: train one first "
            "(make demo), or set RUN to a run folder elsewhere."
        )
    return f"Set RUN (or VLRL_RUN) to one of the run folders under {runs_root}:\n\n" + format_runs(runs, runs_root)


def curve_panels(keys) -> dict[str, list[str]]:
    """The keys to plot, by panel: reward (``reward/*``, not the ``_std`` spreads), loss (``*/loss``), KL
    (``*/kl``), accuracy (``*/accuracy``, ``*/benchmark_accuracy``, ...: not the per-category ``*/accuracy/<category>``)
    and completion length; a panel with no key is left out."""
    last = {key: key.rsplit("/", 1)[-1] for key in keys}
    panels = {
        "reward": [k for k in keys if k.startswith("reward/") and not k.endswith("_std")],
        "loss": [k for k in keys if last[k] == "loss"],
        "KL": [k for k in keys if last[k] == "kl"],
        "accuracy": [k for k in keys if last[k].endswith("accuracy")],
        "completion length": [k for k in keys if last[k] in ("completion_length", "completion_length_mean")],
    }
    return {title: sorted(panel) for title, panel in panels.items() if panel}


def read_samples(run_dir: str | Path) -> list[dict]:
    """The rollout samples the run logged (``samples.jsonl``, written by ``RolloutCallback``: ``step``, ``id``,
    ``images``, ``problem``, ``solution``, ``completion``, ``rewards``), in order; ``[]`` when it has none."""
    return _read_jsonl(Path(run_dir) / SAMPLES_FILE)


def read_question_records(run_dir: str | Path) -> dict[str, list[dict]]:
    """An evaluation's per-question records (``results_<stage>_questions.jsonl``: ``id``, ``solution``, ``answer``,
    ``score``, ``completion``, ...), by stage (``val``, ``test``, ``val_<name>``)."""
    files = sorted(Path(run_dir).glob("results_*_questions.jsonl"))
    return {p.name.removeprefix("results_").removesuffix("_questions.jsonl"): _read_jsonl(p) for p in files}


def _read_jsonl(path: Path) -> list[dict]:
    """One record a line; a last line without its newline (still being written) is left out."""
    if not path.is_file():
        return []
    return [
        json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n") and line.strip()
    ]
