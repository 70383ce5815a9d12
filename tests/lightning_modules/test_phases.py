"""The phase clock: seconds per phase (summed over a phase's visits, moved between phases by ``add``), peak memory
per phase, and a fresh start after each ``metrics()``."""

import time

import pytest
import torch

from lightning_modules.phases import GIB, PhaseClock


def test_phases_time_and_memory_then_reset():
    clock = PhaseClock()
    clock.start_step()
    with clock.phase("rollout"):
        time.sleep(0.05)
    with clock.phase("update"):
        held = torch.ones(64 * 2**20 // 4)  # 64 MiB held through the phase: its peak resident set includes it
        time.sleep(0.02)
    with clock.phase("rollout"):  # a second visit adds up
        time.sleep(0.05)
    clock.add("judge", 0.03)
    clock.add("rollout", -0.03)  # the judge's share of the rollout phase moved to its own key
    metrics = clock.metrics()
    assert metrics["time/rollout"] >= 0.1 - 0.03  # two visits of >= 0.05 s, less the judge's 0.03 (sleeps only overrun)
    assert metrics["time/judge"] == pytest.approx(0.03)
    assert metrics["time/update"] >= 0.02
    assert metrics["time/step"] >= metrics["time/rollout"] + metrics["time/update"]
    assert metrics["memory/update_peak_gib"] * GIB >= held.numel() * 4
    assert metrics["memory/peak_resettable"] == 1.0  # Linux: VmHWM reset at each phase's start
    del held
    assert set(clock.metrics()) == {"memory/peak_resettable"}  # nothing carried into the next step


def test_a_phase_that_raises_is_still_charged():
    clock = PhaseClock()
    with pytest.raises(RuntimeError), clock.phase("rollout"):
        raise RuntimeError("engine failed")
    assert "time/rollout" in clock.metrics()
