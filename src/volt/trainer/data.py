"""The one place where data loaders are resolved, wrapped and sized.

Wrapping makes a map-style loader resumable at any batch: its batch sampler is replaced (in a shallow copy of the
user's DataLoader, which is never mutated) by `ResumableSampler`, which records the RNG state from which the epoch's
order was drawn and, on resume, redraws that same order and skips the consumed batches at the index level, so no
skipped sample is loaded. Distributed samplers are put in here too.
"""
import copy
import math
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence, Union

from torch.utils.data import BatchSampler, DataLoader, IterableDataset, SequentialSampler

from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.seed import get_rng_states, set_rng_states


class ResumableSampler:
    """Wraps a (batch) sampler: records the RNG state its order is drawn from; can replay it and skip ahead."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.order_rng: Optional[dict] = None  # RNG state the current epoch's order was drawn from
        self._skip = 0
        self._replay_rng: Optional[dict] = None

    def __len__(self) -> int:
        return len(self.inner)

    def resume(self, skip: int, order_rng: Optional[dict]) -> None:
        """Make the next iteration redraw the order from `order_rng` and start after `skip` items."""
        self._skip, self._replay_rng = skip, order_rng

    def __iter__(self) -> Iterator:
        if self._skip:
            return self._skipped_iter()
        return self._recording_iter()

    def _recording_iter(self) -> Iterator:
        self.order_rng = get_rng_states()  # runs at the first next(), right before the sampler draws
        yield from self.inner

    def _skipped_iter(self) -> Iterator:
        skip, replay_rng = self._skip, self._replay_rng
        self._skip, self._replay_rng = 0, None
        current = get_rng_states() if replay_rng is not None else None
        if replay_rng is not None:
            set_rng_states(replay_rng)
        self.order_rng = replay_rng
        inner = iter(self.inner)
        for _ in range(skip):  # index-level skipping: no sample is loaded
            next(inner, None)
        if current is not None:
            set_rng_states(current)
        return inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def is_map_style(loader: Any) -> bool:
    return isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset)


def wrap_loader(loader: Any, *, sequential: bool = False, sampler_fn: Optional[Callable] = None) -> Any:
    """Return a resumable shallow copy of `loader` (non-DataLoader iterables are returned as they are).

    `sequential` replaces the order with a SequentialSampler (overfit_batches); `sampler_fn(loader)` returns a
    distributed sampler to use instead of the loader's own.
    """
    if not is_map_style(loader):
        return loader
    wrapped = copy.copy(loader)
    wrapped.__dict__["_iterator"] = None
    sampler = loader.sampler
    if sequential:
        sampler = SequentialSampler(loader.dataset)
    if sampler_fn is not None:
        sampler = sampler_fn(loader)
    if loader.batch_sampler is not None:
        batch_sampler = loader.batch_sampler
        if sampler is not loader.sampler:
            if type(batch_sampler) is not BatchSampler:
                raise MisconfigurationException(
                    f"The DataLoader uses a custom batch sampler ({type(batch_sampler).__name__}); volt cannot put a "
                    "distributed or sequential sampler under it. Pass `use_distributed_sampler=False` and shard "
                    "the data in your batch sampler."
                )
            batch_sampler = BatchSampler(sampler, loader.batch_size, loader.drop_last)
        object.__setattr__(wrapped, "sampler", sampler)
        object.__setattr__(wrapped, "batch_sampler", ResumableSampler(batch_sampler))
    else:
        object.__setattr__(wrapped, "sampler", ResumableSampler(sampler))
    return wrapped


def resumable_sampler(loader: Any) -> Optional[ResumableSampler]:
    if not isinstance(loader, DataLoader):
        return None
    for candidate in (loader.batch_sampler, loader.sampler):
        if isinstance(candidate, ResumableSampler):
            return candidate
    return None


def loader_length(loader: Any) -> Union[int, float]:
    """Number of batches, or inf for loaders without a length."""
    try:
        return len(loader)
    except (TypeError, NotImplementedError):
        return math.inf


def limit_batches(num_batches: Union[int, float], limit: Union[int, float], name: str) -> Union[int, float]:
    """Apply `limit_{stage}_batches`: an int caps the count, a float keeps that fraction."""
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
        raise MisconfigurationException(f"`{name}={limit!r}` must be an int >= 0 or a float in [0.0, 1.0].")
    if isinstance(limit, int):
        return min(num_batches, limit)
    if limit > 1.0:
        raise MisconfigurationException(f"`{name}={limit}` is a float above 1.0; use a fraction or an int count.")
    if num_batches == math.inf:
        if limit in (0.0, 1.0):
            return 0 if limit == 0.0 else math.inf
        raise MisconfigurationException(
            f"`{name}={limit}` is a fraction, but the dataloader has no length. Use an int number of batches."
        )
    limited = int(num_batches * limit)
    if limit > 0 and limited == 0 and num_batches > 0:
        raise MisconfigurationException(
            f"`{name}={limit}` of {num_batches} batches is less than one batch; raise it or use an int."
        )
    return limited


def as_loader_list(loaders: Any, stage: str) -> List[Any]:
    """Normalise what a `*_dataloader` hook or argument returned to a list of loaders."""
    if loaders is None:
        return []
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    if isinstance(loaders, Sequence) and not isinstance(loaders, (str, bytes)) and not hasattr(loaders, "dataset"):
        return list(loaders)
    if not hasattr(loaders, "__iter__"):
        raise TypeError(
            f"The {stage} dataloader must be a DataLoader or another iterable (or a list/dict of them), "
            f"got {type(loaders).__name__}."
        )
    return [loaders]
