"""EarlyStopping: stop `fit` when a monitored metric stops improving, crosses a threshold, or becomes NaN/inf.

Behaviour and saved state follow PyTorch Lightning 2.x. `patience` counts checks (validation runs, or training
epochs when checking at the training epoch end), not epochs.
"""
import logging
from enum import Enum
from typing import Any, Dict, Optional, Tuple

import torch

from volt.callbacks.callback import Callback
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_warn

log = logging.getLogger(__name__)


class EarlyStoppingReason(Enum):
    """Why training was (or was not) stopped; saved in checkpoints by value."""

    NOT_STOPPED = 0
    STOPPING_THRESHOLD = 1
    DIVERGENCE_THRESHOLD = 2
    PATIENCE_EXHAUSTED = 3
    NON_FINITE_METRIC = 4


class EarlyStopping(Callback):
    """Stop training when `monitor` has not improved for `patience` checks.

    Args:
        monitor: key of `trainer.callback_metrics` to watch, e.g. "val_loss".
        min_delta: an improvement must beat the best value by more than this.
        patience: how many checks without improvement to allow before stopping.
        verbose: log each decision.
        mode: "min" (lower is better) or "max".
        strict: raise if `monitor` is missing; with False, skip that check instead.
        check_finite: stop as soon as the metric is NaN or infinite.
        stopping_threshold: stop once the metric is better than this value.
        divergence_threshold: stop once the metric is worse than this value.
        check_on_train_epoch_end: check at the training epoch end (True) or after validation (False). Default:
            at the training epoch end when validation runs exactly once per epoch at its end.
        log_rank_zero_only: with several processes, only rank 0 logs the verbose messages.
    """

    mode_dict = {"min": torch.lt, "max": torch.gt}
    order_dict = {"min": "<", "max": ">"}

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: Optional[float] = None,
        divergence_threshold: Optional[float] = None,
        check_on_train_epoch_end: Optional[bool] = None,
        log_rank_zero_only: bool = False,
    ):
        if mode not in self.mode_dict:
            raise MisconfigurationException(
                f"EarlyStopping: `mode` can be min, max but got {mode}; use 'min' or 'max'.")
        self.monitor = monitor
        self.min_delta = min_delta
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.strict = strict
        self.check_finite = check_finite
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self.log_rank_zero_only = log_rank_zero_only
        self._check_on_train_epoch_end = check_on_train_epoch_end

        self.wait_count = 0
        self.stopped_epoch = 0
        self.best_score = torch.tensor(float("inf") if mode == "min" else float("-inf"))
        self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
        self.stopping_reason_message: Optional[str] = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    @property
    def monitor_op(self):
        """`torch.lt` in min mode, `torch.gt` in max mode: `monitor_op(a, b)` means "a is better than b"."""
        return self.mode_dict[self.mode]

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self._check_on_train_epoch_end is None:
            # Validating several times per epoch, or not every epoch: check after each validation instead.
            self._check_on_train_epoch_end = trainer.val_check_interval == 1.0 and trainer.check_val_every_n_epoch == 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._check_on_train_epoch_end and not self._should_skip_check(trainer):
            self._run_early_stopping_check(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self._check_on_train_epoch_end and not self._should_skip_check(trainer):
            self._run_early_stopping_check(trainer)

    def state_dict(self) -> Dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": self.best_score,
            "patience": self.patience,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.wait_count = state_dict["wait_count"]
        self.stopped_epoch = state_dict["stopped_epoch"]
        self.best_score = state_dict["best_score"]
        self.patience = state_dict["patience"]
        self.stopping_reason = EarlyStoppingReason(
            state_dict.get("stopping_reason", EarlyStoppingReason.NOT_STOPPED.value)
        )
        self.stopping_reason_message = state_dict.get("stopping_reason_message")

    def _should_skip_check(self, trainer) -> bool:
        return trainer.state.fn != "fit" or trainer.sanity_checking or bool(trainer.fast_dev_run)

    def _run_early_stopping_check(self, trainer) -> None:
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            message = (
                f"Early stopping conditioned on metric `{self.monitor}` which is not available. Pass in or modify"
                f" your `EarlyStopping` callback to use any of the following: `{'`, `'.join(metrics)}`"
            )
            if self.strict:
                raise RuntimeError(message)
            if self.verbose:
                rank_zero_warn(message, category=RuntimeWarning)
            return
        current = torch.as_tensor(metrics[self.monitor]).squeeze()
        should_stop, reason = self._evaluate_stopping_criteria(current)
        # Any rank may stop every rank (e.g. a NaN seen on one shard).
        should_stop = trainer.strategy.reduce_boolean_decision(should_stop, all=False)
        trainer.should_stop = trainer.should_stop or should_stop
        if should_stop:
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason_message = reason
        if reason and self.verbose:
            self._log_info(trainer, reason)

    def _evaluate_stopping_criteria(self, current: torch.Tensor) -> Tuple[bool, Optional[str]]:
        """Checks in a fixed order: non-finite, stopping threshold, divergence, improvement, patience."""
        better = self.monitor_op
        order = self.order_dict[self.mode]
        if self.check_finite and not torch.isfinite(current):
            self.stopping_reason = EarlyStoppingReason.NON_FINITE_METRIC
            return True, (
                f"Monitored metric {self.monitor} = {current} is not finite. Previous best value was"
                f" {self.best_score:.3f}. Signaling Trainer to stop."
            )
        if self.stopping_threshold is not None and better(current, self.stopping_threshold):
            self.stopping_reason = EarlyStoppingReason.STOPPING_THRESHOLD
            return True, (
                f"Stopping threshold reached: {self.monitor} = {current} {order} {self.stopping_threshold}."
                " Signaling Trainer to stop."
            )
        if self.divergence_threshold is not None and better(-current, -self.divergence_threshold):
            self.stopping_reason = EarlyStoppingReason.DIVERGENCE_THRESHOLD
            return True, (
                f"Divergence threshold reached: {self.monitor} = {current} {order} {self.divergence_threshold}."
                " Signaling Trainer to stop."
            )
        # An improvement must beat the best by more than min_delta in the good direction.
        margin = self.min_delta if self.mode == "min" else -self.min_delta
        if better(current + margin, self.best_score.to(current.device)):
            reason = self._improvement_message(current)
            self.best_score = current
            self.wait_count = 0
            return False, reason
        self.wait_count += 1
        if self.wait_count >= self.patience:
            self.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
            return True, (
                f"Monitored metric {self.monitor} did not improve in the last {self.wait_count} records. Best score:"
                f" {self.best_score:.3f}. Signaling Trainer to stop."
            )
        return False, None

    def _improvement_message(self, current: torch.Tensor) -> str:
        if torch.isfinite(self.best_score):
            return (
                f"Metric {self.monitor} improved by {abs(self.best_score - current):.3f} >= min_delta ="
                f" {abs(self.min_delta)}. New best score: {current:.3f}"
            )
        return f"Metric {self.monitor} improved. New best score: {current:.3f}"

    def _log_info(self, trainer, message: str) -> None:
        if trainer.world_size > 1:
            if self.log_rank_zero_only and trainer.global_rank != 0:
                return
            message = f"[rank: {trainer.global_rank}] {message}"
        log.info(message)
