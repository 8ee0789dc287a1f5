"""Optimizers and schedulers: the `configure_optimizers` return forms, scheduler configs, and the optimizer wrapper
that routes `step()` through the loop."""
import inspect
from dataclasses import fields
from typing import Any, List, Optional, Tuple

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_warn
from volt.utilities.types import LRSchedulerConfig

_FORMS = (
    "`configure_optimizers` must return one of:\n"
    "  * an optimizer\n"
    "  * a list or tuple of optimizers\n"
    "  * two lists: ([optimizers], [lr schedulers or scheduler dicts])\n"
    '  * a dict: {"optimizer": optimizer, "lr_scheduler": scheduler or scheduler dict, "monitor": "metric"}\n'
    "  * a list or tuple of such dicts\n"
    "  * None, to train without an optimizer"
)


def _is_optimizer(obj: Any) -> bool:
    return isinstance(obj, Optimizer) or (hasattr(obj, "step") and hasattr(obj, "zero_grad")
                                          and hasattr(obj, "param_groups"))


def configure_optimizers(hooks) -> Tuple[List[Optimizer], List[LRSchedulerConfig]]:
    """Call the module's `configure_optimizers` (through the hook dispatcher), normalise every accepted form, and
    check the result against the module's optimization mode."""
    module = hooks.module
    optimizers, configs = _normalise(hooks.call_module("configure_optimizers"), module)
    if "optimizer_idx" in inspect.signature(module.training_step).parameters:  # the 1.x multi-optimizer form
        raise RuntimeError(
            "Training with multiple optimizers is only supported with manual optimization. Remove the "
            "`optimizer_idx` argument from `training_step`, set `self.automatic_optimization = False` in "
            "`__init__` and step each optimizer yourself: `opt_g, opt_d = self.optimizers()`."
        )
    if module.automatic_optimization and len(optimizers) > 1:
        raise RuntimeError(
            "Training with multiple optimizers is only supported with manual optimization. Set "
            "`self.automatic_optimization = False` in `__init__`, then call `opt.step()` for each optimizer "
            "yourself in `training_step`."
        )
    for config in configs:
        owner = getattr(config.scheduler, "optimizer", None)  # a custom scheduler may not say
        if owner is not None and not any(owner is optimizer for optimizer in optimizers):
            raise MisconfigurationException(
                "Some schedulers are attached with an optimizer that wasn't returned from `configure_optimizers`: "
                f"`{type(config.scheduler).__name__}` steps an optimizer that is not trained. Build each scheduler "
                "on an optimizer you return."
            )
        if module.automatic_optimization and not _is_torch_scheduler(config.scheduler) and (
                "lr_scheduler_step" not in hooks.module_overrides):
            raise MisconfigurationException(
                f"The provided lr scheduler `{type(config.scheduler).__name__}` doesn't follow PyTorch's "
                "LRScheduler API: override `LightningModule.lr_scheduler_step` with your own logic to step it."
            )
    return optimizers, configs


def _is_torch_scheduler(scheduler: Any) -> bool:
    return isinstance(scheduler, (torch.optim.lr_scheduler.LRScheduler, ReduceLROnPlateau))


def _normalise(conf: Any, module) -> Tuple[List[Optimizer], List[LRSchedulerConfig]]:
    if conf is None:
        rank_zero_warn("`configure_optimizers` returned `None`, this fit will run with no optimizer")
        return [], []
    monitor = None
    if _is_optimizer(conf):
        optimizers, schedulers = [conf], []
    elif (isinstance(conf, (list, tuple)) and len(conf) == 2 and isinstance(conf[0], (list, tuple))
          and all(_is_optimizer(o) for o in conf[0])):
        optimizers = list(conf[0])
        schedulers = list(conf[1]) if isinstance(conf[1], (list, tuple)) else [conf[1]]
    elif isinstance(conf, dict):
        _check_optimizer_dict(conf)
        optimizers, monitor = [conf["optimizer"]], conf.get("monitor")
        schedulers = [conf["lr_scheduler"]] if conf.get("lr_scheduler") is not None else []
    elif isinstance(conf, (list, tuple)) and conf and all(isinstance(d, dict) for d in conf):
        for d in conf:
            _check_optimizer_dict(d)
        optimizers = [d["optimizer"] for d in conf]
        schedulers = []
        for d in conf:
            if d.get("lr_scheduler") is not None:
                sched = d["lr_scheduler"]
                sched = dict(sched) if isinstance(sched, dict) else {"scheduler": sched}
                if d.get("monitor") is not None:
                    sched.setdefault("monitor", d["monitor"])
                schedulers.append(sched)
    elif isinstance(conf, (list, tuple)) and conf and all(_is_optimizer(o) for o in conf):
        optimizers, schedulers = list(conf), []
    else:
        raise MisconfigurationException(f"Unknown configuration for model optimizers: got {_describe(conf)}.\n{_FORMS}")
    configs = [_scheduler_config(s, monitor, module.automatic_optimization) for s in schedulers]
    return optimizers, configs


def _describe(conf: Any) -> str:
    if isinstance(conf, (list, tuple)):
        return f"{type(conf).__name__} of {[type(c).__name__ for c in conf]}"
    return type(conf).__name__


def _check_optimizer_dict(d: dict) -> None:
    if "optimizer" not in d:
        raise MisconfigurationException(f"The dict returned by `configure_optimizers` has no 'optimizer' key.\n{_FORMS}")
    extra = set(d) - {"optimizer", "lr_scheduler", "monitor"}
    if extra:  # as Lightning: a warning, the keys are ignored
        rank_zero_warn(f"Found unsupported keys in the optimizer configuration: {extra}; they are ignored (the dict "
                       "returned by `configure_optimizers` takes 'optimizer', 'lr_scheduler' and 'monitor').",
                       category=RuntimeWarning)


def _scheduler_config(sched: Any, monitor: Optional[str], automatic: bool) -> LRSchedulerConfig:
    if isinstance(sched, dict):
        allowed = {f.name for f in fields(LRSchedulerConfig)}
        extra = set(sched) - allowed
        if extra:
            keys = "{" + ", ".join(repr(key) for key in sorted(extra)) + "}"
            rank_zero_warn(f"Found unsupported keys in the lr scheduler dict: {keys}; they are ignored.",
                           category=RuntimeWarning)
            sched = {k: v for k, v in sched.items() if k in allowed}
        if "scheduler" not in sched:
            raise MisconfigurationException(
                'The lr scheduler dict must have the key "scheduler" with its item being an lr scheduler.'
            )
        if sched.get("interval", "epoch") not in ("step", "epoch"):
            raise MisconfigurationException(
                f'The "interval" key in lr scheduler dict must be "step" or "epoch", not {sched["interval"]!r}.'
            )
        ignored = [key for key in ("reduce_on_plateau", "monitor", "strict") if key in sched] if not automatic else []
        if ignored:  # as Lightning: manual optimization steps its schedulers itself
            rank_zero_warn(f"The lr scheduler dict contains the key(s) {ignored}, but the keys will be ignored. You "
                           "need to call `lr_scheduler.step()` manually in manual optimization.",
                           category=RuntimeWarning)
            sched = {key: value for key, value in sched.items() if key not in ignored}
        config = LRSchedulerConfig(**sched)
        config.reduce_on_plateau = sched.get("reduce_on_plateau", isinstance(config.scheduler, ReduceLROnPlateau))
        if config.monitor is None:
            config.monitor = monitor
    else:
        config = LRSchedulerConfig(sched, reduce_on_plateau=isinstance(sched, ReduceLROnPlateau), monitor=monitor)
    if automatic and config.reduce_on_plateau and config.monitor is None:
        raise MisconfigurationException(
            "`configure_optimizers` must include a monitor when a `ReduceLROnPlateau` scheduler is used, e.g. "
            '{"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}'
        )
    if not isinstance(config.frequency, int) or config.frequency < 1:
        raise MisconfigurationException(f"The lr scheduler 'frequency' must be a positive int, not {config.frequency!r}.")
    if isinstance(config.scheduler, torch.optim.lr_scheduler.OneCycleLR) and config.interval == "epoch":
        rank_zero_warn("A `OneCycleLR` scheduler is using 'interval': 'epoch'. Are you sure you didn't mean "
                       "'interval': 'step'?",
                       category=RuntimeWarning)
    return config


class LightningOptimizer:
    """Wraps a torch optimizer so that `step()` runs volt's precision logic and the optimizer-step hooks.

    Passed to `optimizer_step` and returned by `self.optimizers()`; everything else forwards to the optimizer.
    """

    def __init__(self, optimizer: Optimizer, trainer=None) -> None:
        self._optimizer = optimizer
        self._trainer = trainer
        # subclass the optimizer's class too, so `isinstance(opt, torch.optim.SGD)` holds as in Lightning, and
        # bind its methods to the real optimizer (instance attributes win over the inherited functions)
        self.__class__ = type(f"Lightning{type(optimizer).__name__}", (LightningOptimizer, type(optimizer)), {})
        own = set(vars(LightningOptimizer))
        for name in dir(type(optimizer)):
            if not name.startswith("__") and name not in own and callable(getattr(type(optimizer), name, None)):
                self.__dict__[name] = getattr(optimizer, name)

    @property
    def optimizer(self) -> Optimizer:
        return self._optimizer

    def step(self, closure=None, **kwargs: Any):
        """Run `closure` (training_step, zero_grad, backward), the before-step hooks and clipping, then step; a
        wrapper made outside a Trainer (`LightningOptimizer(optimizer)`) steps the optimizer only."""
        if self._trainer is None:
            return self._optimizer.step(closure, **kwargs) if closure is not None else self._optimizer.step(**kwargs)
        return self._trainer.fit_loop.optimizer_step(self._optimizer, closure, **kwargs)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._optimizer, name)

    def __reduce__(self):
        # The wrapper is the live link between an optimizer and its Trainer: a copy or a pickle is of the optimizer.
        return _unwrapped, (self._optimizer,)

    def __repr__(self) -> str:
        return f"Lightning{self._optimizer!r}"  # "LightningSGD (...)", as Lightning


def _unwrapped(optimizer: Optimizer) -> Optimizer:
    return optimizer
