"""A model's checkpoint path, checked before transformers reads it: a local folder that is not there is named as such.

transformers takes a path it cannot find on disk for a hub id, and a missing folder such as ``runs/demo_sft/export``
then fails as ``Repo id must be in the form 'repo_name' or 'namespace/repo_name'``, with no word about the folder. A
hub id is ``name`` or ``namespace/name``; a path with more parts, or one starting with ``.``, ``/`` or ``~``, can
only be a folder.
"""

from __future__ import annotations

from pathlib import Path


def is_local_path(path: str) -> bool:
    """Whether ``path`` can only name a folder (see the module docstring). Pure."""
    return path.startswith((".", "/", "~")) or path.count("/") >= 2


def require_model(path: str) -> str:
    """``path``, or a ``FileNotFoundError`` naming it when it can only be a local folder and that folder is missing."""
    if is_local_path(str(path)) and not Path(path).expanduser().exists():
        raise FileNotFoundError(
            f"model folder not found: {path} (a local path; a hub id has the form 'namespace/name'). Check the "
            "path, or write the folder first (an SFT export: vlrl fit -c <the SFT recipe>, whose export_dir it is)"
        )
    return path
