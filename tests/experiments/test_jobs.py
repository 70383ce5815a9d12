"""The study's unit runner: core groups by hand, and real processes that check their order, their cores and their
threads, run side by side, and fail with their log."""

import json
import os

import pytest

from experiments.jobs import Unit, core_groups, cpu_quota, run_units, usable_cores

# a unit: says it is up, optionally waits until another unit is up, then records its affinity and thread count
PROBE = """
import json, os, sys, time
name, out, wait_for = sys.argv[1], sys.argv[2], sys.argv[3]
open(os.path.join(out, name + ".up"), "w").close()
if wait_for != "-":
    deadline = time.monotonic() + 600  # a hang guard: run one after the other, the units would wait for ever
    while not os.path.exists(os.path.join(out, wait_for + ".up")):
        if time.monotonic() > deadline:
            sys.exit("waited 600 s for " + wait_for)
        time.sleep(0.05)
record = {"cores": sorted(os.sched_getaffinity(0)), "threads": os.environ["OMP_NUM_THREADS"], "t": time.time()}
with open(os.path.join(out, name + ".json"), "w") as f:
    json.dump(record, f)
"""


def _unit(tmp_path, name, wait_for="-", after=()):
    return Unit(name, ("-c", PROBE, name, str(tmp_path), wait_for), tmp_path / "logs" / f"{name}.log", tuple(after))


def _record(tmp_path, name):
    return json.loads((tmp_path / f"{name}.json").read_text())


def test_core_groups_split_the_cores_evenly_in_order():
    assert core_groups(2, [0, 1]) == [(0,), (1,)]
    assert core_groups(2, [0, 1, 2, 3, 4]) == [(0, 1, 2), (3, 4)]
    assert core_groups(1, [4, 5]) == [(4, 5)]
    assert core_groups(4, [0, 1]) == [(0,), (1,)]  # never more groups than cores
    with pytest.raises(ValueError, match="at least 1"):
        core_groups(0, [0, 1])


def test_a_cgroup_quota_caps_the_cores(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("200000 100000\n")
    assert cpu_quota(cpu_max) == 2
    cpu_max.write_text("50000 100000\n")
    assert cpu_quota(cpu_max) == 1  # half a CPU still runs one job
    cpu_max.write_text("max 100000\n")
    assert cpu_quota(cpu_max) is None
    assert cpu_quota(tmp_path / "absent") is None


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(usable_cores()) < 2, reason="needs 2 cores")
def test_units_run_side_by_side_each_on_its_own_core_and_after_what_they_wait_for(tmp_path):
    cores = usable_cores()[:2]
    said = []
    # a and b each wait until the other is up: both finish only if they ran at the same time
    units = [
        _unit(tmp_path, "a", wait_for="b"),
        _unit(tmp_path, "b", wait_for="a"),
        _unit(tmp_path, "c", after=["a", "b"]),
    ]
    seconds = run_units(units, jobs=2, cores=cores, say=said.append, poll_s=0.05)
    assert set(seconds) == {"a", "b", "c"} and all(s > 0 for s in seconds.values())
    a, b, c = (_record(tmp_path, n) for n in "abc")
    assert sorted(a["cores"] + b["cores"]) == cores  # one core each, not the same one
    assert a["threads"] == b["threads"] == c["threads"] == "1"
    assert c["t"] >= max(a["t"], b["t"])
    assert any(line.startswith("[study] done  c") and "3/3 units" in line for line in said)


def test_one_job_gets_every_core_and_runs_units_in_order(tmp_path):
    cores = usable_cores()
    run_units([_unit(tmp_path, "x"), _unit(tmp_path, "y", after=["x"])], jobs=1, cores=cores, say=lambda _: None)
    x, y = _record(tmp_path, "x"), _record(tmp_path, "y")
    assert x["cores"] == cores and x["threads"] == str(len(cores)) and y["t"] >= x["t"]


def test_a_failed_unit_stops_what_waits_for_it_and_raises_with_its_log(tmp_path):
    boom = Unit("boom", ("-c", "import sys; print('the model is gone'); sys.exit(3)"), tmp_path / "boom.log")
    later = _unit(tmp_path, "later", after=["boom"])
    with pytest.raises(RuntimeError, match=r"boom failed \(exit 3\)[\s\S]*the model is gone[\s\S]*runs the rest"):
        run_units([boom, later], jobs=1, say=lambda _: None, poll_s=0.05)
    assert not (tmp_path / "later.json").exists()


def test_unknown_and_circular_dependencies_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="'a' waits for unknown units \\['nope'\\]"):
        run_units([_unit(tmp_path, "a", after=["nope"])], jobs=1)
    with pytest.raises(ValueError, match="cycle"):
        run_units([_unit(tmp_path, "a", after=["b"]), _unit(tmp_path, "b", after=["a"])], jobs=1)
    assert not list(tmp_path.glob("*.json"))
