"""SpikeDetection: stop training with `TrainingSpikeException` when the loss jumps far above its running mean."""
import json
import math
import os
from collections import deque
from typing import Any, Dict, Mapping, Optional

import torch

from volt.callbacks.callback import Callback
from volt.utilities.exceptions import MisconfigurationException


class TrainingSpikeException(RuntimeError):
    """Raised by SpikeDetection when the training loss spikes."""

    def __init__(self, batch_idx: int, *args: Any) -> None:
        super().__init__(f"Training spike detected in batch {batch_idx}", *args)


class SpikeDetection(Callback):
    """Watch the training loss; on a spike, write the batch and the one before it to a JSON file of batches to
    skip, and raise `TrainingSpikeException`.

    A loss is a spike when it is not better than the previous one and is farther from the mean of the last
    `window` losses than both `atol` and `rtol * mean` (None turns a test off); with `finite_only`, a NaN or
    infinite loss is a spike too. Each process watches its own loss; a spike on any process stops all of them.

    Args:
        mode: "min" (lower losses are better) or "max".
        window: how many recent losses the running mean covers.
        warmup: batches of each epoch (`batch_idx < warmup`) that are never spikes.
        atol, rtol: absolute and relative distance from the running mean that makes a spike.
        exclude_batches_path: where the JSON list goes (a folder gets `skip_batches.json`); default
            `<default_root_dir>/skip_batches.json`.
        finite_only: treat every non-finite loss as a spike; with False, a non-finite loss is judged like any other
            (+inf is a spike, -inf and NaN are not) and left out of the running mean.

    Reading the loss synchronises the GPU once per batch, which is the price of watching it.
    """

    def __init__(self, mode: str = "min", window: int = 10, warmup: int = 1, atol: Optional[float] = None,
                 rtol: Optional[float] = 2.0, exclude_batches_path: Optional[str] = None,
                 finite_only: bool = True) -> None:
        if mode not in ("min", "max"):
            raise MisconfigurationException(f"SpikeDetection(mode={mode!r}): use 'min' or 'max'.")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise MisconfigurationException(f"SpikeDetection(window={window!r}) must be an int >= 1.")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise MisconfigurationException(f"SpikeDetection(warmup={warmup!r}) must be an int >= 0.")
        self.mode = mode
        self.window = window
        self.warmup = warmup
        self.atol = atol
        self.rtol = rtol
        self.exclude_batches_path = exclude_batches_path
        self.finite_only = finite_only
        self.last_val = 0.0
        self.running: deque = deque(maxlen=window)  # the last `window` finite losses
        self.bad_batches: list = []

    @property
    def running_mean(self) -> float:
        return sum(self.running) / len(self.running) if self.running else math.nan

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is None:  # training_step skipped this batch
            return
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"SpikeDetection needs the training loss; the batch's outputs were {type(loss).__name__}.")
        value = float(loss.detach())
        spike = batch_idx >= self.warmup and self._is_spike(value)
        if trainer.world_size > 1:
            spike = trainer.strategy.reduce_boolean_decision(spike, all=False)
        if spike:
            self._handle_spike(trainer, batch_idx)
        if math.isfinite(value):
            self.running.append(value)
            self.last_val = value

    def _is_spike(self, value: float) -> bool:
        if self.finite_only and not math.isfinite(value):
            return True
        change = value - self.last_val
        if (change <= 0) if self.mode == "min" else (change >= 0):  # as good as the last loss, or better
            return False
        distance, mean = abs(value - self.running_mean), self.running_mean
        return ((self.atol is None or distance >= abs(self.atol))
                and (self.rtol is None or distance >= abs(self.rtol * mean)))

    def _handle_spike(self, trainer, batch_idx: int) -> None:
        # the batch before may have pushed the weights to where this one spikes: both are to be skipped
        self.bad_batches.extend([batch_idx - 1, batch_idx])
        path = self.exclude_batches_path or trainer.default_root_dir
        if not str(path).endswith(".json"):
            path = os.path.join(path, "skip_batches.json")
        self.exclude_batches_path = path
        if trainer.is_global_zero:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                json.dump(self.bad_batches, f, indent=4)
        raise TrainingSpikeException(batch_idx=batch_idx)

    def state_dict(self) -> Dict[str, Any]:
        return {"last_val": self.last_val, "running": list(self.running), "bad_batches": list(self.bad_batches),
                "bad_batches_path": None if self.exclude_batches_path is None else str(self.exclude_batches_path)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.last_val = state_dict["last_val"]
        self.running = deque(state_dict["running"], maxlen=self.window)
        self.bad_batches = list(state_dict["bad_batches"])
        self.exclude_batches_path = state_dict["bad_batches_path"]
