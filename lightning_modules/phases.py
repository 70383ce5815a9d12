"""Where a training step's time and memory go, logged every step (veRL's ``timing_s/*`` and ``perf/*`` are the model).

Phases of a GRPO step, in order: ``weight_sync`` (waking the engine, loading the policy's pending weights, and the
engine's sleep after the rollout), ``rollout`` (generation), ``judge`` (the caption reward's judge), ``rewards`` (the
other scoring, the judge's time excluded), ``ref_logps`` (frozen log-probs: reference, and old ones when mu > 1) and
``update`` (forwards, backwards, optimizer steps). Keys:

- ``time/<phase>``: wall seconds, the device synchronised at each phase's edges so queued GPU work is charged to the
  phase that queued it; ``time/step``: from the rollout callback's start of the step to the module's metrics.
- ``memory/<phase>_peak_gib``: the phase's peak. On GPU the caching allocator's peak *reserved* bytes on this
  process's device (the trainer's tensors and the in-process engine's, cached blocks included); on CPU the process's
  peak resident set (Linux ``VmHWM``, reset at each phase's start through ``/proc/self/clear_refs``; where it cannot
  be reset, the peak since the process started, which ``memory/peak_resettable`` = 0 says).
- ``memory/<phase>_device_used_gib`` (GPU): the whole device's used memory at the phase's end, vLLM's sleep-mode pool
  and other processes included, which the allocator's counters do not see.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import torch

GIB = 2**30
_PROC = Path("/proc/self")


def _cuda() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _reset_peak() -> bool:
    """Start a new peak; returns whether the peak could be reset."""
    if _cuda():
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        (_PROC / "clear_refs").write_text("5")  # Linux: resets the peak resident set (VmHWM) to the current one
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    if _cuda():
        return torch.cuda.max_memory_reserved()
    try:
        for line in (_PROC / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


class PhaseClock:
    """Accumulates each phase's seconds and peak memory over a step; ``metrics()`` returns and resets them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak: dict[str, int] = {}
        self.device_used: dict[str, int] = {}
        self.resettable = True
        self.step_started: float | None = None

    def start_step(self) -> None:
        self.seconds, self.peak, self.device_used = {}, {}, {}
        self.step_started = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if _cuda():
            torch.cuda.synchronize()
        self.resettable &= _reset_peak()
        start = time.perf_counter()
        try:
            yield
        finally:
            if _cuda():
                torch.cuda.synchronize()
                free, total = torch.cuda.mem_get_info()
                self.device_used[name] = total - free
            self.add(name, time.perf_counter() - start)
            self.peak[name] = max(self.peak.get(name, 0), _peak_bytes())

    def add(self, name: str, seconds: float) -> None:
        """Charge ``seconds`` to phase ``name`` (time measured elsewhere, such as the judge's inside the rewards)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def metrics(self) -> dict[str, float]:
        """This step's ``time/*`` and ``memory/*`` (see the module docstring); the clock starts afresh."""
        out = {f"time/{name}": seconds for name, seconds in self.seconds.items()}
        out.update({f"memory/{name}_peak_gib": peak / GIB for name, peak in self.peak.items()})
        out.update({f"memory/{name}_device_used_gib": used / GIB for name, used in self.device_used.items()})
        if self.step_started is not None:
            out["time/step"] = time.perf_counter() - self.step_started
        if not _cuda():
            out["memory/peak_resettable"] = float(self.resettable)
        self.seconds, self.peak, self.device_used, self.step_started = {}, {}, {}, None
        return out
