"""Reward modules: each scores completions per sample and returns ``FloatTensor[N]`` (see ``rewards.base``)."""

from rewards.accuracy import AccuracyReward
from rewards.base import Reward
from rewards.caption import CaptionReward
from rewards.combined import CombinedReward
from rewards.format import FormatReward
from rewards.hard_format_result import HardFormatResultReward
from rewards.judges import Judge
from rewards.oracle_judge import OracleJudge

__all__ = [
    "AccuracyReward",
    "CaptionReward",
    "CombinedReward",
    "FormatReward",
    "HardFormatResultReward",
    "Judge",
    "OracleJudge",
    "Reward",
]
