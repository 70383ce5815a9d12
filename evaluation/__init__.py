"""Benchmark scoring by each benchmark's official rules (MathVista, MMBench CircularEval, MMStar, MathVision,
MathVerse's rule-based part), from ``vlrl predict`` files (``vlrl-score``) or in memory (``score_completions``).

Layer: above ``rewards/`` and ``datamodules/`` (it reads benchmark files with ``datamodules.benchmarks`` and answers
with ``rewards.parsing``), below ``lightning_modules/``; it imports no training or rollout code. The training reward
(``rewards.AccuracyReward``) gives partial credit and reads options leniently, which is right for a reward and wrong
for a reported accuracy: here each question is right or wrong, as the benchmark's own scripts decide.
"""

from evaluation.extraction import answer_text
from evaluation.score import SCORERS, score_completions, score_predictions

__all__ = ["SCORERS", "answer_text", "score_completions", "score_predictions"]
