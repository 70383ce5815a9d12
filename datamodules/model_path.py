"""A model's checkpoint path, checked before transformers reads it: a local folder that is not there is named as such.

transformers takes a path it cannot find on disk for a hub id, and a missing folder such as ``runs/demo_sft/export``
then fails as ``Repo id must be in the form 'repo_name' or 'namespace/repo_name'``, with no word about the folder. A
hub id is ``name`` or ``namespace/name``; a path with more parts, or one starting with ``.``, ``/`` or ``~``, can
only be a folder.
"""

from __future__ import annotations

from pathlib import Path

from datamodules.errors import MissingPathError


def is_local_path(path: str) -> bool:
    """Whether ``path`` can only name a folder (see the module docstring). Pure."""
    return path.startswith((".", "/", "~")) or path.count("/") >= 2


def require_model(path: str) -> str:
    """``path``, or a ``MissingPathError`` (a ``FileNotFoundError``) naming it when it can only be a local folder and
    that folder is missing; the message suggests the model folder nearby whose path is closest, if there is one."""
    if is_local_path(str(path)) and not Path(path).expanduser().exists():
        raise MissingPathError(
            f"model folder not found: {path} (a local path; a hub id has the form 'namespace/name'). Check the "
            "path, or write the folder first (an SFT export: vlrl fit -c <the SFT recipe>, whose export_dir it is)"
            + _did_you_mean(str(path))
        )
    return path


def _did_you_mean(path: str) -> str:
    """``"; did you mean X?"`` for the model folder (one holding ``config.json``) under the path's nearest existing
    ancestor whose path is closest to ``path``, or ``""``."""
    import difflib

    missing = Path(path).expanduser()
    base = next((p for p in missing.parents if p.is_dir()), Path("."))
    candidates = []
    for depth in range(1, 5):
        candidates += [str(c.parent) for c in base.glob("/".join(["*"] * depth) + "/config.json")]
        if len(candidates) > 200:
            break
    close = difflib.get_close_matches(str(missing), candidates, n=1, cutoff=0.8)
    return f"; did you mean {close[0]}?" if close else ""
