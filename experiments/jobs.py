"""Run a study's units as parallel processes, each pinned to its own CPU cores.

A unit is one Python command (``python <argv>``) with the units it waits for. At most ``jobs`` run at once; each
gets a disjoint group of cores (``sched_setaffinity``) and as many OpenMP threads as its group has cores. On a small
CPU the tiny model's kernels gain little from a second thread, while a second unit on the other core doubles the work
done: on the 2-core machine two small study runs side by side on 1 thread each finish in 72 s, where one alone on 2
threads takes 85 s (``bench/RESULTS.md``), so a study runs its independent units side by side rather than giving each
all the cores.

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
    """One command of a study: ``python *argv``, its output in ``log``, started once the ``after`` units are done."""

    name: str
    argv: tuple[str, ...]
    log: Path
    after: tuple[str, ...] = ()


def usable_cores() -> list[int]:
    """The cores this process may run on (its affinity mask where the platform has one), no more than a cgroup CPU
    quota allows (a container limited to 2 CPUs on a 64-core host gets 2)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return cores[: cpu_quota(Path("/sys/fs/cgroup/cpu.max")) or len(cores)]


def cpu_quota(cpu_max: Path) -> int | None:
    """Whole CPUs a cgroup v2 ``cpu.max`` file allows (``"<quota> <period>"``, at least 1), or None without one."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1, int(quota) // int(period))


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
    """The unit's process, pinned to ``cores`` with as many OpenMP threads. The mask is set from here right after
    the start (the child is still starting Python, before any thread pool exists), not in a ``preexec_fn``, which
    can deadlock in a parent that has threads."""
    unit.log.parent.mkdir(parents=True, exist_ok=True)
    threads = str(len(cores))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
    with unit.log.open("w") as log:
        proc = subprocess.Popen([sys.executable, *unit.argv], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(proc.pid, cores)
    return proc


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(text[-lines:])


def _check(units: Sequence[Unit]) -> None:
    names = {u.name for u in units}
    for unit in units:
        missing = set(unit.after) - names
        if missing:
            raise ValueError(f"unit {unit.name!r} waits for unknown units {sorted(missing)}")


def run_units(
    units: Sequence[Unit],
    jobs: int,
    cores: Sequence[int] | None = None,
    say: Callable[[str], None] = print,
    poll_s: float = 0.5,
) -> dict[str, float]:
    """Run every unit, at most ``jobs`` at once, each after its ``after`` units. Returns unit -> seconds.

    Raises ``ValueError`` for an unknown or circular dependency and ``RuntimeError`` when a unit fails. On any
    other way out (an interrupt, a unit that cannot start) the running units are stopped before it re-raises, so
    none goes on writing into the study behind a rerun."""
    _check(units)
    free = core_groups(jobs, list(cores) if cores is not None else usable_cores())
    pending, running, seconds = list(units), {}, {}
    failed: list[str] = []
    began = time.monotonic()
    try:
        while pending or running:
            ready = [u for u in pending if set(u.after) <= seconds.keys()]
            if not running and not ready and not failed:
                raise ValueError(f"units wait for each other in a cycle: {sorted(u.name for u in pending)}")
            while ready and free and not failed:
                unit, group = ready.pop(0), free.pop(0)
                pending.remove(unit)
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
    except BaseException:
        for unit, _, proc, _ in running.values():
            proc.terminate()
            proc.wait()
            say(f"[study] stopped {unit.name}")
        raise
    if failed:
        raise RuntimeError("\n\n".join(failed) + "\n\nFinished units are kept: the same command runs the rest.")
    return seconds
