"""The resumable loader's epoch orders: the same on every rank, split between ranks, resumable mid-epoch."""

from datamodules.resumable import EpochOrderSampler, ResumableDataLoader


def test_ranks_split_one_shared_order_and_pad_to_equal_shares():
    ranks = [EpochOrderSampler(5, shuffle=True, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    full = EpochOrderSampler(5, shuffle=True, seed=3).order(0)  # the one-process order of epoch 0
    shares = [s.order(0) for s in ranks]
    assert shares[0] == full[0::2] and shares[1] == full[1::2] + [full[0]]  # 5 rows -> 3 each, wrapped
    assert set(shares[0]) | set(shares[1]) == set(range(5))
    assert ranks[0].order(1) != shares[0]  # a new epoch, a new order


def test_loader_resumes_a_ranks_share_at_the_next_batch():
    data = list(range(10))
    loader = ResumableDataLoader(data, batch_size=2, shuffle=True, seed=0, num_replicas=2, rank=1)
    assert len(loader) == 3  # 5 of the 10 rows on this rank
    batches = [b.tolist() for b in loader]
    resumed = ResumableDataLoader(data, batch_size=2, shuffle=True, seed=0, num_replicas=2, rank=1)
    resumed.load_state_dict({"epoch": 0, "consumed": 1})
    assert [b.tolist() for b in resumed] == batches[1:]
