"""The one place where data loaders are resolved, wrapped and sized.

Wrapping makes a map-style loader resumable at any batch: its batch sampler is replaced (in a shallow copy of the
user's DataLoader, which is never mutated) by `ResumableSampler`, which records the RNG state from which the epoch's
order was drawn and, on resume, redraws that same order and skips the consumed batches at the index level, so no
skipped sample is loaded. Distributed samplers are put in here too.

With worker processes, a dataset's own randomness (augmentations drawing from torch, numpy or `random`) happens in
the workers. Workers are seeded as in Lightning: PyTorch's per-worker seeds from a base seed drawn when the epoch's
iterator starts, then the loader's `worker_init_fn`, or, after `seed_everything(workers=True)`, Lightning's
`pl_worker_init_function`; worker k % W fetches batch k and draws from its own stream, so a seeded run draws the
same augmentations as under Lightning. Each worker's stream depends on every batch it fetched before, and a resumed
run skips the consumed batches, so on a mid-epoch resume the first batch each new worker gets (`ReplayBatch`)
carries the consumed batches of the stream it continues: the worker fetches them again, in its own process, and
drops them, which puts its RNGs where the interrupted run's worker had them. Only the workers load those samples.

Persistent workers (`persistent_workers=True`) keep their streams across epochs, which no checkpoint taken at an
epoch end could carry. For them each batch carries a seed instead (`SeededBatch`: a seed drawn for the epoch from the
global RNG, plus the batch's position) that the worker reseeds from before fetching it, so a batch's random values
depend only on the epoch and the batch; their values differ from Lightning's.

An iterable dataset has no sampler to skip in. When the stream can say where it stands (`stateful_stream`: the
loader's or the dataset's `state_dict()`/`load_state_dict()`), the fit loop saves that state in checkpoints and a
resumed run continues from it at once; otherwise the consumed batches are replayed.

On a GPU, host batches are pinned (the training loader's copy gets `pin_memory=True`), so their copies to the
device are asynchronous, and `DevicePrefetcher` copies the next batch while the current one trains.
"""
import copy
import functools
import math
import multiprocessing as mp
import os
import random
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import (DataLoader, IterableDataset, RandomSampler, SequentialSampler,
                              get_worker_info)

from volt.distributed.parallel import ParallelStrategy
from volt.utilities.apply_func import apply_to_collection
from volt.utilities.combined_loader import CombinedLoader
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_only, rank_zero_warn
from volt.utilities.seed import get_rng_states, pl_worker_init_function, set_rng_states
from volt.utilities.warnings import PossibleUserWarning


class SeededBatch(list):
    """The indices of one batch, with the seed a persistent worker reseeds from before fetching the batch."""

    def __init__(self, indices, seed: int) -> None:
        super().__init__(indices)
        self.seed = seed

    def __reduce__(self):
        return SeededBatch, (list(self), self.seed)


class ReplayBatch(list):
    """The indices of a worker's first batch after a mid-epoch resume, with the worker stream it continues and that
    stream's consumed batches, which the worker fetches and drops first."""

    def __init__(self, indices, stream: int, replay: List[List[int]]) -> None:
        super().__init__(indices)
        self.stream = stream
        self.replay = replay

    def __reduce__(self):
        return ReplayBatch, (list(self), self.stream, self.replay)


class WorkerSeeding:
    """A worker_init_fn: the user's (or Lightning's seeding), then lets the worker act on `SeededBatch` and
    `ReplayBatch` (through `__getitems__`, set on this worker's copy of the dataset only).

    A resumed epoch gives its batches to other workers than the interrupted one did, so a worker may continue the
    stream of another worker id: it then seeds itself as PyTorch seeds that worker and runs `user_init` again with
    that id, before replaying the stream's consumed batches.
    """

    def __init__(self, user_init: Optional[Callable[[int], None]], collate_fn: Callable) -> None:
        self.user_init = user_init
        self.collate_fn = collate_fn

    def __call__(self, worker_id: int) -> None:
        base_seed = torch.initial_seed() - worker_id  # PyTorch seeded this worker with base_seed + worker_id
        if self.user_init is not None:
            self.user_init(worker_id)
        dataset = get_worker_info().dataset
        fetch_many = getattr(dataset, "__getitems__", None)

        def fetch(indices):
            return fetch_many(list(indices)) if fetch_many else [dataset[i] for i in indices]

        def worker_getitems(indices):
            seed = getattr(indices, "seed", None)
            if seed is not None:
                torch.manual_seed(seed)
                random.seed(seed)
                np.random.seed(seed % 2**32)
            stream = getattr(indices, "stream", worker_id)
            if stream != worker_id:
                self._seed_as(base_seed, stream)
            for consumed in getattr(indices, "replay", ()):
                self.collate_fn(fetch(consumed))  # the random draws the interrupted run's worker made
            return fetch(indices)

        try:
            dataset.__getitems__ = worker_getitems
        except (AttributeError, TypeError):  # a dataset that takes no attributes keeps the workers' own streams
            pass

    def _seed_as(self, base_seed: int, worker_id: int) -> None:
        """Seed this process as PyTorch seeds worker `worker_id` (numpy's SeedSequence is the hash it uses for numpy),
        then run the worker_init_fn for that id."""
        random.seed(base_seed + worker_id)
        torch.manual_seed(base_seed + worker_id)
        entropy = [worker_id, base_seed & 0xFFFFFFFF, base_seed >> 32, 0]
        np.random.seed(np.random.SeedSequence(entropy).generate_state(4))
        if self.user_init is not None:
            self.user_init(worker_id)


def _draw_epoch_seed() -> int:
    """The seed of an epoch's batches: one draw from the global RNG (where PyTorch draws its workers' base seed),
    different on each distributed rank."""
    rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() \
        else 0
    return (int(torch.empty((), dtype=torch.int64).random_()) + rank * 0x9E3779B97F4A7C15) % 2**63


class ResumableSampler:
    """Wraps a (batch) sampler: records the RNG state its order is drawn from; can replay it and skip ahead.

    The state covers the global RNGs and, when the sampler draws from a generator of its own (e.g.
    `DataLoader(shuffle=True, generator=g)`), that generator. With `workers`, a resume makes the workers replay
    their streams (`ReplayBatch`), and the state also holds `loader_generator` (the loader's generator must give the
    resumed workers the same base seed); with `persistent` workers the batches come out as `SeededBatch`es. With
    `record_batches`, `seen_batches` lists the indices of each batch drawn in the current iteration (prediction
    writers read them).
    """

    def __init__(self, inner, workers: int = 0, persistent: bool = False, loader_generator=None,
                 record_batches: bool = False) -> None:
        self.inner = inner
        self.workers = workers
        self.seed_batches = workers > 0 and persistent
        self.loader_generator = loader_generator if workers > 0 and not persistent else None
        self.seen_batches: Optional[List[List[int]]] = [] if record_batches else None
        self.order_rng: Optional[dict] = None  # RNG state the current epoch's order was drawn from
        self._skip = 0
        self._replay_rng: Optional[dict] = None
        self._loader_generator_state: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.inner)

    def resume(self, skip: int, order_rng: Optional[dict]) -> None:
        """Make the next iteration redraw the order from `order_rng` and start after `skip` items."""
        self._skip, self._replay_rng = skip, order_rng

    def __iter__(self) -> Iterator:
        # A DataLoader's iterator calls this right before it draws its workers' base seed from the loader's generator:
        # note that generator's state (the first call of an epoch), or set back the interrupted run's on a resume.
        generator = self.loader_generator
        if generator is not None and self._loader_generator_state is None:
            replayed = (self._replay_rng or {}).get("loader_generator")
            if replayed is not None:
                generator.set_state(replayed)
            self._loader_generator_state = generator.get_state()
        return self._iter()

    def _iter(self) -> Iterator:
        # A generator: nothing runs until the loader draws its first batch. A DataLoader with workers makes one
        # iterator it never draws from before the one it uses; a pending resume must reach the one it uses.
        skip, replay_rng = self._skip, self._replay_rng
        self._skip, self._replay_rng = 0, None
        generator = self.own_generator()
        current = None
        if replay_rng is None:  # right before the sampler draws the order
            self.order_rng = get_rng_states()
            if generator is not None:
                self.order_rng["sampler_generator"] = generator.get_state()
        else:  # redraw the interrupted epoch's order and skip its consumed part, leaving the global RNG as it is
            current = get_rng_states()
            set_rng_states(replay_rng)
            if generator is not None and "sampler_generator" in replay_rng:
                generator.set_state(replay_rng["sampler_generator"])
            self.order_rng = replay_rng
        if self._loader_generator_state is not None:
            self.order_rng["loader_generator"], self._loader_generator_state = self._loader_generator_state, None
        epoch_seed = _draw_epoch_seed() if self.seed_batches else None
        batches = iter(self.inner)
        replay = skip and self.workers and epoch_seed is None  # the workers' streams are replayed
        consumed = []
        for _ in range(skip):  # index-level skipping: no sample is loaded here
            batch = next(batches, None)
            if replay:
                consumed.append(list(batch))
        if current is not None:
            set_rng_states(current)
        if epoch_seed is not None:
            batches = (SeededBatch(batch, (epoch_seed + i) % 2**63) for i, batch in enumerate(batches, skip))
        elif replay:
            batches = self._replayed(batches, consumed)
        if self.seen_batches is None:
            yield from batches
            return
        self.seen_batches = []
        for batch in batches:
            self.seen_batches.append(list(batch))
            yield batch

    def _replayed(self, batches: Iterator, consumed: list) -> Iterator:
        """The resumed epoch's batches; the first one each worker fetches names the stream it continues and carries
        that stream's consumed batches (the resumed iterator gives batch `skip + j` to worker j % W; the interrupted
        one gave batch k to worker k % W)."""
        skip, workers = len(consumed), self.workers
        for j, batch in enumerate(batches):
            if j < workers:
                stream = (skip + j) % workers
                batch = ReplayBatch(batch, stream, [b for k, b in enumerate(consumed) if k % workers == stream])
            yield batch

    def own_generator(self) -> Optional[torch.Generator]:
        """The generator the sampler draws its order from, if it has one of its own (else the global RNG)."""
        sampler = getattr(self.inner, "sampler", self.inner)  # a BatchSampler's sampler, or the sampler itself
        generator = getattr(sampler, "generator", None)
        return generator if isinstance(generator, torch.Generator) else None

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet: the object is being copied or unpickled
            raise AttributeError(name)
        return getattr(self.inner, name)


def is_map_style(loader: Any) -> bool:
    return isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset)


def _batch_sampler_over(batch_sampler: Any, sampler: Any) -> Any:
    """A batch sampler of the same class and settings drawing from `sampler` (a distributed or sequential one): a
    custom class is made again as `cls(sampler, batch_size=..., drop_last=...)`, BatchSampler's signature, as
    Lightning does."""
    cls = type(batch_sampler)
    if hasattr(batch_sampler, "batch_size") and hasattr(batch_sampler, "drop_last"):
        try:
            return cls(sampler, batch_size=batch_sampler.batch_size, drop_last=batch_sampler.drop_last)
        except TypeError as error:
            problem = f"`{cls.__name__}(sampler, batch_size=..., drop_last=...)` failed ({error})"
    else:
        problem = "it has no `batch_size` and `drop_last` attributes"
    raise MisconfigurationException(
        f"The DataLoader uses a custom batch sampler ({cls.__name__}) that volt cannot make again over a distributed "
        f"or sequential sampler: {problem}. Give it BatchSampler's signature `(sampler, batch_size, drop_last)`, or "
        "pass `Trainer(use_distributed_sampler=False)` and shard the data in your batch sampler."
    )


def wrap_loader(loader: Any, *, sequential: bool = False, sampler_fn: Optional[Callable] = None,
                record_batches: bool = False, pin_memory: bool = False) -> Any:
    """Return a resumable shallow copy of `loader` (non-DataLoader iterables are returned as they are; the loaders
    in a CombinedLoader are wrapped one by one).

    `sequential` replaces the order with a SequentialSampler (overfit_batches); `sampler_fn(loader)` returns a
    distributed sampler to use instead of the loader's own; `record_batches` keeps each batch's sample indices
    (`ResumableSampler.seen_batches`; loaders with a batch sampler only); `pin_memory` makes the copy pin its
    batches (for a GPU).
    """
    if isinstance(loader, CombinedBatches):  # each of its loaders is wrapped, as Lightning puts samplers in each
        combined = CombinedLoader(loader.combined.iterables, loader.combined.mode)
        combined.flattened = [wrap_loader(part, sequential=sequential, sampler_fn=sampler_fn,
                                          record_batches=record_batches, pin_memory=pin_memory)
                              for part in combined.flattened]
        return CombinedBatches(combined)
    if pin_memory and isinstance(loader, DataLoader) and not loader.pin_memory:
        loader = _copy_loader(loader)
        loader.pin_memory = True
    if not is_map_style(loader):
        return loader
    wrapped = _copy_loader(loader)
    sampler = loader.sampler
    if sequential:
        sampler = SequentialSampler(loader.dataset)
        object.__setattr__(wrapped, "sampler", sampler)  # so a distributed sampler built below does not shuffle
    if sampler_fn is not None:
        sampler = sampler_fn(wrapped)
    if loader.batch_sampler is not None:
        batch_sampler = loader.batch_sampler
        if sampler is not loader.sampler:
            batch_sampler = _batch_sampler_over(batch_sampler, sampler)
        object.__setattr__(wrapped, "sampler", sampler)
        workers, persistent = loader.num_workers, loader.num_workers > 0 and loader.persistent_workers
        object.__setattr__(wrapped, "batch_sampler", ResumableSampler(
            batch_sampler, workers, persistent, loader_generator=loader.generator, record_batches=record_batches))
        if workers:
            user_init = loader.worker_init_fn
            if user_init is None and os.environ.get("PL_SEED_WORKERS") == "1":  # seed_everything(workers=True)
                user_init = functools.partial(pl_worker_init_function, rank=rank_zero_only.rank)
            object.__setattr__(wrapped, "worker_init_fn", WorkerSeeding(user_init, loader.collate_fn))
        if persistent:
            # Starting workers draws their base seed from the loader's generator (else the global RNG), which happens
            # in the first epoch of an uninterrupted run but in the resumed epoch of a resumed one. Persistent workers
            # reseed for each batch anyway, so a private generator serves; the sampler keeps the generator it was
            # given.
            object.__setattr__(wrapped, "generator", torch.Generator().manual_seed(torch.initial_seed()))
    else:
        object.__setattr__(wrapped, "sampler", ResumableSampler(sampler))
    return wrapped


def check_loaders(loaders: Any, name: str, reloads: bool) -> None:
    """Lightning's warnings about how the loaders of `name` ("train_dataloader", "val_dataloader", ...) are set up:
    an evaluation loader that shuffles; worker processes started by "spawn" each epoch (slow: `persistent_workers`
    keeps them); persistent workers with pinned memory while the loaders are remade every few epochs."""
    for loader in _flat(loaders):
        if not isinstance(loader, DataLoader):
            continue
        if name != "train_dataloader" and _shuffles(loader):
            rank_zero_warn(f"Your `{name}`'s sampler has shuffling enabled, it is strongly recommended that you turn "
                           "shuffling off for val/test dataloaders.", category=PossibleUserWarning)
        context = loader.multiprocessing_context
        start_method = context.get_start_method() if context is not None else mp.get_start_method()
        if loader.num_workers > 0 and start_method == "spawn" and not loader.persistent_workers:
            rank_zero_warn(f"Consider setting `persistent_workers=True` in '{name}' to speed up the dataloader worker "
                           "initialization: spawned workers start again, importing everything, at each epoch.")
        if loader.persistent_workers and loader.pin_memory and reloads:
            rank_zero_warn("The combination of `DataLoader(`pin_memory=True`, `persistent_workers=True`) and "
                           "`Trainer(reload_dataloaders_every_n_epochs > 0)` can lead to instability due to limitations "
                           "in PyTorch (https://github.com/pytorch/pytorch/issues/91252). We recommend setting "
                           "`pin_memory=False` in this case.", category=PossibleUserWarning)


def _shuffles(loader: DataLoader) -> bool:
    sampler = loader.sampler if loader.batch_sampler is None else getattr(loader.batch_sampler, "sampler", None)
    return isinstance(sampler, RandomSampler) or bool(getattr(sampler, "shuffle", False))


def warn_overfit_shuffling(loaders: Any, prefix: str) -> None:
    """`overfit_batches` runs the first batches in order: warn, as Lightning does, when a loader would have shuffled
    (a map-style one whose sampler is not sequential)."""
    if isinstance(loaders, CombinedBatches):
        loaders = loaders.combined.flattened
    for loader in loaders if isinstance(loaders, list) else [loaders]:
        if is_map_style(loader) and not isinstance(loader.sampler, SequentialSampler):
            rank_zero_warn(f"You requested to overfit but enabled {prefix} dataloader shuffling. We are turning off "
                           f"the {prefix} dataloader shuffling for you (`overfit_batches` runs the first batches in "
                           "order).")
            return


def stateful_stream(loader: Any) -> Tuple[Optional[Any], str]:
    """The object whose `state_dict()`/`load_state_dict()` say where an iterable training stream stands, or None and
    why there is none (the replay notice says it).

    The loader comes first (torchdata's StatefulDataLoader, which also follows its worker processes; any iterable
    with the pair). Else the dataset (a Hugging Face `datasets` IterableDataset, a user's own), but only without
    worker processes: each worker iterates a copy of the dataset, so the copy in this process never moves. The
    pair's contract: `state_dict()` (plain data) describes the position reached by what was consumed so far, and
    after `load_state_dict(state)` the next iteration continues from there, with the same values (a stream that
    draws random numbers keeps its generator's state in it).
    """
    if _has_state_pair(loader):
        return loader, ""
    if isinstance(loader, CombinedBatches):
        parts = loader.combined.flattened
        if parts and all(_has_state_pair(part) for part in parts):
            return CombinedStream(parts), ""
        return None, ("the training data is a CombinedLoader whose loaders do not all have "
                      "state_dict()/load_state_dict()")
    dataset = loader.dataset if isinstance(loader, DataLoader) else loader
    name = type(dataset).__name__
    if not _has_state_pair(dataset):
        return None, f"the training data ({name}) has no state_dict()/load_state_dict()"
    if loader.num_workers > 0:
        return None, (f"the training dataset ({name}) has a state_dict(), but it runs in {loader.num_workers} "
                      "DataLoader worker processes whose progress this process cannot see (torchdata's "
                      "StatefulDataLoader can)")
    return dataset, ""


class CombinedStream:
    """Where a CombinedLoader stands when each of its loaders can say: their states, in the loaders' order (the list
    Lightning keeps under `loops.fit_loop.state_dict.combined_loader`)."""

    def __init__(self, loaders: List[Any]) -> None:
        self.loaders = loaders

    def state_dict(self) -> List[Any]:
        return [loader.state_dict() for loader in self.loaders]

    def load_state_dict(self, states: List[Any]) -> None:
        if len(states) != len(self.loaders):
            raise ValueError(f"The checkpoint holds the positions of {len(states)} training loaders, but the "
                             f"CombinedLoader has {len(self.loaders)}: resume with the loaders it was saved with.")
        for loader, state in zip(self.loaders, states):
            loader.load_state_dict(state)


def _has_state_pair(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def _copy_loader(loader: DataLoader) -> DataLoader:
    """A shallow copy that starts its own iterator (the user's DataLoader is never changed)."""
    copied = copy.copy(loader)
    copied.__dict__["_iterator"] = None
    return copied


def prefetchable(loader: Any) -> bool:
    """Whether fetching `loader`'s next batch early changes nothing but timing: its samples are loaded in worker
    processes, so the training process draws no random numbers for them (a loader that loads in this process may
    draw for augmentations; drawing them a step early would shift the random streams of the step, and a resumed
    run could not replay that)."""
    return isinstance(loader, DataLoader) and loader.num_workers > 0


class DevicePrefetcher:
    """Iterates `batches` one batch ahead, copying the next batch to the GPU on a side stream while the current one
    trains. `move(batch)` does the copy (volt's default transfer: precision conversion, `transfer_batch_to_device`);
    it runs on the side stream and, from pinned memory, returns at once.

    The first batch is fetched and its copy started when the prefetcher is made. Each batch handed out is safe to
    use on the current stream: that stream waits for the copy, and the batch's tensors are recorded as used by it,
    so their memory is not reused before the step that uses them has run.
    """

    def __init__(self, batches: Iterator, move: Callable[[Any], Any], device: torch.device) -> None:
        self._batches = batches
        self._move = move
        self._stream = torch.cuda.Stream(device)
        self._main = torch.cuda.current_stream(device)
        self._next = self._fetch()

    def __iter__(self) -> "DevicePrefetcher":
        return self

    def __next__(self) -> Any:
        batch = self._next
        if batch is _NO_BATCH:
            raise StopIteration
        self._main.wait_stream(self._stream)
        batch = apply_to_collection(batch, torch.Tensor, self._used_by_main)
        self._next = self._fetch()
        return batch

    def _fetch(self) -> Any:
        batch = next(self._batches, _NO_BATCH)
        if batch is _NO_BATCH:
            return _NO_BATCH
        with torch.cuda.stream(self._stream):
            return self._move(batch)

    def _used_by_main(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.is_cuda:
            tensor.record_stream(self._main)
        return tensor


_NO_BATCH = object()


def profiled_fetches(iterator: Iterator[Any], profiler, action: str) -> Iterator[Any]:
    """`iterator`'s items, each fetch timed by `profiler` as `action` (Lightning's names, e.g.
    "[_TrainingEpochLoop].train_dataloader_next"): the report shows how long steps wait for data. The loops wrap
    their iterators only while a profiler records, so an unprofiled step pays nothing."""
    while True:
        with profiler.profile(action):
            item = next(iterator, _NO_BATCH)
        if item is _NO_BATCH:
            return
        yield item


def shutdown_workers(loader: Any) -> None:
    """Stop the persistent worker processes of a wrapped loader when its run ends. Left to garbage collection,
    they outlive the run, and a later fork (the next run's workers) can inherit their queue threads mid-operation
    and hang."""
    if isinstance(loader, CombinedBatches):
        for part in loader.combined.flattened:
            shutdown_workers(part)
        return
    iterator = getattr(loader, "_iterator", None) if isinstance(loader, DataLoader) else None
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None


def set_data_epoch(loader: Any, epoch: int) -> None:
    """Call `set_epoch` once on each sampler of `loader` that has it (DistributedSampler and the like), whether it
    is the loader's sampler or the one inside its batch sampler (wrappers forward the attribute), and on an
    iterable dataset that has it. Hugging Face `datasets` streams need it (as their Trainer calls it): their shuffle
    order is per epoch, and a state they were resumed from applies until the epoch changes. Lightning calls it on
    samplers only."""
    if isinstance(loader, CombinedBatches):
        for part in loader.combined.flattened:
            set_data_epoch(part, epoch)
        return
    dataset = loader.dataset if isinstance(loader, DataLoader) else None
    candidates = (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None),
                  dataset if isinstance(dataset, IterableDataset) else None)
    for obj in {id(c): c for c in candidates if c is not None}.values():
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


def resumable_sampler(loader: Any) -> Optional[ResumableSampler]:
    if not isinstance(loader, DataLoader):
        return None
    for candidate in (loader.batch_sampler, loader.sampler):
        if isinstance(candidate, ResumableSampler):
            return candidate
    return None


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
            f"When using an `IterableDataset` (a dataloader without a length), `Trainer({name})` must be `1.0` or an "
            f"int number of batches, not the fraction {limit}."
        )
    limited = int(num_batches * limit)
    if limit > 0 and limited == 0 and num_batches > 0:
        raise MisconfigurationException(
            f"`{name}={limit}` keeps less than one of the {num_batches} batches: {limit} * {num_batches} < 1. Please "
            f"increase the `{name}` argument. Try at least `{name}={1.0 / num_batches}`, or use an int."
        )
    return limited


def as_loader_list(loaders: Any) -> List[Any]:
    """Normalise what a `*_dataloader` hook or argument returned to a list of loaders."""
    if loaders is None:
        return []
    if isinstance(loaders, CombinedLoader):  # sequential runs its loaders in turn (as a list); other modes are one
        return list(loaders.flattened) if loaders.mode == "sequential" else [CombinedBatches(loaders)]
    # Lists, tuples and dicts of loaders, nested too, as a sequential CombinedLoader flattens them (Lightning's
    # rule): one holding only numbers or strings (`[0]`, `[1, 2, 3]`) is itself one iterable of batches.
    return [] if isinstance(loaders, list) and not loaders else _flat(loaders)


def check_iterable(loaders: Any, found_in: str) -> None:
    """Each loader given (alone, or in a list, dict or CombinedLoader) can be iterated, else Lightning's TypeError
    saying where the bad value came from (`found_in`: "passed to `Trainer.fit(train_dataloaders=...)`", ...)."""
    for loader in _flat(loaders):
        if not isinstance(loader, DataLoader) and not hasattr(loader, "__iter__"):
            raise TypeError(f"An invalid dataloader was {found_in}. Found {loader}: use a DataLoader or another "
                            "iterable, or a list or dict of them.")


def _flat(loaders: Any) -> List[Any]:
    """The loaders given (alone, or in a list, dict or CombinedLoader), as a flat list."""
    return loaders.flattened if isinstance(loaders, CombinedLoader) else CombinedLoader(loaders).flattened


def training_loader(source: Any) -> Any:
    """The training data as the fit loop iterates it: several loaders (a list, tuple or dict, or a CombinedLoader
    in any mode but sequential) give one combined batch per step; a single loader is returned as it is."""
    if isinstance(source, (list, tuple, dict)):
        source = CombinedLoader(source, "max_size_cycle")
    if not isinstance(source, CombinedLoader):
        return source
    if source.mode == "sequential":
        raise ValueError('`Trainer.fit()`\'s `FitLoop` does not support the `CombinedLoader(mode="sequential")` '
                         "mode. The available modes are: ['min_size', 'max_size_cycle', 'max_size']")
    return CombinedBatches(source)


class CombinedBatches:
    """A CombinedLoader as the loops iterate any loader: its batches alone (iterating it pairs each with its
    batch_idx and dataloader_idx, which the loops count themselves), and a length known before iterating."""

    def __init__(self, combined: CombinedLoader) -> None:
        self.combined = combined

    def __iter__(self) -> Iterator[Any]:
        return _first_items(iter(self.combined))

    def __len__(self) -> int:
        return self.combined.num_batches  # type: ignore[return-value]


def _first_items(started: CombinedLoader) -> Iterator[Any]:
    """The batches of a CombinedLoader already started, by `next` alone (`iter()` on it would start it again)."""
    while True:
        try:
            batch, _, _ = next(started)
        except StopIteration:
            return
        yield batch


def as_given(loaders: Any) -> Any:
    """Loaders as the Trainer's dataloader properties show them (as Lightning's do): a CombinedLoader's loaders in
    the structure they were given in, anything else (a loader, a list or dict of them) as it is."""
    if isinstance(loaders, CombinedBatches):
        return loaders.combined.iterables
    return loaders.iterables if isinstance(loaders, CombinedLoader) else loaders


def distributed_sampler_fn(trainer, train: bool) -> Optional[Callable]:
    """The strategy's sampler factory for this loader kind, when the strategy is a distributed one (DDP, FSDP: with
    one process too, as Lightning, so that the order does not change with the number of processes) and the Trainer
    inserts distributed samplers (`use_distributed_sampler`); else None."""
    if not (trainer.use_distributed_sampler and isinstance(trainer.strategy, ParallelStrategy)):
        return None
    return trainer.strategy.train_sampler_fn() if train else trainer.strategy.eval_sampler_fn()


def loaders_stale(trainer, loaded_epoch: float) -> bool:
    """`reload_dataloaders_every_n_epochs`: loaders made at `loaded_epoch` are due to be made again."""
    n = trainer.reload_dataloaders_every_n_epochs
    return bool(n) and trainer.current_epoch - loaded_epoch >= n


class DataLoaderIter:
    """What a step that takes `dataloader_iter` gets (Lightning 2.x's flavour): an iterator of `(batch, batch_idx,
    dataloader_idx)` from which the step fetches the batches it needs, as they come from the loader (no transfer
    hooks, no device move). The loops read the last fetch (`batch`, `batch_idx`, `dataloader_idx`) for the batch
    hooks, `fetched` for the count, and `done`, set once the run's last batch is fetched.

    `batches` yields `(batch, batch_idx, dataloader_idx, is_last)`.
    """

    def __init__(self, batches: Iterator[tuple]) -> None:
        self._batches = batches
        self.batch: Any = None
        self.batch_idx = 0
        self.dataloader_idx = 0
        self.fetched = 0
        self.done = False

    def __iter__(self) -> "DataLoaderIter":
        return self

    def __next__(self) -> tuple:
        item = None if self.done else next(self._batches, None)
        if item is None:
            self.done = True
            raise StopIteration
        self.batch, self.batch_idx, self.dataloader_idx, self.done = item
        self.fetched += 1
        return self.batch, self.batch_idx, self.dataloader_idx
