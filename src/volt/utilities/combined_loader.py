"""CombinedLoader (Lightning's `utilities.combined_loader`): iterate several loaders as one. Iterating it yields
`(batch, batch_idx, dataloader_idx)`, as Lightning's does."""
import itertools
import math
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from torch.utils.data import DataLoader

_MODES: Dict[str, Callable] = {"min_size": min, "max_size_cycle": max, "max_size": max, "sequential": sum}
_END = object()  # what `next(iterator, _END)` gives once an iterator is used up


class CombinedLoader:
    """Iterate a list, tuple or dict (nested as deep as wanted) of loaders in one of four modes:

    * `min_size` (default): one batch from each loader per step, until the shortest ends;
    * `max_size_cycle`: until the longest ends, restarting the shorter ones as they run out;
    * `max_size`: until the longest ends, with None for loaders that ran out;
    * `sequential`: each loader's batches in turn, `dataloader_idx` saying whose they are.

    In the first three modes a batch has the structure of `iterables`, with a batch in place of each loader.
    """

    def __init__(self, iterables: Any, mode: str = "min_size") -> None:
        if mode not in _MODES:
            raise ValueError(f"Unsupported mode {mode!r}, please select one of: {list(_MODES)}.")
        self._iterables = iterables
        self._flattened, self._rebuild = _flatten(iterables)
        self.mode = mode
        self._iterator: Union[Iterator[Tuple[Any, int, int]], None] = None
        self._limits: Optional[List[Union[int, float]]] = None

    @property
    def iterables(self) -> Any:
        """The loaders as given."""
        return self._iterables

    @property
    def flattened(self) -> List[Any]:
        """The loaders as a flat list (in the order their batches appear)."""
        return self._flattened

    @flattened.setter
    def flattened(self, flattened: List[Any]) -> None:
        if len(flattened) != len(self._flattened):
            raise ValueError(f"Mismatch in flattened length ({len(flattened)}) and existing length "
                             f"({len(self._flattened)}): set one loader for each of `flattened`.")
        self._flattened = list(flattened)
        self._iterables = self._rebuild(self._flattened)

    @property
    def limits(self) -> Optional[List[Union[int, float]]]:
        """The most batches taken from each loader of `flattened` (None: no limit; inf: the whole loader)."""
        return self._limits

    @limits.setter
    def limits(self, limits: Union[int, float, List[Union[int, float]], None]) -> None:
        """One limit for every loader, or a list with one per loader of `flattened`, or None."""
        if isinstance(limits, (int, float)):
            limits = [limits] * len(self._flattened)
        elif isinstance(limits, list) and len(limits) != len(self._flattened):
            raise ValueError(f"Mismatch in number of limits ({len(limits)}) and number of iterables "
                             f"({len(self._flattened)}): give one limit, or one per loader of `flattened`.")
        self._limits = limits

    @property
    def sampler(self) -> Any:
        """Each loader's sampler (None where it has none), in the structure of `iterables`."""
        return self._rebuild([getattr(loader, "sampler", None) for loader in self._flattened])

    @property
    def batch_sampler(self) -> Any:
        """Each loader's batch sampler (None where it has none), in the structure of `iterables`."""
        return self._rebuild([getattr(loader, "batch_sampler", None) for loader in self._flattened])

    @property
    def num_batches(self) -> Union[int, float]:
        """How many batches an iteration yields (inf if it depends on a loader without a length). Unlike `len()`,
        known before `iter()` (volt's own: the Trainer sizes its loops with it without starting any loader)."""
        if not self._flattened:
            return 0
        return _MODES[self.mode]([loader_length(loader) for loader in self._limited()])

    def __len__(self) -> int:
        if self._iterator is None:
            raise RuntimeError("Please call `iter(combined_loader)` first.")
        return self.num_batches  # type: ignore[return-value]

    def __iter__(self) -> "CombinedLoader":
        """Start the loaders' iterators (and worker processes) now, as Lightning does: every loader's, or in
        `sequential` mode the first one's (the others start when their turn comes)."""
        loaders = self._limited()
        if self.mode == "sequential":
            self._iterator = self._sequential(loaders, iter(loaders[0]) if loaders else None)
        else:
            iterators = [iter(loader) for loader in loaders]
            if self.mode == "max_size_cycle":
                steps = _max_size_cycle(loaders, iterators)
            else:
                steps = (_min_size if self.mode == "min_size" else _max_size)(iterators)
            self._iterator = ((self._rebuild(batches), batch_idx, 0) for batch_idx, batches in enumerate(steps))
        return self

    def __getstate__(self) -> dict:
        # a running iteration (generators, worker processes) stays behind: a pickled copy starts without it; the
        # structure's rebuild function is a closure, made again from the loaders on unpickling
        state = dict(vars(self), _iterator=None)
        del state["_rebuild"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._rebuild = _flatten(self._iterables)[1]

    def __next__(self) -> Tuple[Any, int, int]:
        if self._iterator is None:
            raise RuntimeError("Please call `iter(combined_loader)` first.")
        return next(self._iterator)

    def reset(self) -> None:
        """Forget the running iteration and stop the loaders' worker processes."""
        self._iterator = None
        for loader in self._flattened:
            if isinstance(loader, DataLoader):
                running = loader.__dict__.get("_iterator")
                if running is not None and hasattr(running, "_shutdown_workers"):
                    running._shutdown_workers()
                loader.__dict__["_iterator"] = None

    @staticmethod
    def _sequential(loaders: List[Any], first: Optional[Iterator[Any]]) -> Iterator[Tuple[Any, int, int]]:
        """Start each loader only when its turn comes (the first one's iterator is `first`), so that only one has
        worker processes at a time."""
        for dataloader_idx, loader in enumerate(loaders):
            iterator = first if dataloader_idx == 0 else iter(loader)
            for batch_idx, batch in enumerate(iterator):
                yield batch, batch_idx, dataloader_idx


    def _limited(self) -> List[Any]:
        """The loaders, each cut to its limit (`limits`)."""
        if self._limits is None:
            return self._flattened
        return [loader if limit == math.inf else _Limited(loader, int(limit))
                for loader, limit in zip(self._flattened, self._limits)]


class _Limited:
    """A loader's first `limit` batches, on each iteration."""

    def __init__(self, loader: Any, limit: int) -> None:
        self.loader, self.limit = loader, limit

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(self.loader, self.limit)

    def __len__(self) -> int:
        return min(loader_length(self.loader), self.limit)  # type: ignore[return-value]


def _min_size(iterators: List[Iterator[Any]]) -> Iterator[List[Any]]:
    while iterators:
        batches = []
        for iterator in iterators:
            batch = next(iterator, _END)
            if batch is _END:
                return
            batches.append(batch)
        yield batches


def _max_size_cycle(loaders: List[Any], iterators: List[Iterator[Any]]) -> Iterator[List[Any]]:
    """Ends when the last loader that had not yet run out does; the others restart each time they run out."""
    ran_out = [False] * len(loaders)
    while iterators:
        batches = []
        for i, loader in enumerate(loaders):
            batch = next(iterators[i], _END)
            if batch is _END:
                ran_out[i] = True
                if all(ran_out):
                    return
                iterators[i] = iter(loader)
                batch = next(iterators[i], _END)
                if batch is _END:  # an empty loader cannot be cycled
                    return
            batches.append(batch)
        yield batches


def _max_size(iterators: List[Iterator[Any]]) -> Iterator[List[Any]]:
    while True:
        batches = [next(iterator, None) for iterator in iterators]
        if all(batch is None for batch in batches):
            return
        yield batches


def loader_length(loader: Any) -> Union[int, float]:
    """Number of batches, or inf for loaders without a length."""
    try:
        return len(loader)
    except (TypeError, NotImplementedError):
        return math.inf


def _flatten(tree: Any) -> Tuple[List[Any], Callable[[List[Any]], Any]]:
    """The loaders in `tree` (lists, tuples and dicts of them; a container holding only numbers or strings counts as
    one loader) and a function that puts a list of the same length back into that structure."""
    if isinstance(tree, dict):
        children, rebuild_node = list(tree.values()), lambda values: type(tree)(zip(tree.keys(), values))
    elif isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a namedtuple
        children, rebuild_node = list(tree), (lambda values: type(tree)(*values))
    elif isinstance(tree, (list, tuple)):
        children, rebuild_node = list(tree), (lambda values: type(tree)(values))
    else:
        return [tree], lambda values: values[0]
    if all(isinstance(child, (int, float, str)) for child in children):
        return [tree], lambda values: values[0]
    flat: List[Any] = []
    parts = []
    for child in children:
        leaves, rebuild_child = _flatten(child)
        parts.append((len(flat), len(leaves), rebuild_child))
        flat += leaves

    def rebuild(values: List[Any]) -> Any:
        return rebuild_node([rebuild_child(values[start:start + n]) for start, n, rebuild_child in parts])

    return flat, rebuild
