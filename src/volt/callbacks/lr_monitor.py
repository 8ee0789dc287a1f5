"""LearningRateMonitor: log each optimizer's learning rate (and optionally momentum and weight decay).

Names follow Lightning: `lr-Adam`; a second unnamed Adam is `lr-Adam-1`; parameter groups add `/pg1`, `/pg2`
(or `/<name>` when the group has a "name"); a scheduler config's `name` replaces `lr-Adam`. Momentum and weight
decay go under `<name>-momentum` and `<name>-weight_decay`.
"""
from collections import defaultdict
from typing import Any, Dict, List, Optional, Tuple

import torch

from volt.callbacks.callback import Callback
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_warn


class LearningRateMonitor(Callback):
    """Log learning rates to the Trainer's loggers during training.

    Args:
        logging_interval: "step" or "epoch" logs every optimizer at that interval; None (default) follows each
            scheduler's own `interval`. Optimizers without a scheduler are logged at both.
        log_momentum: also log momentum (or Adam's first beta); 0 for optimizers that have neither.
        log_weight_decay: also log the parameter groups' weight decay.
        log_key_prefix: put in front of every logged name (`"optim/"` logs `optim/lr-Adam`), and of the keys of
            `lrs` (as Lightning after 2.6).

    Step logging follows the Trainer's `log_every_n_steps`, at the x position of the Trainer's step metrics: training
    batches that ended with an optimizer step (with manual optimization and several optimizers, not their steps). The values also go into `trainer.callback_metrics`,
    so e.g. ModelCheckpoint can monitor them. `lrs` holds every logged learning rate, by name.
    """

    def __init__(self, logging_interval: Optional[str] = None, log_momentum: bool = False,
                 log_weight_decay: bool = False, log_key_prefix: Optional[str] = None) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise MisconfigurationException(
                f"LearningRateMonitor(logging_interval={logging_interval!r}): use 'step', 'epoch' or None."
            )
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        if log_key_prefix is not None and not isinstance(log_key_prefix, str):
            raise MisconfigurationException(
                f"LearningRateMonitor(log_key_prefix={log_key_prefix!r}): use a string such as 'optim/', or None."
            )
        self.log_key_prefix = log_key_prefix or ""
        self.lrs: Dict[str, List[float]] = {}
        self.last_momentum_values: Dict[str, Optional[float]] = {}
        self.last_weight_decay_values: Dict[str, Optional[float]] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.loggers and not trainer.fast_dev_run:
            raise MisconfigurationException(
                "Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger: pass `logger=True` (or a"
                " logger) to the Trainer, or remove the LearningRateMonitor callback."
            )
        if self.log_momentum and not self._all_have_momentum(trainer):
            rank_zero_warn("LearningRateMonitor(log_momentum=True): some optimizers do not have momentum (neither "
                           "`momentum` nor `betas`); their momentum is logged as 0.", category=RuntimeWarning)
        names = [name for group_names, _, _ in self._named_optimizers(trainer) for name in group_names]
        self.lrs = {name: [] for name in names}
        self.last_momentum_values = {f"{name}-momentum": None for name in names}
        self.last_weight_decay_values = {f"{name}-weight_decay": None for name in names}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.logging_interval == "epoch" or not _logs_this_step(trainer):
            return
        self._log(trainer, "step" if self.logging_interval is None else None)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.logging_interval != "step":
            self._log(trainer, "epoch" if self.logging_interval is None else None)

    def _log(self, trainer, interval: Optional[str]) -> None:
        """Log the optimizers whose scheduler steps at `interval` (all when None), and those without a scheduler."""
        stats: Dict[str, float] = {}
        for names, optimizer, config in self._named_optimizers(trainer):
            if config is None or interval is None or config.interval == interval:
                stats.update(self._optimizer_stats(optimizer, names))
        if not stats:
            return
        device = trainer.strategy.root_device
        trainer.callback_metrics.update({name: torch.tensor(value, device=device) for name, value in stats.items()})
        for logger in trainer.loggers:
            logger.log_metrics(stats, step=trainer.fit_loop.batches_stepped)

    def _optimizer_stats(self, optimizer, names: List[str]) -> Dict[str, float]:
        stats = {}
        use_betas = "betas" in optimizer.defaults
        for group, name in zip(optimizer.param_groups, names):
            lr = float(group["lr"])
            self._take_over_history(name)
            self.lrs.setdefault(name, []).append(lr)
            stats[name] = lr
            if self.log_momentum:
                momentum = float(group["betas"][0] if use_betas else group.get("momentum", 0))
                stats[f"{name}-momentum"] = self.last_momentum_values[f"{name}-momentum"] = momentum
            if self.log_weight_decay:
                weight_decay = float(group["weight_decay"])
                stats[f"{name}-weight_decay"] = self.last_weight_decay_values[f"{name}-weight_decay"] = weight_decay
        return stats

    def _take_over_history(self, name: str) -> None:
        """An optimizer that gains a parameter group (e.g. when layers are unfrozen) turns `lr-Adam` into
        `lr-Adam/pg1`; the values logged under the old name move to the new one."""
        old = name[:-len("/pg1")]
        if name.endswith("/pg1") and old in self.lrs and name not in self.lrs:
            self.lrs[name] = self.lrs.pop(old)

    def _all_have_momentum(self, trainer) -> bool:
        optimizers = [config.scheduler.optimizer for config in trainer.lr_scheduler_configs] or trainer.optimizers
        return all("momentum" in opt.defaults or "betas" in opt.defaults for opt in optimizers)

    def _named_optimizers(self, trainer) -> List[Tuple[List[str], Any, Any]]:
        """`(group names, optimizer, scheduler config)` for each scheduled optimizer, then the others (config None)."""
        result = []
        seen = []
        type_counts: Dict[type, int] = defaultdict(int)
        for config in trainer.lr_scheduler_configs:
            optimizer = config.scheduler.optimizer
            base = self.log_key_prefix + (config.name if config.name is not None else f"lr-{type(optimizer).__name__}")
            result.append((self._group_names(optimizer, base, type_counts, count=config.name is None), optimizer,
                           config))
            seen.append(optimizer)
        for optimizer in trainer.optimizers:
            if any(optimizer is s for s in seen):
                continue
            base = f"{self.log_key_prefix}lr-{type(optimizer).__name__}"
            result.append((self._group_names(optimizer, base, type_counts, count=True), optimizer, None))
            seen.append(optimizer)
        return result

    @staticmethod
    def _group_names(optimizer, base: str, type_counts: Dict[type, int], count: bool) -> List[str]:
        if count:
            type_counts[type(optimizer)] += 1
            if type_counts[type(optimizer)] > 1:
                base = f"{base}-{type_counts[type(optimizer)] - 1}"
        groups = optimizer.param_groups
        group_names = [group.get("name", f"pg{i}") for i, group in enumerate(groups, start=1)]
        duplicates = sorted({n for n in group_names if group_names.count(n) > 1})
        if duplicates:
            raise MisconfigurationException(
                "A single `Optimizer` cannot have multiple parameter groups with identical `name` values: the"
                f" optimizer logged as '{base}' has several named {duplicates}; give each parameter group a distinct"
                " 'name'."
            )
        if len(groups) > 1:
            return [f"{base}/{name}" for name in group_names]
        return [f"{base}/{groups[0]['name']}" if groups[0].get("name") else base]


def _logs_this_step(trainer) -> bool:
    """Whether the Trainer writes step metrics after this batch (Lightning's `log_every_n_steps` rule)."""
    every = trainer.log_every_n_steps
    if not every:
        return False
    return (trainer.fit_loop.batches_stepped + 1) % every == 0 or trainer.should_stop
