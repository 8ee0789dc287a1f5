"""Batch inspection helpers."""
import os
from typing import Any

from volt.utilities.apply_func import first_tensor
from volt.utilities.exceptions import MisconfigurationException


def extract_batch_size(batch: Any) -> int:
    """The batch size `self.log` assumes: size(0) of the first tensor found in the batch (1 for a scalar)."""
    tensor = first_tensor(batch)
    if tensor is None:
        raise MisconfigurationException(
            "Could not find a tensor in the batch to take its size from. Pass `self.log(..., batch_size=N)`."
        )
    return 1 if tensor.ndim == 0 else int(tensor.size(0))



def suggested_max_num_workers(local_world_size: int) -> int:
    """An upper bound for DataLoader `num_workers`: the CPUs this process may use, shared among the
    `local_world_size` processes of this machine, less one each for the training process itself."""
    if local_world_size < 1:
        raise ValueError(f"suggested_max_num_workers: local_world_size must be >= 1, got {local_world_size}.")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // local_world_size - 1)
