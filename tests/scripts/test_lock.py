"""requirements/lock-{cpu,gpu}.txt, written by scripts/lock.sh (``make lock``) and installed by scripts/setup.sh: they
pin everything the project asks for, inside the ranges it states, with hashes, and this test run's environment is the
CPU lock, package for package."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
ROOT = Path(__file__).resolve().parents[2]
LOCKS = ("cpu", "gpu")


def _pins(target: str) -> dict[str, tuple[str, int]]:
    """``{name: (version, number of hashes)}`` of one lock file."""
    pins: dict[str, tuple[str, int]] = {}
    name = None
    for line in (ROOT / "requirements" / f"lock-{target}.txt").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-]+)==([^ \\;]+)", line):
            name = canonicalize_name(match[1])
            pins[name] = (match[2], 0)
        elif name and line.strip().startswith("--hash=sha256:"):
            pins[name] = (pins[name][0], pins[name][1] + 1)
    return pins


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


@pytest.mark.parametrize("target", LOCKS)
def test_every_project_requirement_is_pinned_inside_its_range_with_hashes(target: str) -> None:
    pins = _pins(target)
    assert len(pins) > 200, f"lock-{target}.txt holds only {len(pins)} packages"
    outside = {
        str(req): pins.get(canonicalize_name(req.name), ("missing", 0))[0]
        for req in _project_requirements()
        if canonicalize_name(req.name) not in pins or not req.specifier.contains(pins[canonicalize_name(req.name)][0])
    }
    assert not outside, f"lock-{target}.txt is out of step with pyproject.toml (run make lock): {outside}"
    unhashed = [name for name, (_, hashes) in pins.items() if hashes == 0]
    assert not unhashed, f"lock-{target}.txt pins without a hash: {unhashed}"


@pytest.mark.parametrize("target", LOCKS)
def test_the_stack_s_own_pins_are_the_lock_s(target: str) -> None:
    pins = _pins(target)
    stated = [
        Requirement(line)
        for line in (ROOT / "requirements" / f"{target}.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert stated, f"requirements/{target}.in names nothing"
    for req in stated:
        assert pins[canonicalize_name(req.name)][0] == str(next(iter(req.specifier)).version), req


def test_the_cpu_lock_drops_the_torch_audio_and_codec_builds_that_do_not_load() -> None:
    assert {"torchaudio", "torchcodec"}.isdisjoint(_pins("cpu"))
    assert _pins("cpu")["torch"][0] == _pins("gpu")["torch"][0], "the CPU and GPU stacks run different torch"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this environment is the GPU lock's")
def test_this_environment_is_the_cpu_lock() -> None:
    """What scripts/setup.sh installed: every locked package at its locked version (torch's local tag aside)."""
    differ = {}
    for name, (version, _) in _pins("cpu").items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed.split("+")[0] != version.split("+")[0]:
            differ[name] = (version, installed)
    assert not differ, f"installed packages differ from requirements/lock-cpu.txt (run make setup): {differ}"
