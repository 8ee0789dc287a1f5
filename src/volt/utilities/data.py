"""Batch inspection helpers."""
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any, Iterator

import torch

from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_warn


def extract_batch_size(batch: Any) -> int:
    """The batch size `self.log` assumes: size(0) of the first tensor found in the batch (1 for a scalar). Warns,
    as Lightning, when another tensor of the batch has another size: the guess may be wrong."""
    sizes = (1 if tensor.ndim == 0 else int(tensor.size(0)) for tensor in _tensors(batch))
    size = next(sizes, None)
    if size is None:
        raise MisconfigurationException(
            "We could not infer the batch_size from the batch: it holds no tensor. Pass "
            "`self.log(..., batch_size=batch_size)`."
        )
    if any(other != size for other in sizes):
        rank_zero_warn(f"Trying to infer the `batch_size` from an ambiguous collection. The batch size we found is "
                       f"{size}. To avoid any miscalculations, use `self.log(..., batch_size=batch_size)`.")
    return size


def _tensors(data: Any) -> Iterator[torch.Tensor]:
    """Every tensor of a nested batch (sequences, mappings, dataclasses), in order."""
    if isinstance(data, torch.Tensor):
        yield data
        return
    if isinstance(data, Mapping):
        data = data.values()
    elif dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = [getattr(data, field.name) for field in dataclasses.fields(data)]
    elif not isinstance(data, Sequence) or isinstance(data, str):
        return
    for item in data:
        yield from _tensors(item)


def suggested_max_num_workers(local_world_size: int) -> int:
    """An upper bound for DataLoader `num_workers`: the CPUs this process may use, shared among the
    `local_world_size` processes of this machine, less one each for the training process itself."""
    if local_world_size < 1:
        raise ValueError(f"suggested_max_num_workers: local_world_size must be >= 1, got {local_world_size}.")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // local_world_size - 1)
