"""BasePredictionWriter: write predictions as `trainer.predict` makes them, per batch and/or per epoch."""
import inspect
from enum import Enum
from typing import Any, List, Optional, Sequence

import torch

from volt.callbacks.callback import Callback
from volt.utilities.apply_func import move_data_to_device
from volt.utilities.exceptions import MisconfigurationException


class WriteInterval(str, Enum):
    BATCH = "batch"
    EPOCH = "epoch"
    BATCH_AND_EPOCH = "batch_and_epoch"

    @property
    def on_batch(self) -> bool:
        return self in (WriteInterval.BATCH, WriteInterval.BATCH_AND_EPOCH)

    @property
    def on_epoch(self) -> bool:
        return self in (WriteInterval.EPOCH, WriteInterval.BATCH_AND_EPOCH)


class BasePredictionWriter(Callback):
    """Subclass and override `write_on_batch_end` and/or `write_on_epoch_end`; call `trainer.predict(model,
    return_predictions=False)` to keep nothing in memory that the writer does not need.

    Args:
        write_interval: "batch" (each batch as it is made), "epoch" (all of them at the end) or
            "batch_and_epoch".

    `batch_indices` are the dataset indices of the samples (of each batch, per dataloader at the epoch end). Under
    DDP every process predicts its own share of the data and calls the writer with it, so each process writes
    its part (name files by `trainer.global_rank`); the indices say where each prediction belongs.
    """

    def __init__(self, write_interval: str = "batch") -> None:
        if write_interval not in [interval.value for interval in WriteInterval]:
            raise MisconfigurationException(
                f"`write_interval` should be one of {[interval.value for interval in WriteInterval]}.")
        self.interval = WriteInterval(write_interval)
        self._predictions: List[List[Any]] = []  # per dataloader, on the CPU, for the epoch write

    def setup(self, trainer, pl_module, stage: str) -> None:
        if "dataloader_iter" in inspect.signature(pl_module.predict_step).parameters:
            raise NotImplementedError("The `PredictionWriterCallback` does not support using `dataloader_iter`.")

    def write_on_batch_end(self, trainer, pl_module, prediction: Any, batch_indices: Optional[Sequence[int]],
                           batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        """Override: write one batch's predictions."""
        raise NotImplementedError(f"{type(self).__name__} uses write_interval={self.interval.value!r}: override "
                                  "`write_on_batch_end`.")

    def write_on_epoch_end(self, trainer, pl_module, predictions: Sequence[Any], batch_indices: Sequence[Any]) -> None:
        """Override: write all predictions (a list of batch outputs; with several dataloaders, one such list per
        dataloader). `batch_indices` holds one list of batch index lists per dataloader."""
        raise NotImplementedError(f"{type(self).__name__} uses write_interval={self.interval.value!r}: override "
                                  "`write_on_epoch_end`.")

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._predictions = [[] for _ in trainer.num_predict_batches]

    def on_predict_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        if self.interval.on_epoch:
            self._predictions[dataloader_idx].append(move_data_to_device(outputs, torch.device("cpu")))
        if self.interval.on_batch:
            self.write_on_batch_end(trainer, pl_module, outputs, trainer.predict_loop.current_batch_indices, batch,
                                    batch_idx, dataloader_idx)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        if not self.interval.on_epoch:
            return
        predictions, self._predictions = self._predictions, []
        self.write_on_epoch_end(trainer, pl_module, predictions[0] if len(predictions) == 1 else predictions,
                                trainer.predict_loop.epoch_batch_indices)
