"""The learning-rate range test behind `Tuner.lr_find` and the `LearningRateFinder` callback.

Train for `num_training` optimizer steps while the learning rate rises from `min_lr` to `max_lr` (exponentially or
linearly), record the smoothed loss at each rate, and suggest the rate where the loss falls fastest. The steps run
as a trial (`trainer.trial_run`, volt/trainer/trial.py), so the run afterwards starts from exactly the state before
the search: weights, optimizer, RNG streams, loop counters, callbacks, logs (Lightning restores less, #6675, through
a temporary checkpoint file that `weights_only` loading could refuse, #21757). The rates, the smoothing and the
suggestion are Lightning's, so a seeded run gets Lightning's suggestion; that includes the smoothing's bias
correction, which counts one step ahead, so the first points read low (about half the loss at the first). volt
differs in two places: the search always runs its `num_training` steps (`max_epochs` does not cut it short), and
the smoothing counts the search's own steps, so a search started after some training (a `LearningRateFinder`
subclass run at a later epoch) smooths as one started at step 0 (Lightning's stops after its first step there).
"""
import logging
import math
from typing import Any, Dict, List, Optional

import torch

from volt.callbacks.callback import Callback
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.parsing import lightning_hasattr, lightning_setattr
from volt.utilities.rank_zero import rank_zero_only, rank_zero_warn

# The searches log on a logger of their own: inside a trial run only the `volt` logger's own lines are held back.
log = logging.getLogger("volt.tuner")
_info = rank_zero_only(log.info)
_LR_NAMES = ("lr", "learning_rate")


class _LRFinder:
    """What `lr_find` found: `results` holds the rates tried ("lr") and the smoothed loss at each ("loss").

    Args:
        mode: "exponential" or "linear": how the rate rises from step to step.
        lr_min: the first rate.
        lr_max: the last rate.
        num_training: steps from `lr_min` to `lr_max`.
    """

    def __init__(self, mode: str, lr_min: float, lr_max: float, num_training: int) -> None:
        if mode not in ("linear", "exponential"):
            raise ValueError(f"mode={mode!r}: the learning-rate finder's mode is 'exponential' or 'linear'.")
        self.mode = mode
        self.lr_min = lr_min
        self.lr_max = lr_max
        self.num_training = num_training
        self.results: Dict[str, List[float]] = {}
        self._optimal_idx: Optional[int] = None

    def lr_at(self, step: int) -> float:
        """The rate for the search's optimizer step `step` (0, 1, ...): `lr_min` first, then rising so that step
        `num_training - 1` uses `lr_max` (Lightning's schedule)."""
        if step == 0:
            return self.lr_min
        progress = (step + 1) / self.num_training
        if self.mode == "exponential":
            return self.lr_min * (self.lr_max / self.lr_min) ** progress
        return self.lr_min + progress * (self.lr_max - self.lr_min)

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> Optional[float]:
        """The rate at which the loss falls fastest (its most negative slope against the rate), leaving out the
        first `skip_begin` and last `skip_end` points and non-finite losses; None when fewer than two points
        remain (then run more steps, or give the search more data)."""
        lrs, losses = self.results.get("lr", []), self.results.get("loss", [])
        kept = [i for i in range(skip_begin, len(losses) - skip_end) if math.isfinite(losses[i])]
        if len(kept) < 2:
            log.error("Failed to compute suggestion for learning rate because there are not enough points. Increase "
                      "the loop iteration limits or the size of your dataset/dataloader.")
            self._optimal_idx = None
            return None
        loss = torch.tensor([losses[i] for i in kept], dtype=torch.float64)
        rate = torch.tensor([lrs[i] for i in kept], dtype=torch.float64)
        slopes = torch.gradient(loss, spacing=[rate])[0]
        self._optimal_idx = kept[int(torch.argmin(slopes))]
        return lrs[self._optimal_idx]

    def plot(self, suggest: bool = False, show: bool = False, ax: Any = None):
        """Loss against learning rate (log axis in exponential mode), with the suggestion marked if `suggest`.
        Returns the matplotlib Figure (`.savefig("lr.png")`); `show` opens it through pyplot; `ax` draws on
        given axes. Needs matplotlib (`pip install matplotlib`)."""
        from volt.plot import plot_lr_find

        suggested = self.suggestion() if suggest else None
        return plot_lr_find(self.results["lr"], self.results["loss"], suggested_lr=suggested, ax=ax,
                            log_scale=self.mode == "exponential", show=show)


class _LRCallback(Callback):
    """The search's only callback: sets each step's rate before the step and records the smoothed loss after it;
    asks the loop to stop when the loss diverges (above `early_stop_threshold` times the best so far).

    The loss is smoothed as Lightning does: an exponential moving average with weight `beta`, bias-corrected.
    """

    def __init__(self, finder: _LRFinder, early_stop_threshold: Optional[float], beta: float = 0.98) -> None:
        self.finder = finder
        self.early_stop_threshold = early_stop_threshold
        self.beta = beta
        self.lrs: List[float] = []
        self.losses: List[float] = []
        self.avg_loss = 0.0
        self.best_loss = 0.0
        self._start_step = 0
        self._lr = finder.lr_min

    def on_train_start(self, trainer, pl_module) -> None:
        self._start_step = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._lr = self.finder.lr_at(trainer.global_step - self._start_step)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = self._lr

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step - self._start_step  # steps taken so far, this one included
        if step == len(self.losses):  # accumulating gradients: no step yet
            return
        self.lrs.append(self._lr)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:  # training_step skipped the batch: no point on the curve
            self.losses.append(float("nan"))
            return
        self.avg_loss = self.beta * self.avg_loss + (1 - self.beta) * float(loss)
        smoothed = self.avg_loss / (1 - self.beta ** (step + 1))
        threshold = self.early_stop_threshold
        if threshold is not None and step > 1 and smoothed > threshold * self.best_loss:
            trainer.should_stop = True
        trainer.should_stop = trainer.strategy.broadcast(trainer.should_stop)  # every rank stops at one step
        if step == 1 or smoothed < self.best_loss:
            self.best_loss = smoothed
        self.losses.append(smoothed)


def _determine_lr_attr_name(model, attr_name: str = "") -> str:
    """Where the suggestion goes: `attr_name` if given, else `lr` or `learning_rate` on the module, its hparams or
    the datamodule."""
    if attr_name:
        if not lightning_hasattr(model, attr_name):
            raise AttributeError(f"The attribute name for the learning rate was set to {attr_name!r}, but could not "
                                 "find this as a field in `model` or `model.hparams` (or the datamodule).")
        return attr_name
    for name in _LR_NAMES:
        if lightning_hasattr(model, name):
            return name
    raise AttributeError(f"When using the learning rate finder, either `model` or `model.hparams` should have one of "
                         f"these fields: {_LR_NAMES}. If your model has a different name for the learning rate, set it "
                         "with `.lr_find(attr_name=...)`; to only look at the results, pass `update_attr=False`.")


def _lr_find(trainer, model, min_lr: float = 1e-8, max_lr: float = 1, num_training: int = 100,
             mode: str = "exponential", early_stop_threshold: Optional[float] = 4.0, update_attr: bool = False,
             attr_name: str = "") -> Optional[_LRFinder]:
    """Run the range test from inside the running fit (its optimizers exist); see the module docstring."""
    if trainer.fast_dev_run:
        rank_zero_warn("Skipping learning rate finder since `fast_dev_run` is enabled.")
        return None
    if update_attr:
        attr_name = _determine_lr_attr_name(model, attr_name)
    if len(trainer.optimizers) != 1:
        raise MisconfigurationException(
            f"`model.configure_optimizers()` returned {len(trainer.optimizers)} optimizers, but the learning rate "
            "finder only works with single optimizer: return one while you search.")
    finder = _LRFinder(mode, min_lr, max_lr, num_training)
    recorder = _LRCallback(finder, early_stop_threshold)
    with trainer.trial_run([recorder]) as trial:
        trial.fit(max_steps=num_training)
    if len(recorder.losses) < num_training:
        _info(f"LR finder stopped early after {len(recorder.losses)} steps due to diverging loss.")
    finder.results = trainer.strategy.broadcast({"lr": recorder.lrs, "loss": recorder.losses})
    if update_attr:
        _apply(trainer, model, attr_name, finder.suggestion())
    return finder


def _apply(trainer, model, attr_name: str, lr: Optional[float]) -> None:
    """Put the suggestion where the module reads its rate, and into the optimizer `configure_optimizers` already
    made, so this run trains with it too (Lightning's #21068). A scheduler that scales from base rates gets the
    suggestion as its base, and its group's rate keeps the scheduler's current factor."""
    if lr is None:
        return
    lightning_setattr(model, attr_name, lr)
    factors = {}
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        base_lrs = getattr(scheduler, "base_lrs", None)
        if base_lrs is None:
            continue
        for group, base in zip(scheduler.optimizer.param_groups, base_lrs):
            factors[id(group)] = group["lr"] / base if base else 1.0
        scheduler.base_lrs = [lr] * len(base_lrs)
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            group["lr"] = lr * factors.get(id(group), 1.0)
            if "initial_lr" in group:
                group["initial_lr"] = lr
    _info(f"Learning rate set to {lr}")
