"""GradientAccumulationScheduler: change `accumulate_grad_batches` from one epoch to the next."""
from typing import Dict

from volt.callbacks.callback import Callback
from volt.module import LightningModule
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_warn


class GradientAccumulationScheduler(Callback):
    """Accumulate gradients over a number of batches that depends on the epoch.

    Args:
        scheduling: `{epoch: factor}`, zero-based epochs; a factor holds until the next epoch listed. Epochs before
            the first one listed use 1. `{0: 1, 4: 2}` accumulates 2 batches from the fifth epoch on.

    The factor is set on `trainer.accumulate_grad_batches` at train start and at each epoch start (the loop reads
    it at every batch). A run resumed inside an epoch gets no `on_train_epoch_start` for it (as in Lightning), so
    the factor set at train start is the one for the epoch it resumes in, and resuming there is exact. (Lightning's
    scheduler sets it only at epoch starts: its resumed run keeps the Trainer's factor, 1, until the next epoch.)
    """

    def __init__(self, scheduling: Dict[int, int]) -> None:
        if not isinstance(scheduling, dict) or not scheduling:
            raise TypeError(f"GradientAccumulationScheduler(scheduling={scheduling!r}): pass a non-empty dict "
                            "{epoch: accumulation factor}, e.g. {0: 1, 4: 2}.")
        epochs, factors = list(scheduling), list(scheduling.values())
        if any(isinstance(key, bool) or not isinstance(key, int) or key < 0 for key in epochs):
            raise MisconfigurationException(
                f"Epoch should be an int greater than or equal to 0. Got {epochs}.")
        if any(isinstance(value, bool) or not isinstance(value, int) or value < 1 for value in factors):
            raise MisconfigurationException(
                f"Accumulation factor should be an int greater than 0. Got {factors}.")
        self.scheduling = {0: 1, **scheduling}  # a copy: the caller's dict is left as it was
        self.epochs = sorted(self.scheduling)

    def going_to_accumulate_grad_batches(self) -> bool:
        return any(factor > 1 for factor in self.scheduling.values())

    def get_accumulate_grad_batches(self, epoch: int) -> int:
        """The factor for `epoch`: that of the last listed epoch at or before it."""
        return self.scheduling[max(e for e in self.epochs if e <= epoch)]

    def on_train_start(self, trainer, pl_module) -> None:
        if not pl_module.automatic_optimization:
            raise RuntimeError(
                "Automatic gradient accumulation and the `GradientAccumulationScheduler` is not supported for manual "
                "optimization. Remove the callback or switch to automatic optimization.")
        overrides = [name for name in ("optimizer_step", "optimizer_zero_grad")
                     if getattr(type(pl_module), name) is not getattr(LightningModule, name)]
        if overrides and self.going_to_accumulate_grad_batches():
            rank_zero_warn(
                "When using `Trainer(accumulate_grad_batches != 1)` and overriding `LightningModule.optimizer_{step,"
                "zero_grad}`, the hooks will not be called on every batch (rather, they are called on every "
                "optimization step).")
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                "You have set `accumulate_grad_batches` and are using the `GradientAccumulationScheduler` callback. "
                "Either remove `accumulate_grad_batches` from the Trainer or remove the callback.")
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)
