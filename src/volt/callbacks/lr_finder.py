"""LearningRateFinder: run the learning-rate range test when fitting starts (Lightning 2.6's callback).

The search runs after `configure_optimizers`, with the module's own optimizer, and the fit then goes on from
exactly the state before it (volt/tuner/lr_finder.py): with `update_attr=True` it trains with the suggested rate,
which is also written to `model.lr` (or `learning_rate`, `hparams.lr`, `attr_name`). The result is `optimal_lr`.
"""
from typing import Optional

from volt.callbacks.callback import Callback
from volt.tuner.lr_finder import _lr_find, _LRFinder


class LearningRateFinder(Callback):
    """Find a good initial learning rate by training with a rising rate and watching the loss.

    Args:
        min_lr: the first rate tried (> 0).
        max_lr: the last rate tried.
        num_training_steps: optimizer steps from `min_lr` to `max_lr`, one rate each.
        mode: "exponential" (rates evenly spaced on a log scale) or "linear".
        early_stop_threshold: stop when the smoothed loss exceeds this times the best so far (None: never).
        update_attr: put the suggestion into the module's learning-rate attribute and its optimizer.
        attr_name: that attribute's name, if neither `lr` nor `learning_rate`.

    Subclass it and call `self.lr_find(trainer, pl_module)` from another hook to search later in training.
    """

    SUPPORTED_MODES = ("linear", "exponential")

    def __init__(self, min_lr: float = 1e-8, max_lr: float = 1, num_training_steps: int = 100,
                 mode: str = "exponential", early_stop_threshold: Optional[float] = 4.0, update_attr: bool = True,
                 attr_name: str = "") -> None:
        mode = mode.lower() if isinstance(mode, str) else mode
        if mode not in self.SUPPORTED_MODES:
            raise ValueError(f"`mode` should be either of {self.SUPPORTED_MODES}")
        _check_rates(min_lr, max_lr, mode)
        if isinstance(num_training_steps, bool) or not isinstance(num_training_steps, int) or num_training_steps < 1:
            raise ValueError(f"`num_training_steps` must be an int >= 1, got {num_training_steps!r}.")
        if early_stop_threshold is not None and not early_stop_threshold > 0:
            raise ValueError(f"`early_stop_threshold` must be a positive number or None, got {early_stop_threshold!r}.")
        self._min_lr = min_lr
        self._max_lr = max_lr
        self._num_training_steps = num_training_steps
        self._mode = mode
        self._early_stop_threshold = early_stop_threshold
        self._update_attr = update_attr
        self._attr_name = attr_name
        self.optimal_lr: Optional[_LRFinder] = None

    def lr_find(self, trainer, pl_module) -> None:
        """Run the search now (inside a fit, after `configure_optimizers`); the result goes to `optimal_lr`."""
        self.optimal_lr = _lr_find(trainer, pl_module, min_lr=self._min_lr, max_lr=self._max_lr,
                                   num_training=self._num_training_steps, mode=self._mode,
                                   early_stop_threshold=self._early_stop_threshold, update_attr=self._update_attr,
                                   attr_name=self._attr_name)

    def on_fit_start(self, trainer, pl_module) -> None:
        self.lr_find(trainer, pl_module)


def _check_rates(min_lr, max_lr, mode: str) -> None:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (min_lr, max_lr))
    if not numbers or not 0 <= min_lr < max_lr or (mode == "exponential" and min_lr == 0):
        raise ValueError(f"The learning-rate finder needs 0 < min_lr < max_lr (min_lr may be 0 in 'linear' mode), "
                         f"got min_lr={min_lr!r}, max_lr={max_lr!r}.")
