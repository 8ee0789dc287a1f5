"""Checkpoint I/O plugins: how checkpoint files are written, read and removed.

`TorchCheckpointIO` is volt's own file format (`volt/checkpoint.py`): atomic writes (temporary file, fsync, rename)
and safe loading (`weights_only=True`). `AsyncCheckpointIO` writes in a background thread. The Trainer keeps the
plugin in use as `trainer.strategy.checkpoint_io` and writes, reads and removes every checkpoint file through it
(`Strategy.save_checkpoint`, `load_checkpoint`, `remove_checkpoint`); pass another with `Trainer(plugins=[...])`.
Sharded checkpoint folders are written by torch.distributed.checkpoint instead (volt/sharded_checkpoint.py).
"""
import os
from abc import ABC, abstractmethod
from typing import Any, Dict, Optional, Union

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

        # no map_location: onto the CPU, as Lightning's (the Trainer's strategy moves what it restores to its device)
        map_location = "cpu" if map_location is None else map_location
        return load_checkpoint(path, map_location=map_location, weights_only=weights_only is not False)

    def remove_checkpoint(self, path: PathLike) -> None:
        from volt.checkpoint import remove_checkpoint

        remove_checkpoint(path)


class AsyncCheckpointIO(CheckpointIO):
    """Writes checkpoints in a background thread with `checkpoint_io` (default TorchCheckpointIO), so training goes on
    while the file is written. This is how volt writes every checkpoint file in the background: as a plugin,
    `Trainer(plugins=[AsyncCheckpointIO()])`, every save is; `ModelCheckpoint(async_save=True)` wraps the Trainer's
    CheckpointIO in one for its own saves.

    `save_checkpoint` stages the checkpoint (its tensors copied to CPU memory, so later training steps cannot change
    what is saved) and returns the write in flight, a `volt.checkpoint.PendingWrite`. At most one write is in flight:
    the next save, a load or removal of the file being written, and `teardown` wait for it; a write that failed
    raises its error there (once).
    """

    def __init__(self, checkpoint_io: Optional[CheckpointIO] = None) -> None:
        self.checkpoint_io = checkpoint_io if checkpoint_io is not None else TorchCheckpointIO()
        self._pending = None  # the write in flight (a PendingWrite)

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: PathLike, storage_options: Optional[Any] = None):
        from volt.checkpoint import PendingWrite, stage

        self.wait()
        staged = stage(checkpoint)
        self._pending = PendingWrite.start(
            path, lambda: self.checkpoint_io.save_checkpoint(staged, path, storage_options))
        return self._pending

    def load_checkpoint(self, path: PathLike, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        self._wait_for(path)
        where = {} if map_location is None else {"map_location": map_location}  # the wrapped plugin may take none
        return self.checkpoint_io.load_checkpoint(path, weights_only=weights_only, **where)

    def remove_checkpoint(self, path: PathLike) -> None:
        self._wait_for(path)
        self.checkpoint_io.remove_checkpoint(path)

    def _wait_for(self, path: PathLike) -> None:
        """Wait if `path` is being written. Other files need no wait, and must not: the Trainer removes the files a
        new checkpoint replaces from the writer's thread, once it is written."""
        if self._pending is not None and self._pending.path == os.fspath(path):
            self.wait()

    def wait(self) -> None:
        """Block until the write in flight (if any) is done; raise its error if it failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.wait()

    def teardown(self) -> None:
        try:
            self.wait()
        finally:
            self.checkpoint_io.teardown()


__all__ = ["AsyncCheckpointIO", "CheckpointIO", "TorchCheckpointIO"]
