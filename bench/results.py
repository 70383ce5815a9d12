"""Appending benchmark rows to ``bench/RESULTS.md``: every figure kept with its command, machine and date."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).parent / "RESULTS.md"
HEADER = "| date | benchmark | setting | result | machine | command |\n|---|---|---|---|---|---|\n"


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"CPU {os.cpu_count()} cores ({platform.processor() or platform.machine()})"


def append_result(benchmark: str, setting: str, result: str, command: str, path: Path = RESULTS) -> None:
    if not path.exists():
        path.write_text("# Benchmark results\n\nEvery row as measured, newest last.\n\n" + HEADER)
    date = datetime.date.today().isoformat()
    cells = [date, benchmark, setting, result, machine(), f"`{command}`"]
    with path.open("a") as f:
        f.write("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n")
