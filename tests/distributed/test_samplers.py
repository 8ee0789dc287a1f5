"""The samplers that split data across ranks, tested in one process by building every rank's sampler."""
import pytest
import torch
from torch.utils.data import RandomSampler, SequentialSampler, WeightedRandomSampler

from volt.distributed.samplers import DistributedEvalSampler, DistributedTrainSampler, describe_sampler


def shards(sampler_type, n, world, **kwargs):
    return [list(sampler_type(range(n), world, rank, **kwargs)) for rank in range(world)]


def test_train_shards_are_strided_so_rank_batches_make_up_the_one_process_batch():
    rank0, rank1 = shards(DistributedTrainSampler, 8, 2)
    assert rank0 == [0, 2, 4, 6] and rank1 == [1, 3, 5, 7]
    # batch k of size 2 on each rank == batch k of size 4 in one process
    assert sorted(rank0[:2] + rank1[:2]) == [0, 1, 2, 3]


@pytest.mark.parametrize("n, world", [(10, 3), (7, 2), (2, 4)])
def test_train_shards_have_equal_length_and_cover_every_sample(n, world):
    parts = shards(DistributedTrainSampler, n, world, shuffle=True, seed=5)
    assert len({len(p) for p in parts}) == 1
    assert len(DistributedTrainSampler(range(n), world, 0)) == len(parts[0])
    assert set().union(*parts) == set(range(n))


def test_shuffle_is_shared_by_ranks_and_changes_with_set_epoch():
    samplers = [DistributedTrainSampler(range(64), 2, rank, shuffle=True, seed=3) for rank in range(2)]
    epoch0 = [list(s) for s in samplers]
    assert sorted(epoch0[0] + epoch0[1]) == list(range(64))  # same order on both ranks: disjoint halves
    assert epoch0[0] != sorted(epoch0[0])
    for s in samplers:
        s.set_epoch(1)
    epoch1 = [list(s) for s in samplers]
    assert epoch1 != epoch0 and sorted(epoch1[0] + epoch1[1]) == list(range(64))
    for s in samplers:
        s.set_epoch(0)
    assert [list(s) for s in samplers] == epoch0  # the order is a function of (seed, epoch): exact resume


def test_eval_shards_have_no_padding_and_no_duplicates():
    parts = shards(DistributedEvalSampler, 7, 3)
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert [len(DistributedEvalSampler(range(7), 3, r)) for r in range(3)] == [3, 2, 2]


def test_samplers_are_distributed_samplers_with_their_own_counts():
    """As Lightning's inserted samplers: user code tests `isinstance(sampler, DistributedSampler)`."""
    for kind, counts in ((DistributedTrainSampler, [3, 3, 3]), (DistributedEvalSampler, [3, 2, 2])):
        samplers = [kind(range(7), 3, rank) for rank in range(3)]
        assert all(isinstance(sampler, torch.utils.data.DistributedSampler) for sampler in samplers)
        assert [sampler.num_samples for sampler in samplers] == counts


def test_custom_sampler_output_is_split_under_a_shared_seed():
    weights = torch.rand(20)
    parts = [list(DistributedTrainSampler(range(20), 2, rank, seed=11, inner=WeightedRandomSampler(weights, 20)))
             for rank in range(2)]
    again = list(DistributedTrainSampler(range(20), 2, 0, seed=11, inner=WeightedRandomSampler(weights, 20)))
    assert parts[0] == again  # ranks draw the inner sampler's order identically
    assert len(parts[0]) == len(parts[1]) == 10


def test_describe_keeps_the_users_shuffle_and_generator():
    generator = torch.Generator().manual_seed(7)
    assert describe_sampler(SequentialSampler(range(4))) == (False, None, None)
    assert describe_sampler(RandomSampler(range(4), generator=generator)) == (True, generator, None)
    custom = RandomSampler(range(4), replacement=True)
    assert describe_sampler(custom)[2] is custom


def test_rank_outside_the_world_is_refused():
    with pytest.raises(ValueError, match=r"rank=2 must be in \[0, num_replicas=2\)"):
        DistributedTrainSampler(range(4), 2, 2)
