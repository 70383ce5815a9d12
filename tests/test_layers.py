"""The package layering of docs/architecture.md ("Layers"), checked on the source: imports only point down,
no import cycles between packages, project imports at the top of each file, and short functions on the training
path. Reads the files with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the packages it may import (besides itself); the layers, bottom first:
#   0 rewards, datamodules, evaluation, models   1 clients   2 rollout   3 lightning_modules   4 entry points
ALLOWED: dict[str, set[str]] = {
    "rewards": set(),
    "datamodules": {"rewards"},
    "evaluation": {"rewards", "datamodules"},
    "models": {"datamodules"},  # the model families; datamodules for the user-error class only
    "clients": {"rewards", "datamodules", "evaluation", "models"},
    "rollout": {"rewards", "datamodules", "evaluation", "clients", "models"},
    "lightning_modules": {"rewards", "datamodules", "evaluation", "clients", "rollout", "models"},
}
BELOW_ENTRY = set(ALLOWED)
ENTRY: dict[str, set[str]] = {  # entry points may import every layer, and each other only in this order
    "tools": BELOW_ENTRY,
    "bench": BELOW_ENTRY | {"tools"},
    "experiments": BELOW_ENTRY | {"tools"},
    "demo": BELOW_ENTRY | {"tools"},
    "vlrl_cli": BELOW_ENTRY | {"tools", "bench", "experiments", "demo"},
}
PACKAGES = {**ALLOWED, **ENTRY}
TRAINING_PATH = ("lightning_modules", "rollout")
MAX_FUNCTION_LINES = 40  # def line to last line, the docstring not counted


def _package(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _sources() -> list[Path]:
    files = [ROOT / f"{name}.py" for name in PACKAGES if (ROOT / f"{name}.py").is_file()]
    for name in PACKAGES:
        if (ROOT / name).is_dir():
            files += sorted((ROOT / name).rglob("*.py"))
    return files


def _project_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return [(line, top) for line, top in found if top in PACKAGES]


SOURCES = _sources()


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_imports_point_down(path: Path) -> None:
    package = _package(path)
    allowed = PACKAGES[package] | {package}
    upward = [f"{_rel(path)}:{line} imports {top}" for line, top in _project_imports(ast.parse(path.read_text()))]
    upward = [entry for entry in upward if entry.rsplit(" ", 1)[1] not in allowed]
    assert not upward, f"{package} may import only {sorted(allowed)}: " + "; ".join(upward)


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_project_imports_sit_at_the_top_of_the_file(path: Path) -> None:
    tree = ast.parse(path.read_text())
    local = []
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local += [f"{function.name} (line {line}) imports {top}" for line, top in _project_imports(function)]
    assert not local, f"{_rel(path)}: " + "; ".join(sorted(set(local)))


def test_no_import_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = {name: set() for name in PACKAGES}
    for path in SOURCES:
        package = _package(path)
        graph[package] |= {top for _, top in _project_imports(ast.parse(path.read_text()))} - {package}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph[start])

    cycles = sorted(name for name in graph if reaches(name, name, {name}))
    assert not cycles, f"packages on an import cycle: {cycles}"


def _function_lengths(path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                length -= first.end_lineno - first.lineno + 1
            out.append((f"{node.name} (line {node.lineno})", length))
    return out


@pytest.mark.parametrize("path", [p for p in SOURCES if _package(p) in TRAINING_PATH], ids=_rel)
def test_training_path_functions_are_short(path: Path) -> None:
    long = [f"{name}: {n} lines" for name, n in _function_lengths(path) if n > MAX_FUNCTION_LINES]
    assert not long, f"{_rel(path)}: over {MAX_FUNCTION_LINES} lines: " + "; ".join(long)


def test_the_checks_see_every_package() -> None:
    """A package the table does not know would escape every check above."""
    on_disk = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} - {"tests"}
    assert on_disk <= set(PACKAGES), f"add to the layer table: {sorted(on_disk - set(PACKAGES))}"
    assert len(SOURCES) > 80 and any(_package(p) == "rewards" for p in SOURCES)


# test files that test a package across modules rather than one namesake module, and why
CROSS_CUTTING = {
    "tests/datamodules/test_fuzz.py": "every datamodule loader against generated malformed rows",
    "tests/rewards/test_fuzz.py": "every reward against generated model output",
    "tests/rollout/test_hf_collective.py": "hf.py on an FSDP-sharded policy across processes",
    "tests/rollout/test_vllm_sharded.py": "vllm.py syncing from an FSDP-sharded policy across processes",
    "tests/scripts/slurm/test_train.py": "scripts/slurm/train.sbatch, a shell script run up to srun",
    "tests/bench/test_device_check.py": "bench/device_check.sh and the two scripts it runs, in their dry mode",
    "tests/scripts/test_lock.py": "requirements/lock-*.txt from scripts/lock.sh, installed by setup.sh",
}


def test_each_test_file_tests_its_namesake() -> None:
    """``tests/<package>/.../test_<name>.py`` tests ``<package>/.../<name>.py``; tests/e2e and tests/notebooks run
    whole commands; the few cross-cutting files are listed with their reason."""
    strays = []
    for test in sorted((ROOT / "tests").rglob("test_*.py")):
        rel = test.relative_to(ROOT / "tests")
        if len(rel.parts) == 1 or rel.parts[0] in ("e2e", "notebooks") or str(test.relative_to(ROOT)) in CROSS_CUTTING:
            continue
        module = ROOT.joinpath(*rel.parts[:-1], rel.name.removeprefix("test_"))
        if not module.is_file() and not module.with_suffix("").is_dir():
            strays.append(str(test.relative_to(ROOT)))
    assert not strays, f"test files without a namesake module: {strays}"
