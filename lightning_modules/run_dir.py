"""The run's log folder, resolved where every rank can take part.

``trainer.log_dir`` broadcasts rank 0's folder to the other ranks: a collective. Reached from rank-zero-only code
(sample tables, result files) or from data-dependent code (a batch with skipped rows), it waits for ranks that never
come and the job hangs. Callbacks and modules therefore resolve it once in ``setup``, which Lightning runs on every
rank after the process group exists, and keep it.
"""

from __future__ import annotations

from pathlib import Path


def resolve_log_dir(trainer) -> Path:
    """Call from ``setup`` (every rank), never from rank-zero-only or per-batch code."""
    return Path(trainer.log_dir or trainer.default_root_dir)
