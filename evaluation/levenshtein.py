"""Levenshtein (edit) distance, as MathVista's scorer uses it (the ``Levenshtein`` package there) to map a reply that
names no option letter to the nearest option."""

from __future__ import annotations


def levenshtein(a: str, b: str) -> int:
    """The fewest single-character insertions, deletions and substitutions that turn ``a`` into ``b``; characters
    compared exactly (case-sensitive, by code point). ``levenshtein("kitten", "sitting") == 3``."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))  # distances from a[:0] to each prefix of b
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]
