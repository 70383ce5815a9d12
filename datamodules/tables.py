"""Loading tables through HF ``datasets`` from local JSON/JSONL/parquet/CSV files, folders of them, datasets saved
with ``save_to_disk``, or a hub name when a hub is reachable."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, load_dataset, load_from_disk

_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "csv"}


def load_table(source: str | Path, split: str = "train") -> tuple[Dataset, Path | None]:
    """Return the dataset and the folder that relative image paths are resolved against (None for hub data)."""
    path = Path(source).expanduser()
    if path.is_file():
        builder = _BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"{path}: unsupported data file type {path.suffix!r}; use one of {sorted(_BUILDERS)}")
        if path.stat().st_size == 0:
            raise ValueError(f"{path}: the dataset is empty")
        kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        try:
            return load_dataset(builder, data_files=str(path), split="train", **kwargs), path.parent
        except Exception as e:  # noqa: BLE001 - datasets' parse errors often omit the file name
            raise ValueError(f"{path}: cannot be read as {builder}: {type(e).__name__}: {e}") from e
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            loaded = load_from_disk(str(path))
            return (loaded[split] if hasattr(loaded, "keys") else loaded), path
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _BUILDERS)
        named = [p for p in files if p.stem == split or p.stem.startswith(f"{split}-")]
        files = named or files
        if not files:
            raise FileNotFoundError(f"{path}: no data files ({', '.join(sorted(_BUILDERS))}) in this folder")
        kinds = {_BUILDERS[p.suffix.lower()] for p in files}
        if len(kinds) != 1:
            raise ValueError(f"{path}: mixed data file types {sorted(kinds)}; keep one kind per folder")
        return load_dataset(kinds.pop(), data_files=[str(p) for p in files], split="train"), path
    if str(source).startswith((".", "/", "~")) or path.suffix:
        raise FileNotFoundError(f"data source not found: {source}")
    try:
        return load_dataset(str(source), split=split), None
    except Exception as e:  # noqa: BLE001 - no hub here, or a wrong name: say both
        raise FileNotFoundError(f"{source!r} is neither a local file/folder nor a loadable hub dataset: {e}") from e
