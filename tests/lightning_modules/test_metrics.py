import torch

from lightning_modules.metrics import EngineParity, EvalScorers
from rewards import AccuracyReward, CombinedReward, FormatReward


def test_engine_parity_sums_micro_batches_over_the_rollouts_tokens():
    parity = EngineParity(tokens=4.0)  # 4 sampled tokens in the whole rollout
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third position is padding: its gap does not count
    parity.add(torch.tensor([[-1.0, -2.0, -9.0]]), torch.tensor([[-1.5, -2.0, 0.0]]), mask)  # |gaps| 0.5, 0
    parity.add(torch.tensor([[-1.0, -1.0, 0.0]]), torch.tensor([[-1.25, -2.0, 0.0]]), mask)  # |gaps| 0.25, 1
    assert parity.metrics() == {
        "rollout/engine_logp_diff_mean": (0.5 + 0.25 + 1.0) / 4,
        "rollout/engine_logp_diff_max": 1.0,
    }


def test_eval_scorers_are_copies_with_their_own_counters():
    accuracy, fmt = AccuracyReward(), FormatReward(template="think")
    scorers = EvalScorers.of(CombinedReward([accuracy, fmt]))
    assert scorers.accuracy is not accuracy and scorers.format is not fmt and scorers.caption is None
    scorers.accuracy(["<answer>3</answer>"], solution=["3"], problem_type=["numerical"])
    scorers.accuracy(["no tags"], solution=["3"], problem_type=["numerical"])
    assert scorers.accuracy.stats and not accuracy.stats  # the copy counted the tagless reply; training did not
    columns = scorers.columns({"solution": ["3"], "problem_type": ["numerical"], "image": ["x"]})
    assert columns == {"solution": ["3"], "problem_type": ["numerical"]}
    assert isinstance(EvalScorers.of(CombinedReward([fmt])).accuracy, AccuracyReward)  # accuracy always scored
