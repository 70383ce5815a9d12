"""Which generated chains of thought enter the cold-start set. Pure functions; the pipeline applies them in order
and records the first failing reason per row.

The checks use the project's own rewards (format for the ``think`` template, accuracy by problem type), so the SFT
data agrees with what RL will reward. Length is counted in whitespace-separated words (no tokenizer needed for
HTTP clients); repetition is the share of repeated word n-grams, which catches the loops long generations fall
into.
"""

from __future__ import annotations

from dataclasses import dataclass

from rewards import AccuracyReward
from rewards.parsing import extract_answer, parse_template


@dataclass
class FilterConfig:
    """min_accuracy: the accuracy reward a kept answer needs (1.0: exactly right; ANLS/ROUGE types are graded);
    min_words, max_words: length bounds of the whole completion; max_repeated_ngrams: largest share of repeated
    ``ngram``-word sequences."""

    min_accuracy: float = 1.0
    min_words: int = 5
    max_words: int = 4096
    ngram: int = 6
    max_repeated_ngrams: float = 0.3


def repeated_ngram_share(text: str, n: int) -> float:
    """Share of the word n-grams of ``text`` that already occurred earlier in it (0 for texts shorter than n)."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def rejection_reason(text: str, solution: str, problem_type: str, config: FilterConfig) -> str | None:
    """The first check ``text`` fails ("format", "wrong_answer", "too_short", "too_long", "repetitive"), or None."""
    if parse_template(text, "think") is None:
        return "format"
    words = len(text.split())
    if words < config.min_words:
        return "too_short"
    if words > config.max_words:
        return "too_long"
    if repeated_ngram_share(text, config.ngram) > config.max_repeated_ngrams:
        return "repetitive"
    if AccuracyReward().score_answer(extract_answer(text), solution, problem_type) < config.min_accuracy:
        return "wrong_answer"
    return None
