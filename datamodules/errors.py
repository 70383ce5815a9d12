"""The one error type for users' mistakes: a path that is not there, an option that cannot work, a data row that
cannot be used. The ``vlrl`` command prints such an error's message on one line and exits 2
(``vlrl_cli.entry``); any other exception is a bug of ours and keeps its traceback (exit 1).

It lives in the bottom layer so that data modules, training code and tools can all raise it. Subclasses also derive
from the built-in type a caller would expect (``FileNotFoundError``, ``ValueError``), so ``except`` clauses written
for those keep working.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave (a path, an option, the data); the message says what and where, on one line."""


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder the user named is not there."""


class BadOptionError(UserError, ValueError):
    """An option, or a combination of options, that cannot work."""


class BadDataError(UserError, ValueError):
    """Rows that cannot be used; the message names the file, the row and the column."""
