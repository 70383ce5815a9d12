"""Loading tables through HF ``datasets`` from local JSON/JSONL/parquet/CSV files, folders of them, datasets saved
with ``save_to_disk``, or a hub name when a hub is reachable.

A JSON file that ``datasets`` cannot parse is read again here to name the first broken line ("line N", counted from
1); ``datasets`` itself reports only "DatasetGenerationError" or a byte position. With ``skip_bad_lines`` a JSON Lines
file keeps its readable lines and the unreadable ones come back as ``BadLine`` records for the caller to count.

Two kinds of folder hold a file named ``dataset_info.json``: a dataset written by ``save_to_disk`` (marked by
``state.json``, or ``dataset_dict.json`` for several splits), and a LLaMA-Factory data folder (``dataset_info.json``
maps dataset names to files). The first loads here; the second is named in an error that points at
``SFTDataModule``'s ``dataset_dir`` and ``datasets`` settings, which read it (``datamodules.sft``).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, concatenate_datasets, load_dataset, load_from_disk

from datamodules.errors import MissingPathError

_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".arrow": "arrow"}


@dataclass
class BadLine:
    """A line of a JSON Lines file that is not a JSON object."""

    path: Path
    line: int  # counted from 1
    message: str  # "line N is not valid JSON (...)"; the file is in ``path``


@dataclass
class Table:
    dataset: Dataset
    root: Path | None  # the folder relative image paths are resolved against (None for hub data)
    bad_lines: list[BadLine] = field(default_factory=list)  # only with skip_bad_lines


def load_table(source: str | Path, split: str = "train") -> tuple[Dataset, Path | None]:
    """Return the dataset and the folder that relative image paths are resolved against (None for hub data)."""
    table = read_table(source, split)
    return table.dataset, table.root


def read_table(source: str | Path, split: str = "train", skip_bad_lines: bool = False) -> Table:
    """Like ``load_table``; with ``skip_bad_lines`` a JSON Lines file's unreadable lines are left out and listed."""
    path = Path(source).expanduser()
    if path.is_file():
        return Table(*_read_file(path, skip_bad_lines))
    if path.is_dir():
        if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            loaded = load_from_disk(str(path))
            return Table(loaded[split] if hasattr(loaded, "keys") else loaded, path)
        if (path / "dataset_info.json").exists():
            raise ValueError(
                f"{path}: a LLaMA-Factory data folder (dataset_info.json without save_to_disk's state.json); "
                f"read it with SFTDataModule's dataset_dir={str(path)!r} and datasets=[<names in dataset_info.json>]"
            )
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _BUILDERS)
        named = [p for p in files if p.stem == split or p.stem.startswith(f"{split}-")]
        files = named or files
        if not files:
            raise MissingPathError(f"{path}: no data files ({', '.join(sorted(_BUILDERS))}) in this folder")
        kinds = {_BUILDERS[p.suffix.lower()] for p in files}
        if len(kinds) != 1:
            raise ValueError(f"{path}: mixed data file types {sorted(kinds)}; keep one kind per folder")
        kind = kinds.pop()
        try:
            return Table(load_dataset(kind, data_files=[str(p) for p in files], split="train"), path)
        except Exception:  # noqa: BLE001 - read the files one by one to name the broken one
            if kind != "json" and len(files) > 1:
                raise
        parts = [_read_file(p, skip_bad_lines) for p in files]  # raises naming the file and line
        dataset = parts[0][0] if len(parts) == 1 else concatenate_datasets([part[0] for part in parts])
        return Table(dataset, path, [b for part in parts for b in part[2]])
    if str(source).startswith((".", "/", "~")) or path.suffix:
        raise MissingPathError(f"data source not found: {source}")
    try:
        return Table(load_dataset(str(source), split=split), None)
    except Exception as e:  # noqa: BLE001 - no hub here, or a wrong name: say both
        raise MissingPathError(f"{source!r} is neither a local file/folder nor a loadable hub dataset: {e}") from e


def _read_file(path: Path, skip_bad_lines: bool) -> tuple[Dataset, Path, list[BadLine]]:
    builder = _BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(f"{path}: unsupported data file type {path.suffix!r}; use one of {sorted(_BUILDERS)}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the dataset is empty")
    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    try:
        return load_dataset(builder, data_files=str(path), split="train", **kwargs), path.parent, []
    except Exception as e:  # noqa: BLE001 - datasets' parse errors omit the file name and the line
        if builder != "json":
            raise ValueError(f"{path}: cannot be read as {builder}: {type(e).__name__}: {e}") from e
        error = e
    bad, lines_format = json_syntax_errors(path)
    if not bad:  # valid JSON that datasets still rejects: say what datasets said, and why when it says
        cause = error.__cause__
        why = f" ({type(cause).__name__}: {cause})" if cause else ""
        raise ValueError(f"{path}: cannot be read as json: {type(error).__name__}: {error}{why}") from error
    if not (skip_bad_lines and lines_format):
        more = f" (and {len(bad) - 1} more: lines {_line_list(bad[1:])})" if len(bad) > 1 else ""
        hint = "; set skip_bad_rows to skip and count such lines" if lines_format else ""
        raise ValueError(f"{path}: cannot be read as json: {bad[0].message}{more}{hint}") from error
    bad_numbers = {b.line for b in bad}
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    kept = [line for number, line in enumerate(lines, 1) if number not in bad_numbers and line.strip()]
    if not kept:
        raise ValueError(f"{path}: no readable line (first: {bad[0].message})")
    with tempfile.TemporaryDirectory() as tmp:  # the json builder again, so column types are inferred as usual
        clean = Path(tmp) / path.name
        clean.write_text("\n".join(kept) + "\n", encoding="utf-8")
        return load_dataset("json", data_files=str(clean), split="train", keep_in_memory=True), path.parent, bad


def json_syntax_errors(path: Path) -> tuple[list[BadLine], bool]:
    """The broken lines of a JSON file, and whether it is JSON Lines (one object per line).

    A single JSON document (an array of rows) that does not parse gives one entry at the line of its first error;
    a JSON Lines file gives one per line that is not a JSON object. Empty lines are allowed in JSON Lines.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    document = text.lstrip().startswith("[")
    try:
        json.loads(text)
        return [], not document  # one valid document: nothing to point at
    except json.JSONDecodeError as e:
        if document:
            return [BadLine(path, e.lineno, f"line {e.lineno} is not valid JSON ({e.msg}, column {e.colno})")], False
    bad = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(BadLine(path, number, f"line {number} is not valid JSON ({e.msg}, column {e.colno})"))
            continue
        if not isinstance(value, dict):
            bad.append(BadLine(path, number, f"line {number} is a JSON {type(value).__name__}, not an object"))
    return bad, True


def _line_list(bad: list[BadLine], shown: int = 10) -> str:
    numbers = ", ".join(str(b.line) for b in bad[:shown])
    return numbers + (", ..." if len(bad) > shown else "")
