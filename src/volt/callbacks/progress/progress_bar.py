"""ProgressBar: the base class of volt's progress bars and of users' custom ones.

It knows how many batches each stage has and which metrics to show. Metric values stay tensors in the Trainer;
`get_metrics` turns them into numbers, and a bar calls it only when it actually redraws. A redraw at a training
batch end never waits for the device: it shows the newest values whose copy to the host has landed (on a GPU, from
a redraw or two before; on the CPU, the current ones). Every other redraw (epoch and validation ends) shows the
current values.
"""
import contextlib
from collections import deque
from typing import Any, Deque, Dict, Iterator, Optional, Union

import torch

from volt.callbacks.callback import Callback
from volt.utilities.host_copy import HostCopy
from volt.utilities.rank_zero import rank_zero_warn

_IN_FLIGHT = 4  # at most this many redraws' copies wait to land; older ones are dropped


class ProgressBar(Callback):
    """Subclass this for a custom progress bar; implement `disable`/`enable` and the hooks you need.

    The Trainer holds at most one progress bar (`trainer.progress_bar_callback`).
    """

    def __init__(self) -> None:
        self._trainer = None
        self._current_eval_dataloader_idx: Optional[int] = None
        self._warned_duplicates = False
        self._values_may_lag = False  # set around the redraws at training batch ends
        self._in_flight: Deque[HostCopy] = deque()
        self._landed: Dict[str, Any] = {}

    @property
    def trainer(self):
        if self._trainer is None:
            raise TypeError(f"The `{type(self).__name__}._trainer` reference has not been set yet: the Trainer sets "
                            "it in `setup`, so read it only from inside a hook.")
        return self._trainer

    @property
    def sanity_check_description(self) -> str:
        return "Sanity Checking"

    @property
    def train_description(self) -> str:
        return "Training"

    @property
    def validation_description(self) -> str:
        return "Validation"

    @property
    def test_description(self) -> str:
        return "Testing"

    @property
    def predict_description(self) -> str:
        return "Predicting"

    @property
    def total_train_batches(self) -> Union[int, float]:
        """Training batches this epoch (`inf` for an endless loader); capped by `max_steps` when epochs are unbounded."""
        trainer = self.trainer
        if trainer.max_epochs == -1 and trainer.max_steps is not None and trainer.max_steps > 0:
            return min(trainer.num_training_batches, trainer.max_steps - trainer.global_step)
        return trainer.num_training_batches

    @property
    def total_val_batches_current_dataloader(self) -> Union[int, float]:
        """Batches of the validation loader being run; the sanity check runs at most `num_sanity_val_steps` of them."""
        trainer = self.trainer
        total = _pick(trainer.num_val_batches, self._current_eval_dataloader_idx)
        if trainer.sanity_checking and trainer.num_sanity_val_steps >= 0:
            return min(total, trainer.num_sanity_val_steps)
        return total

    @property
    def total_test_batches_current_dataloader(self) -> Union[int, float]:
        return _pick(self.trainer.num_test_batches, self._current_eval_dataloader_idx)

    @property
    def total_predict_batches_current_dataloader(self) -> Union[int, float]:
        return _pick(self.trainer.num_predict_batches, self._current_eval_dataloader_idx)

    @property
    def total_val_batches(self) -> Union[int, float]:
        """Validation batches over all loaders in this epoch; 0 in an epoch that runs no validation."""
        trainer = self.trainer
        every = trainer.check_val_every_n_epoch
        if every and (trainer.current_epoch + 1) % every:
            return 0
        batches = trainer.num_val_batches
        return sum(batches) if isinstance(batches, (list, tuple)) else batches

    def has_dataloader_changed(self, dataloader_idx: int) -> bool:
        """Record `dataloader_idx` as the current eval loader; True when it differs from the previous one."""
        previous = self._current_eval_dataloader_idx
        self._current_eval_dataloader_idx = dataloader_idx
        return previous != dataloader_idx

    def reset_dataloader_idx_tracker(self) -> None:
        self._current_eval_dataloader_idx = None

    def disable(self) -> None:
        """Stop drawing. The Trainer calls this on every rank but 0."""
        raise NotImplementedError(f"{type(self).__name__} must implement `disable()` to be used as a progress bar.")

    def enable(self) -> None:
        """Draw again after `disable()`."""
        raise NotImplementedError(f"{type(self).__name__} must implement `enable()` to be used as a progress bar.")

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print without breaking the bar; override where the bar owns the terminal."""
        print(*args, **kwargs)

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer
        if not trainer.is_global_zero:
            self.disable()

    def get_metrics(self, trainer, pl_module) -> Dict[str, Union[int, str, float, Dict[str, float]]]:
        """The items shown next to the bar: `v_num` (the logger version) and every `self.log(..., prog_bar=True)`.

        Tensor values become Python numbers here; at a training batch end without waiting for the device (see the
        module docstring). Override it to change what is shown (e.g. `items.pop("v_num", None)`).
        """
        standard = get_standard_metrics(trainer)
        logged = trainer.progress_bar_tensors
        if standard and not self._warned_duplicates:
            duplicates = standard.keys() & logged.keys()
            if duplicates:
                self._warned_duplicates = True
                name = sorted(duplicates)[0]
                rank_zero_warn(
                    f"The progress bar already shows '{name}', and `self.log('{name}', ..., prog_bar=True)` replaces "
                    "it. Log under another name, or override `get_metrics()` in the progress bar callback."
                )
        items = dict(standard)
        items.update(self._host_values(logged))
        return items

    @contextlib.contextmanager
    def values_may_lag(self) -> Iterator[None]:
        """Within this block `get_metrics` does not wait for the device (a bar's redraw at a training batch end)."""
        self._values_may_lag = True
        try:
            yield
        finally:
            self._values_may_lag = False

    def _host_values(self, values: Dict[str, Any]) -> Dict[str, Any]:
        copy = HostCopy({name: value for name, value in values.items() if not isinstance(value, dict)})
        if not self._values_may_lag or copy.ready():
            self._in_flight.clear()
            self._landed = copy.numbers()
        else:
            self._in_flight.append(copy)
            if len(self._in_flight) > _IN_FLIGHT:
                self._in_flight.popleft()
            while self._in_flight and self._in_flight[0].ready():
                self._landed = self._in_flight.popleft().numbers()
        shown = {name: value for name, value in self._landed.items() if name in values}
        shown.update({name: _to_number(value) for name, value in values.items() if isinstance(value, dict)})
        return shown


def get_standard_metrics(trainer) -> Dict[str, Union[int, str]]:
    """`{"v_num": version}` when the Trainer has loggers (the last 4 characters of a string version), else `{}`."""
    loggers = trainer.loggers
    if not loggers:
        return {}
    if len(loggers) == 1:
        version = loggers[0].version
    else:
        version = "_".join(dict.fromkeys(str(logger.version) for logger in loggers))
    if version in ("", None):
        return {}
    if isinstance(version, str):
        version = version[-4:]
    return {"v_num": version}


def _to_number(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, dict):
        return {k: _to_number(v) for k, v in value.items()}
    return value


def _pick(batches, dataloader_idx: Optional[int]) -> Union[int, float]:
    if isinstance(batches, (list, tuple)):
        return batches[dataloader_idx or 0]
    return batches


class SwitchableBar(ProgressBar):
    """A bar with a refresh rate (0 turns it off) that `disable()`/`enable()` switch: the TQDM and Rich bars.

    Subclasses set `_refresh_rate` and `_enabled` in `__init__`.
    """

    @property
    def refresh_rate(self):
        return self._refresh_rate

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self._refresh_rate > 0

    @property
    def is_disabled(self) -> bool:
        return not self.is_enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True
