"""Checkpoint I/O plugins: how checkpoint files are written, read and removed.

`TorchCheckpointIO` is volt's own file format (`volt/checkpoint.py`): atomic writes (temporary file, fsync, rename)
and safe loading (`weights_only=True`). `AsyncCheckpointIO` writes in a background thread. The Trainer keeps the
plugin in use as `trainer.strategy.checkpoint_io`; pass another with `Trainer(plugins=[...])`.
"""
import os
from abc import ABC, abstractmethod
from concurrent.futures import Future
from typing import Any, Dict, Optional, Union

import torch

from volt.utilities.apply_func import apply_to_collection

PathLike = Union[str, os.PathLike]


class CheckpointIO(ABC):
    """Writes, reads and removes checkpoint files. Subclass it to store checkpoints elsewhere."""

    @abstractmethod
    def save_checkpoint(self, checkpoint: Dict[str, Any], path: PathLike, storage_options: Optional[Any] = None) -> None:
        """Write `checkpoint` (a dict of plain data and tensors) to `path`."""

    @abstractmethod
    def load_checkpoint(self, path: PathLike, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        """Read the checkpoint at `path`, its tensors placed by `map_location`."""

    @abstractmethod
    def remove_checkpoint(self, path: PathLike) -> None:
        """Delete the checkpoint at `path`."""

    def teardown(self) -> None:
        """Called at the end of a Trainer stage: finish pending work, release resources."""


class TorchCheckpointIO(CheckpointIO):
    """volt's checkpoint files: `torch.save` format written atomically, read back with `weights_only=True` unless
    `weights_only=False` is asked for (only for files you trust). Local paths and fsspec URLs."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: PathLike, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"TorchCheckpointIO.save_checkpoint takes no storage_options (got {storage_options!r}); "
                            "write a CheckpointIO subclass that uses them.")
        from volt.checkpoint import save_checkpoint

        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: PathLike, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        from volt.checkpoint import load_checkpoint

        return load_checkpoint(path, map_location=map_location, weights_only=weights_only is not False)

    def remove_checkpoint(self, path: PathLike) -> None:
        from volt.checkpoint import remove_checkpoint

        remove_checkpoint(path)


class AsyncCheckpointIO(CheckpointIO):
    """Writes checkpoints in a background thread with `checkpoint_io` (default TorchCheckpointIO), so training goes on
    while the file is written. The checkpoint's tensors are copied before `save_checkpoint` returns, so later
    training steps cannot change what is saved. At most one write is in flight: the next save, a load, a removal and
    `teardown` wait for it; a write that failed raises its error there."""

    def __init__(self, checkpoint_io: Optional[CheckpointIO] = None) -> None:
        self.checkpoint_io = checkpoint_io if checkpoint_io is not None else TorchCheckpointIO()
        self._executor = None
        self._pending: Optional[Future] = None

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: PathLike, storage_options: Optional[Any] = None) -> None:
        self.wait()
        snapshot = apply_to_collection(checkpoint, torch.Tensor, _copy)
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="volt-checkpoint-writer")
        self._pending = self._executor.submit(self.checkpoint_io.save_checkpoint, snapshot, path, storage_options)

    def load_checkpoint(self, path: PathLike, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        self.wait()
        return self.checkpoint_io.load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: PathLike) -> None:
        self.wait()
        self.checkpoint_io.remove_checkpoint(path)

    def wait(self) -> None:
        """Block until the write in flight (if any) is done; raise its error if it failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def teardown(self) -> None:
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            self.checkpoint_io.teardown()


def _copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().clone()


__all__ = ["AsyncCheckpointIO", "CheckpointIO", "TorchCheckpointIO"]
