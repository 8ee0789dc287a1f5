"""Samplers that split a map-style dataset across ranks.

Training (`DistributedTrainSampler`): every rank draws the same order, a pure function of (seed, epoch), and takes
every world_size-th index starting at its rank; the order is padded with its first indices so every rank has the
same number of samples (and so runs the same number of steps). Strided, not chunked: with shuffling off, the union
of the ranks' k-th batches of size B is exactly the k-th batch of size N*B of one process.

Evaluation (`DistributedEvalSampler`): the same striding without padding, so no sample is seen twice and a metric
reduced across ranks equals the one-process value. Ranks may then hold different numbers of batches; the evaluation
loop keeps them in step with zero-weight filler batches (see trainer/eval_loop.py).
"""
import math
from typing import Iterator, List, Optional, Sized

import torch
from torch.utils.data import DistributedSampler, RandomSampler, Sampler, SequentialSampler


class _ShardedSampler(DistributedSampler):
    """A DistributedSampler (as Lightning's inserted samplers are: user code tests `isinstance`) whose order and
    length are volt's (below)."""

    def __init__(self, data_source: Sized, num_replicas: int, rank: int, shuffle: bool = False, seed: int = 0,
                 inner: Optional[Sampler] = None) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas}).")
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.data_source = data_source
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = int(seed) % 2**63
        self.inner = inner  # a custom sampler whose order is split (drawn under a shared seed on every rank)
        self.epoch = 0
        self.num_samples = len(self)  # DistributedSampler's attribute, with this sampler's count

    def set_epoch(self, epoch: int) -> None:
        """Called by the fit loop at every epoch start: a new epoch draws a new order."""
        self.epoch = epoch

    def _order(self) -> List[int]:
        """The full order, identical on every rank."""
        seed = (self.seed + self.epoch) % 2**63
        if self.inner is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return list(self.inner)
        n = len(self.data_source)
        if not self.shuffle:
            return list(range(n))
        generator = torch.Generator()
        generator.manual_seed(seed)
        return torch.randperm(n, generator=generator).tolist()

    def _full_length(self) -> int:
        return len(self.inner) if self.inner is not None else len(self.data_source)


class DistributedTrainSampler(_ShardedSampler):
    """Training shard of this rank: same length on every rank (padded by repeating the order's start)."""

    def __len__(self) -> int:
        return math.ceil(self._full_length() / self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        total = len(self) * self.num_replicas
        if order and len(order) < total:
            order = (order * math.ceil(total / len(order)))[:total]
        return iter(order[self.rank:total:self.num_replicas])


class DistributedEvalSampler(_ShardedSampler):
    """Evaluation shard of this rank: no padding, no sample twice; the last ranks may hold one sample fewer."""

    def __len__(self) -> int:
        return len(range(self.rank, self._full_length(), self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.rank::self.num_replicas])


def describe_sampler(sampler: Sampler):
    """(shuffle, generator, inner) for the sampler a user's DataLoader holds: RandomSampler and SequentialSampler
    are replaced by a shuffled or ordered shard; any other sampler is kept and its output split."""
    if type(sampler) is SequentialSampler:
        return False, None, None
    if type(sampler) is RandomSampler and not sampler.replacement and sampler._num_samples is None:
        return True, sampler.generator, None
    return False, getattr(sampler, "generator", None), sampler
