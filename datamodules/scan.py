"""The data scan: every row's cheap checks, run once when a dataset is built (datamodule setup), so a bad row stops
a run before its first step instead of at the step that reads it.

Checks are per column, each a function from the cell to ``(reason, message)`` or None:
- images (``ImageCheck``): the file is there (``os.stat``) and its header reads (PIL's ``Image.open`` reads the
  header only: no pixel is decoded), and, where the datamodule resizes by Qwen's rule, its size can be resized
  (an aspect ratio over 200 cannot). Each distinct path is checked once; rows usually share images. Reasons
  ``missing_image`` and ``bad_image``.
- problem types (``problem_type_check``): known to the rewards (``rewards.problem_types``). ``unknown_problem_type``.
- solutions (``solution_check``): scorable by the accuracy reward (``rewards.accuracy.solution_error``).
  ``bad_solution``.
- RL questions (``datamodules.vqa.problem_check``): text, or a conversation with a user turn. ``bad_problem``.
A row is named by its first problem. What only decoding shows (a truncated image body) is still found when the row
is read: an error naming the row, or a counted ``bad_row`` skip with ``skip_bad_rows`` (``datamodules.vqa``).

``keep_rows`` applies a scan: without ``skip_bad_rows`` the first bad row is one ``BadDataError``, on one line,
naming the file, the row, the column and what is wrong, and how many other rows are bad; with it the bad rows are
left out, and one warning line gives the count per reason and names the first few.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from datamodules.errors import BadDataError
from rewards.accuracy import solution_error
from rewards.problem_types import canonical_problem_type

log = logging.getLogger(__name__)

Problem = tuple[str, str]  # (reason, message)
Check = Callable[[Any], Problem | None]


@dataclass(frozen=True)
class BadRow:
    row: int  # the row's place in the table, from 0
    column: str
    reason: str  # missing_image, bad_image, unknown_problem_type, bad_solution, ...
    message: str  # what is wrong, without the place
    where: str  # "<file> row index <row>"

    def line(self) -> str:
        return f"{self.where}, column {self.column!r}: {self.message}".replace("\n", "\\n")


@dataclass
class ScanReport:
    source: str
    rows: int  # rows scanned
    bad: list[BadRow] = field(default_factory=list)  # one per bad row, in row order
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        """Bad rows per reason, most frequent first."""
        return dict(Counter(b.reason for b in self.bad).most_common())

    def _counts_text(self) -> str:
        return ", ".join(f"{reason} {n}" for reason, n in self.counts().items())

    def error(self) -> BadDataError:
        """The first bad row, and how many others there are, on one line."""
        first, more = self.bad[0].line(), len(self.bad) - 1
        if not more:
            return BadDataError(f"{first} (skip_bad_rows=true skips such rows)")
        rows = "row" if more == 1 else "rows"
        return BadDataError(
            f"{first} (and {more} more bad {rows}: {self._counts_text()}; skip_bad_rows=true skips them)"
        )

    def summary(self, shown: int = 3) -> str:
        """The skip-mode log line: the count per reason, then the first ``shown`` rows named."""
        lines = [b.line().removeprefix(f"{self.source} ") for b in self.bad[:shown]]
        named = "; ".join(lines) + ("; ..." if len(self.bad) > shown else "")
        return (
            f"{self.source}: skipping {len(self.bad)} of {self.rows} rows found bad before training "
            f"({self._counts_text()}): {named}"
        )


def scan_rows(
    rows: Iterable[Mapping[str, Any]],
    checks: Mapping[str, Check],
    source: str,
    where: Callable[[int], str] | None = None,
) -> ScanReport:
    """Run ``checks`` (column -> check) over ``rows``; a row is reported with its first problem. ``where(i)`` names
    row ``i`` (default: ``"<source> row index <i>"``). Pure apart from what the checks read (image files)."""
    where = where or (lambda i: f"{source} row index {i}")
    start, bad, n = time.perf_counter(), [], 0
    for i, row in enumerate(rows):
        n += 1
        for column, check in checks.items():
            problem = check(row.get(column))
            if problem is not None:
                bad.append(BadRow(i, column, problem[0], problem[1], where(i)))
                break
    return ScanReport(source, n, bad, time.perf_counter() - start)


def scan_table(
    table: Any, checks: Mapping[str, Check], source: str, where: Callable[[int], str] | None = None
) -> ScanReport:
    """``scan_rows`` over a ``datasets.Dataset``'s checked columns, images undecoded (``_cells``)."""
    columns = [c for c in checks if c in table.column_names]
    values = [_cells(table, c) for c in columns]
    rows = (dict(zip(columns, cells)) for cells in zip(*values)) if columns else ({} for _ in range(len(table)))
    return scan_rows(rows, {c: checks[c] for c in columns}, source, where)


def _cells(table: Any, column: str) -> list[Any]:
    """A column's cells as Python values; a column of the ``datasets`` Image feature as its stored ``{"bytes",
    "path"}`` dicts (decoding every image is what the scan must not do)."""
    if _holds_image(table.features[column]):
        return table.with_format("arrow")[column].to_pylist()
    return table.select_columns([column])[:][column]  # a slice: iterating the column would take rows one by one


def _holds_image(feature: Any) -> bool:
    from datasets import Image as ImageFeature

    if isinstance(feature, ImageFeature):
        return True
    if isinstance(feature, dict):
        return any(_holds_image(f) for f in feature.values())
    if isinstance(feature, (list, tuple)):
        return any(_holds_image(f) for f in feature)
    inner = getattr(feature, "feature", None)  # List, LargeList, Sequence
    return inner is not None and _holds_image(inner)


def keep_rows(report: ScanReport, skip_bad_rows: bool) -> list[int]:
    """The rows to use. A bad row is a ``BadDataError`` (``report.error()``) without ``skip_bad_rows``; with it the
    bad rows are left out and logged in one line, and no usable row left is an error too."""
    if not report.bad:
        return list(range(report.rows))
    if not skip_bad_rows:
        raise report.error()
    if len(report.bad) == report.rows:
        raise BadDataError(
            f"{report.source}: no usable row: all {report.rows} rows are bad ({report._counts_text()}); "
            f"first: {report.bad[0].line()}"
        )
    log.warning(report.summary())
    bad = {b.row for b in report.bad}
    return [i for i in range(report.rows) if i not in bad]


def problem_type_check(value: Any) -> Problem | None:
    """A problem type the rewards know (``rewards.problem_types``, aliases included)."""
    try:
        canonical_problem_type(value)
    except ValueError as e:
        return "unknown_problem_type", str(e)
    return None


def solution_check(value: Any) -> Problem | None:
    """A solution the accuracy reward can score (``rewards.accuracy.solution_error``)."""
    error = solution_error(value)
    return None if error is None else ("bad_solution", error)


class ImageCheck:
    """The check of an image cell: one image or a list of them, each a path (relative to ``root``), bytes, a
    ``{"bytes", "path"}`` dict or a PIL image. ``required``: an empty cell is a ``missing_image``. ``size_rule(height,
    width)`` raises ValueError for a size the datamodule cannot resize. Each distinct path's result is cached."""

    def __init__(
        self,
        root: str | Path | None = None,
        required: bool = True,
        size_rule: Callable[[int, int], Any] | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else None
        self.required, self.size_rule = required, size_rule
        self.cache: dict[str, Problem | None] = {}

    def __call__(self, value: Any) -> Problem | None:
        values = value if isinstance(value, (list, tuple)) else [] if value is None else [value]
        if self.required and not values:
            return "missing_image", "no image"
        for v in values:
            problem = self.one(v)
            if problem is not None:
                return problem
        return None

    def one(self, value: Any) -> Problem | None:
        if isinstance(value, (str, Path)):
            key = str(value)
            if key not in self.cache:
                self.cache[key] = self._path(key)
            return self.cache[key]
        if isinstance(value, dict):
            if value.get("bytes") is not None:
                return self.one(bytes(value["bytes"]))
            if value.get("path"):
                return self.one(value["path"])
            return "bad_image", "image dict has neither 'bytes' nor 'path'"
        if isinstance(value, (bytes, bytearray)):
            return self._header(lambda: Image.open(io.BytesIO(value)), f"<{len(value)} bytes>")
        if isinstance(value, Image.Image):
            return self._size(value.height, value.width, "<PIL image>")
        if value is None:
            return "missing_image", "no image"
        return "bad_image", f"unsupported image value of type {type(value).__name__}"

    def _path(self, name: str) -> Problem | None:
        path = Path(name)
        if not path.is_absolute() and self.root is not None:
            path = self.root / path
        try:
            is_file = stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            is_file = False
        if not is_file:
            under = f" (under {self.root})" if path != Path(name) else ""
            return "missing_image", f"image file not found: {name}{under}"
        return self._header(lambda: Image.open(path), name)

    def _header(self, opener: Callable[[], Image.Image], name: str) -> Problem | None:
        try:
            with opener() as image:  # the header only: pixels are decoded on load(), never called here
                height, width = image.height, image.width
        except Exception as e:  # noqa: BLE001 - whatever PIL raises on a header, the image cannot be read
            return "bad_image", f"cannot read image {name}: {type(e).__name__}: {e}"
        return self._size(height, width, name)

    def _size(self, height: int, width: int, name: str) -> Problem | None:
        if self.size_rule is None:
            return None
        try:
            self.size_rule(height, width)
        except ValueError as e:
            return "bad_image", f"image {name} of size {width}x{height} cannot be used: {e}"
        return None
