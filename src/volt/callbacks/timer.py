"""Timer: measure the time spent in each stage, and stop training when a time budget runs out.

The Trainer's `max_time` argument adds one of these. The elapsed training time is saved in checkpoints, so a
resumed run keeps counting against the same budget.
"""
import time
from datetime import timedelta
from typing import Any, Dict, Optional, Union

from volt.callbacks.callback import Callback
from volt.utilities.durations import duration_seconds
from volt.utilities.enums import LightningEnum
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_info

_STAGES = ("train", "sanity_check", "validate", "test", "predict")


class Interval(LightningEnum):
    """When the Timer checks its budget (`Timer(interval=...)` takes these or the plain strings)."""

    step = "step"
    epoch = "epoch"


class Timer(Callback):
    """Track the time of the train/validate/test stages; set `trainer.should_stop` once `duration` has passed.

    Args:
        duration: the training time budget: "DD:HH:MM:SS", a `datetime.timedelta`, or a dict of timedelta
            arguments (e.g. `{"hours": 12}`). None only measures.
        interval: check the budget after every training batch ("step") or at the end of each epoch ("epoch").
        verbose: say when the budget has run out.

    Times are in seconds from `time.monotonic()`; `time_elapsed("train")` includes the time of earlier runs
    that this one resumed from.
    """

    def __init__(self, duration: Optional[Union[str, timedelta, Dict[str, int]]] = None, interval: str = "step",
                 verbose: bool = True) -> None:
        if interval not in ("step", "epoch"):
            raise MisconfigurationException(
                f"Unsupported parameter value `Timer(interval={interval!r})`: use 'step' or 'epoch'.")
        self._duration = None if duration is None else duration_seconds(duration, f"Timer(duration={duration!r})")
        self._interval = interval
        self._verbose = verbose
        self._start_time: Dict[str, Optional[float]] = dict.fromkeys(_STAGES)
        self._end_time: Dict[str, Optional[float]] = dict.fromkeys(_STAGES)
        self._offset = 0.0

    def start_time(self, stage: str = "train") -> Optional[float]:
        """When `stage` last started (monotonic seconds), or None if it has not run."""
        return self._start_time[_stage(stage)]

    def end_time(self, stage: str = "train") -> Optional[float]:
        """When `stage` last ended (monotonic seconds), or None if it has not ended."""
        return self._end_time[_stage(stage)]

    def time_elapsed(self, stage: str = "train") -> float:
        """Seconds spent in `stage` (still counting while it runs)."""
        stage = _stage(stage)
        start, end = self._start_time[stage], self._end_time[stage]
        offset = self._offset if stage == "train" else 0.0
        if start is None:
            return offset
        if end is None:
            return time.monotonic() - start + offset
        return end - start + offset

    def time_remaining(self, stage: str = "train") -> Optional[float]:
        """Seconds left of the budget (negative once over it), or None without a duration."""
        if self._duration is None:
            return None
        return self._duration - self.time_elapsed(stage)

    def on_train_start(self, trainer, pl_module) -> None:
        self._start_time["train"] = time.monotonic()
        self._end_time["train"] = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._end_time["train"] = time.monotonic()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._start("validate")  # the sanity check too, as in Lightning ("sanity_check" stays unmeasured there)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._end_time["validate"] = time.monotonic()

    def on_test_start(self, trainer, pl_module) -> None:
        self._start("test")

    def on_test_end(self, trainer, pl_module) -> None:
        self._end_time["test"] = time.monotonic()

    def on_predict_start(self, trainer, pl_module) -> None:
        self._start("predict")

    def on_predict_end(self, trainer, pl_module) -> None:
        self._end_time["predict"] = time.monotonic()

    def _start(self, stage: str) -> None:
        self._start_time[stage] = time.monotonic()
        self._end_time[stage] = None

    def on_fit_start(self, trainer, pl_module) -> None:
        # runs after a resumed checkpoint's state is loaded: a budget already spent stops before the first batch
        if self._duration is not None:
            self._check_time_remaining(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._interval == "step" and self._duration is not None:
            self._check_time_remaining(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._interval == "epoch" and self._duration is not None:
            self._check_time_remaining(trainer)

    def state_dict(self) -> Dict[str, Any]:
        return {"time_elapsed": {stage: self.time_elapsed(stage) for stage in _STAGES}}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._offset = state_dict.get("time_elapsed", {}).get("train", 0.0)

    def _check_time_remaining(self, trainer) -> None:
        # rank 0's clock decides, so every rank stops after the same batch
        should_stop = trainer.strategy.broadcast(self.time_elapsed() >= self._duration)
        trainer.should_stop = trainer.should_stop or should_stop
        if should_stop and self._verbose:
            elapsed = timedelta(seconds=int(self.time_elapsed()))
            rank_zero_info(f"Time limit reached. Elapsed time is {elapsed}. Signaling Trainer to stop.")


def _stage(stage: Any) -> str:
    stage = getattr(stage, "value", stage)  # accept an enum member as well as its string
    if stage not in _STAGES:
        raise ValueError(f"Timer: unknown stage {stage!r}; use one of {', '.join(_STAGES)}.")
    return stage
