"""OnExceptionCheckpoint: save a checkpoint when fit/validate/test/predict fails with an exception."""
import os
from typing import Union

from volt.callbacks.callback import Callback
from volt.utilities.rank_zero import rank_zero_info, rank_zero_warn


class OnExceptionCheckpoint(Callback):
    """Write `<dirpath>/<filename>.ckpt` through `trainer.save_checkpoint` (atomic: a crash while writing leaves
    the previous file intact) when the run raises; the file is removed when a later run ends normally.

    Args:
        dirpath: the folder to write into (required: an exception can come before any logger picks a folder).
        filename: the file name without its extension.

    Resume from it with `trainer.fit(model, ckpt_path=callback.ckpt_path)`. With several processes the file is not
    written: a checkpoint needs every process, and the others may be waiting in a collective (use
    `ModelCheckpoint(save_last=True)` there; Ctrl-C and SIGTERM already save `last.ckpt`).
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: Union[str, os.PathLike], filename: str = "on_exception") -> None:
        if not filename:
            raise ValueError("OnExceptionCheckpoint(filename=''): the filename cannot be empty.")
        self.dirpath = dirpath
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.world_size > 1:
            rank_zero_warn(f"OnExceptionCheckpoint: not writing {self.ckpt_path} in a run with {trainer.world_size} "
                           "processes (a checkpoint needs all of them, and the others may be in a collective).")
            return
        trainer.save_checkpoint(self.ckpt_path)
        rank_zero_info(f"OnExceptionCheckpoint: saved {self.ckpt_path} after {type(exception).__name__}.")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        trainer.strategy.remove_checkpoint(self.ckpt_path)  # rank 0, through the CheckpointIO plugin

