"""BatchSizeFinder: find the largest batch size that fits in memory when a Trainer call starts (Lightning 2.6's
callback). The search (volt/tuner/batch_size_scaling.py) runs a few steps per size; the call then goes on from
exactly the state before it, with the size found in the module or datamodule and in the dataloaders."""
from typing import Optional

from volt.callbacks.callback import Callback
from volt.tuner.batch_size_scaling import _scale_batch_size
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_warn


class BatchSizeFinder(Callback):
    """Search the batch size at the start of fit, validate, test or predict.

    Args:
        mode: "power" (double until out of memory, keep the last size that ran) or "binsearch" (then bisect).
        steps_per_trial: training steps (or evaluation batches) run at each size.
        init_val: the first size tried.
        max_trials: the most sizes tried ("binsearch": the most that run); 0 tries none and keeps `init_val`.
        batch_arg_name: where the batch size is kept: an attribute of the module, `hparams`, or the datamodule,
            read by your `*_dataloader` hooks.
        margin: "binsearch" only: the size found is reduced by this fraction, for headroom.
        max_val: the largest size tried.

    Subclass it and call `self.scale_batch_size(trainer, pl_module)` from another hook to search at other times.
    """

    SUPPORTED_MODES = ("power", "binsearch")

    def __init__(self, mode: str = "power", steps_per_trial: int = 3, init_val: int = 2, max_trials: int = 25,
                 batch_arg_name: str = "batch_size", margin: float = 0.05, max_val: int = 8192) -> None:
        mode = mode.lower() if isinstance(mode, str) else mode
        if mode not in self.SUPPORTED_MODES:
            raise ValueError(f"`mode` should be either of {self.SUPPORTED_MODES}")
        for name, value, least in (("steps_per_trial", steps_per_trial, 1), ("init_val", init_val, 1),
                                   ("max_trials", max_trials, 0), ("max_val", max_val, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"`{name}` must be an int >= {least}, got {value!r}.")
        if not isinstance(margin, (int, float)) or not 0.0 <= margin < 1.0:
            raise ValueError(f"`margin` should be between 0 and 1. Found margin={margin!r}")
        self.optimal_batch_size: Optional[int] = init_val
        self._mode = mode
        self._steps_per_trial = steps_per_trial
        self._init_val = init_val
        self._max_trials = max_trials
        self._batch_arg_name = batch_arg_name
        self._margin = margin
        self._max_val = max_val

    def setup(self, trainer, pl_module, stage: Optional[str] = None) -> None:
        if trainer.world_size > 1:
            raise MisconfigurationException("The Batch size finder is not supported with distributed strategies.")
        if hasattr(pl_module, self._batch_arg_name) and self._batch_arg_name in pl_module.hparams:
            rank_zero_warn(
                f"Field `model.{self._batch_arg_name}` and `model.hparams.{self._batch_arg_name}` are mutually "
                f"exclusive! `model.{self._batch_arg_name}` will be used as the initial batch size for scaling. If "
                "this is not the intended behavior, please remove either one.")

    def scale_batch_size(self, trainer, pl_module) -> None:
        """Run the search now; the size found goes to `optimal_batch_size`."""
        self.optimal_batch_size = _scale_batch_size(trainer, self._mode, self._steps_per_trial, self._init_val,
                                                    self._max_trials, self._batch_arg_name, self._margin,
                                                    self._max_val)

    def on_fit_start(self, trainer, pl_module) -> None:
        self.scale_batch_size(trainer, pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "validate":
            return
        self.scale_batch_size(trainer, pl_module)

    def on_test_start(self, trainer, pl_module) -> None:
        self.scale_batch_size(trainer, pl_module)

    def on_predict_start(self, trainer, pl_module) -> None:
        self.scale_batch_size(trainer, pl_module)
