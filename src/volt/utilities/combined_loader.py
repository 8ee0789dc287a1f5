"""CombinedLoader (Lightning's `utilities.combined_loader`): iterate several loaders at once; each batch is a list/dict with one batch from each."""
from typing import Any, Dict, Iterator, List, Mapping, Union

_MODES = ("max_size_cycle", "min_size", "max_size")


class CombinedLoader:
    """`max_size_cycle` (default) cycles the shorter loaders until the longest ends; `min_size` stops with the
    shortest; `max_size` runs to the longest and gives None for loaders that ran out."""

    def __init__(self, iterables: Union[List[Any], Dict[str, Any]], mode: str = "max_size_cycle") -> None:
        if mode not in _MODES:
            raise ValueError(f"CombinedLoader mode={mode!r} is not supported; choose one of {_MODES}.")
        self.iterables = iterables
        self.mode = mode
        self._keys = list(iterables) if isinstance(iterables, Mapping) else None
        self._loaders = list(iterables.values()) if isinstance(iterables, Mapping) else list(iterables)

    def __len__(self) -> int:
        lengths = [len(loader) for loader in self._loaders]
        return min(lengths) if self.mode == "min_size" else max(lengths)

    def _pack(self, items: List[Any]) -> Any:
        return dict(zip(self._keys, items)) if self._keys is not None else items

    def __iter__(self) -> Iterator[Any]:
        iterators = [iter(loader) for loader in self._loaders]
        if self.mode == "min_size":
            for items in zip(*iterators):
                yield self._pack(list(items))
            return
        total = len(self)
        for _ in range(total):
            items = []
            for i, it in enumerate(iterators):
                try:
                    items.append(next(it))
                except StopIteration:
                    if self.mode == "max_size":
                        items.append(None)
                        continue
                    iterators[i] = iter(self._loaders[i])
                    items.append(next(iterators[i]))
            yield self._pack(items)
