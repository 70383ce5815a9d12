"""What a run keeps outside its weights: its log folder, and its RNG state in checkpoints.

``trainer.log_dir`` broadcasts rank 0's folder to the other ranks: a collective. Reached from rank-zero-only code
(sample tables, result files) or from data-dependent code (a batch with skipped rows), it waits for ranks that never
come and the job hangs. Callbacks and modules therefore resolve it once in ``setup``, which Lightning runs on every
rank after the process group exists, and keep it.

RNG state is stored as tensors, ints and lists only, so checkpoints load with ``torch.load(weights_only=True)`` (no
pickle of arbitrary objects); sampling after a resume draws what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def resolve_log_dir(trainer) -> Path:
    """Call from ``setup`` (every rank), never from rank-zero-only or per-batch code."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def capture_rng() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]
    state = {"python": list(random.getstate()), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss_value = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss_value))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
