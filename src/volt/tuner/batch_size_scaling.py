"""The batch-size search behind `Tuner.scale_batch_size` and the `BatchSizeFinder` callback.

Each trial sets the batch size where the module or datamodule keeps it (`batch_arg_name`), makes the dataloaders
again and runs `steps_per_trial` training steps (or evaluation batches). A trial that runs out of memory marks the
bound: CUDA's out-of-memory error, or on the CPU a `MemoryError` or the allocator's failure (Lightning recognises
CUDA's only). "power" doubles the size until a trial fails and keeps the last size that ran; "binsearch" then halves the
gap between the largest size that ran and the smallest that failed, and keeps the largest that ran, less `margin`.

The trials run inside `trainer.trial_run` (volt/trainer/trial.py), so the run goes on from exactly the state before
the search, with the found batch size in the module (or datamodule) and in its dataloaders. The sizes tried are
Lightning's, with its results where Lightning's trials run what it means to run. volt differs in that its first trial
runs `init_val` (Lightning's runs the module's previous batch size), it returns only a size that ran (Lightning can
return `max_val`, `1` or a halved size untried), it never retries a size that failed (Lightning's binsearch can, for
ever, from a size at least the dataset's length), and it says so when even batch size 1 runs out of memory.
"""
import logging
from typing import Optional

from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.memory import garbage_collection_cuda, is_oom_error
from volt.utilities.parsing import lightning_hasattr, lightning_setattr
from volt.utilities.rank_zero import rank_zero_only, rank_zero_warn

# The searches log on a logger of their own: inside a trial run only the `volt` logger's own lines are held back.
log = logging.getLogger("volt.tuner")
_info = rank_zero_only(log.info)


def _scale_batch_size(trainer, mode: str = "power", steps_per_trial: int = 3, init_val: int = 2,
                      max_trials: int = 25, batch_arg_name: str = "batch_size", margin: float = 0.05,
                      max_val: int = 8192) -> Optional[int]:
    """Search from inside the running call (`on_fit_start`, `on_validation_start`, ...); returns the size found,
    which the module (or datamodule) and the running loop's dataloaders then use."""
    if trainer.fast_dev_run:
        rank_zero_warn("Skipping batch size scaler since `fast_dev_run` is enabled.")
        return None
    with trainer.trial_run() as trial:
        search = _Search(trainer, trial, batch_arg_name, steps_per_trial, max_val)
        start = min(init_val, max_val)
        if max_trials == 0:  # no trial: the initial size, as Lightning
            size = start
        else:
            size = search.power(start, max_trials) if mode == "power" else search.binsearch(start, max_trials)
        reduced = max(1, int(size * (1 - margin))) if mode == "binsearch" else size
        if reduced != size:
            _info(f"Applying margin of {margin:.1%}, reducing batch size from {size} to {reduced}")
            size = reduced
        lightning_setattr(trainer.lightning_module, batch_arg_name, size)
    _info(f"Finished batch size finder, will continue with full run using batch size {size}")
    return size


class _Search:
    """Runs the trials of one search and remembers what ran and what failed."""

    def __init__(self, trainer, trial, batch_arg_name: str, steps_per_trial: int, max_val: int) -> None:
        self.trainer, self.trial = trainer, trial
        self.name = batch_arg_name
        self.steps = steps_per_trial
        self.max_val = max_val
        self.largest_ok: Optional[int] = None
        self.smallest_failed: Optional[int] = None
        _check_data(trainer, trial)  # first, as Lightning: a wrong set of loaders is the first error shown
        if not lightning_hasattr(trainer.lightning_module, batch_arg_name):
            raise MisconfigurationException(
                f"Field {batch_arg_name} not found in `model`, `datamodule`, nor their `hparams` attributes.")

    def power(self, size: int, max_trials: int) -> int:
        """Double after each size that runs; halve after failures until one runs. The largest size that ran."""
        for remaining in range(max_trials - 1, -1, -1):
            ran = self.run(size)
            if ran:
                following = self._bigger(size) if remaining else None
            else:
                following = None if self.largest_ok is not None or not remaining else self._smaller(size, low=0)
            self._report(size, ran, following)
            if following is None:
                break
            size = following
        return self._found()

    def binsearch(self, size: int, max_trials: int) -> int:
        """Double until a size fails, then bisect between the largest size that ran and the smallest that failed;
        `max_trials` counts the sizes that ran."""
        successes = 0
        while True:
            ran = self.run(size)
            if ran:
                successes += 1
                if successes >= max_trials:
                    following = None
                elif self.smallest_failed is None:
                    following = self._bigger(size)
                elif self.smallest_failed - size <= 1:
                    following = None
                else:
                    following = (size + self.smallest_failed) // 2
            else:
                low = self.largest_ok if self.largest_ok is not None else 1
                following = None if self.largest_ok is not None and size - low <= 1 else self._smaller(size, low)
            self._report(size, ran, following)
            if following is None:
                break
            size = following
        return self._found()

    def run(self, size: int) -> bool:
        """One trial at `size`: True if it ran, False if it ran out of memory (other errors propagate)."""
        trainer = self.trainer
        lightning_setattr(trainer.lightning_module, self.name, size)
        self.trial.reload_dataloaders()
        ran = True
        try:
            if trainer.state.fn == "fit":
                self.trial.fit(max_steps=self.steps)
            else:
                self.trial.evaluate(max_batches=self.steps)
        except Exception as error:
            if not is_oom_error(error):
                raise
            ran = False
        if ran:
            self.largest_ok = max(size, self.largest_ok or 0)
        else:  # outside the `except`, the failed step's tensors are freed; on a GPU, also its allocator cache
            if trainer.strategy.root_device.type == "cuda":
                garbage_collection_cuda()
            self.smallest_failed = min(size, self.smallest_failed or size)
        return ran

    @staticmethod
    def _report(size: int, ran: bool, following: Optional[int]) -> None:
        """Log a trial's outcome and the size tried next (Lightning's wording)."""
        outcome = "succeeded" if ran else "failed (out of memory)"
        _info(f"Batch size {size} {outcome}" + (f", trying batch size {following}" if following else "."))

    def _bigger(self, size: int) -> Optional[int]:
        """The next size up (double, at most `max_val`), or None when there is none worth a trial: `max_val`
        reached, the whole dataset in one batch, or the next size already failed."""
        if size >= self.max_val:
            _info(f"Reached the maximum batch size limit of {self.max_val}. Stopping search.")
            return None
        samples = _dataset_length(self.trial)
        if samples is not None and size >= samples:
            _info(f"The batch size {size} is greater or equal than the length of your dataset: {samples}.")
            return None
        bigger = min(size * 2, self.max_val)
        if self.smallest_failed is not None and bigger >= self.smallest_failed:
            return None
        return bigger

    def _smaller(self, size: int, low: int) -> int:
        """The next size down after `size` failed: the middle of (low, size), at least 1."""
        if size <= 1:
            raise MemoryError(f"The batch size finder ran out of memory even with {self.name}=1: the model does not "
                              "fit at any batch size. Make it smaller or use lower precision.")
        return max(1, (low + size) // 2)

    def _found(self) -> int:
        if self.largest_ok is None:
            raise MemoryError(f"No batch size the finder tried ran ({self.name} down to {self.smallest_failed}): "
                              "raise `max_trials` or start lower with `init_val`.")
        return self.largest_ok


def _check_data(trainer, trial) -> None:
    """The batch size must reach the dataloaders: they come from hooks, and evaluation has only one."""
    fn = trainer.state.fn
    if trial.dataloaders_given:
        raise MisconfigurationException(
            f"The Batch size finder cannot be used with dataloaders passed directly to `.{fn}()`. Please disable the "
            "feature or incorporate the dataloader into your LightningModule or LightningDataModule.")
    if fn != "fit" and len(trial.dataloaders) > 1:
        prefix = {"validate": "val"}.get(fn, fn)
        raise MisconfigurationException(f"The Batch size finder cannot be used with multiple {prefix} dataloaders.")


def _dataset_length(trial) -> Optional[int]:
    """Samples in the dataset of the running loop's dataloader, or None when it has no length (iterable)."""
    loaders = trial.dataloaders
    try:
        return len(loaders[0].dataset)
    except (IndexError, AttributeError, TypeError, NotImplementedError):
        return None
