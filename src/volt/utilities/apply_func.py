"""Walk nested batches (tuples, lists, dicts, dataclasses, namedtuples) and transform the tensors in them."""
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch


def apply_to_collection(data, dtype, function, *args, wrong_dtype=None, **kwargs):
    """Return `data` with `function` applied to every element of type `dtype`; containers are rebuilt."""
    if isinstance(data, dtype) and (wrong_dtype is None or not isinstance(data, wrong_dtype)):
        return function(data, *args, **kwargs)
    if isinstance(data, Mapping):
        return type(data)(
            {k: apply_to_collection(v, dtype, function, *args, wrong_dtype=wrong_dtype, **kwargs) for k, v in data.items()}
        ) if type(data) is not dict else {
            k: apply_to_collection(v, dtype, function, *args, wrong_dtype=wrong_dtype, **kwargs) for k, v in data.items()
        }
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return type(data)(*(apply_to_collection(v, dtype, function, *args, wrong_dtype=wrong_dtype, **kwargs) for v in data))
    if isinstance(data, (list, tuple)):
        return type(data)(apply_to_collection(v, dtype, function, *args, wrong_dtype=wrong_dtype, **kwargs) for v in data)
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        changes = {
            f.name: apply_to_collection(getattr(data, f.name), dtype, function, *args, wrong_dtype=wrong_dtype, **kwargs)
            for f in dataclasses.fields(data)
            if f.init
        }
        return dataclasses.replace(data, **changes)
    return data


def _to_device(tensor: torch.Tensor, device, non_blocking: bool):
    return tensor.to(device, non_blocking=non_blocking)


def move_data_to_device(batch, device):
    """Move every tensor in `batch` to `device` (non-blocking for CUDA)."""
    device = torch.device(device)
    if device.type == "cpu" and isinstance(batch, torch.Tensor) and batch.device.type == "cpu":
        return batch
    return apply_to_collection(batch, torch.Tensor, _to_device, device, device.type == "cuda")


def first_tensor(data):
    """The first tensor found in a nested batch, or None (used to infer the batch size)."""
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, Mapping):
        data = data.values()
    elif dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = [getattr(data, f.name) for f in dataclasses.fields(data)]
    elif not isinstance(data, Sequence) or isinstance(data, str):
        return None
    for item in data:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def convert_tensors_to_scalars(data: Any) -> Any:
    """Every one-element tensor in `data` replaced by its Python number."""

    def to_item(tensor: torch.Tensor) -> Any:
        if tensor.numel() != 1:
            raise ValueError(f"convert_tensors_to_scalars: a tensor of shape {tuple(tensor.shape)} is not a scalar.")
        return tensor.item()

    return apply_to_collection(data, torch.Tensor, to_item)


def convert_to_tensors(data: Any, device: Any) -> Any:
    """Numbers and numpy arrays in `data` made tensors, and every tensor moved to `device`."""
    import numpy as np

    data = apply_to_collection(data, (int, float, np.ndarray, np.number), torch.as_tensor, wrong_dtype=bool)
    return move_data_to_device(data, device)
