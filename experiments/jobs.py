"""Run a study's units as parallel processes, each pinned to its own CPU cores.

A unit is one command (``python -m <module> <argv>``) with the units it waits for. At most ``jobs`` run at once; each
gets a disjoint group of cores (``sched_setaffinity``) and as many OpenMP threads as its group has cores. On a small
CPU the tiny model's kernels are too small to spread over cores: on the 2-core machine two 1-thread GRPO runs finish
together in 72 s where one 2-thread run takes 85 s alone (``bench/RESULTS.md``), so a study runs its independent units
side by side rather than giving each all the cores.

A failed unit stops new ones from starting; the running ones finish (their work is kept), then ``run_units`` raises
with the unit's name, exit status and the end of its log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[1]


@dataclass(frozen=True)
class Unit:
    """One command of a study: ``python -m module *argv``, its output in ``log``, started once ``after`` are done."""

    name: str
    module: str
    argv: tuple[str, ...]
    log: Path
    after: tuple[str, ...] = ()


def usable_cores() -> list[int]:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def core_groups(jobs: int, cores: Sequence[int]) -> list[tuple[int, ...]]:
    """``cores`` split into ``min(jobs, len(cores))`` disjoint groups of near-equal size, in order. Pure."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    n = min(jobs, len(cores))
    size, extra = divmod(len(cores), n)
    groups, start = [], 0
    for i in range(n):
        end = start + size + (i < extra)
        groups.append(tuple(cores[start:end]))
        start = end
    return groups


def _start(unit: Unit, cores: tuple[int, ...]) -> subprocess.Popen:
    unit.log.parent.mkdir(parents=True, exist_ok=True)
    threads = str(len(cores))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    pin = (lambda: os.sched_setaffinity(0, cores)) if hasattr(os, "sched_setaffinity") else None
    with unit.log.open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", unit.module, *unit.argv],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pin,
        )


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(text[-lines:])


def run_units(
    units: Sequence[Unit],
    jobs: int,
    cores: Sequence[int] | None = None,
    say: Callable[[str], None] = print,
    poll_s: float = 0.5,
) -> dict[str, float]:
    """Run every unit, at most ``jobs`` at once, each after its ``after`` units. Returns unit -> seconds.

    Raises ``ValueError`` for an unknown or circular dependency and ``RuntimeError`` when a unit fails."""
    names = {u.name for u in units}
    for unit in units:
        missing = set(unit.after) - names
        if missing:
            raise ValueError(f"unit {unit.name!r} waits for unknown units {sorted(missing)}")
    free = core_groups(jobs, list(cores) if cores is not None else usable_cores())
    pending, running, seconds = list(units), {}, {}
    failed: list[str] = []
    began = time.monotonic()
    while pending or running:
        ready = [u for u in pending if set(u.after) <= seconds.keys()]
        if not running and not ready and not failed:
            raise ValueError(f"units wait for each other in a cycle: {sorted(u.name for u in pending)}")
        while ready and free and not failed:
            unit = ready.pop(0)
            pending.remove(unit)
            group = free.pop(0)
            running[unit.name] = (unit, group, _start(unit, group), time.monotonic())
            say(f"[study] start {unit.name} on cores {list(group)} (log: {unit.log})")
        time.sleep(poll_s)
        for name, (unit, group, proc, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            free.append(group)
            if proc.returncode:
                failed.append(f"{name} failed (exit {proc.returncode}); the end of {unit.log}:\n{_tail(unit.log)}")
                continue
            seconds[name] = time.monotonic() - start
            say(
                f"[study] done  {name} in {seconds[name] / 60:.1f} min ({len(seconds)}/{len(units)} units, "
                f"{(time.monotonic() - began) / 60:.1f} min elapsed)"
            )
        if failed and not running:
            break
    if failed:
        raise RuntimeError("\n\n".join(failed) + "\n\nFinished units are kept: the same command runs the rest.")
    return seconds
