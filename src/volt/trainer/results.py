"""Storage for `self.log` (per-step values, per-epoch accumulators, the Trainer's three metric dicts) and the
writes to the loggers.

Values stay detached tensors on their device. Nothing here calls `.item()`: a logger write (`log_to_loggers`, through
trainer/logger_writes.py) or a progress bar redraw reads a value when it actually writes or prints it, from a copy
to the host that it does not wait for, so logging adds no host sync to a training step.
"""
import math
from typing import Any, Dict, List, Optional, Tuple

import torch

from volt.trainer.logger_writes import LoggerWrites
from volt.utilities.apply_func import first_tensor
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_warn

# Where `self.log` is allowed, with its defaults: (default on_step, default on_epoch, step allowed, epoch allowed).
_PER_STEP = (True, False, True, True)
_PER_EVAL_BATCH = (False, True, True, True)
_EPOCH_ONLY = (False, True, False, True)
LOG_OPTIONS: Dict[str, Tuple[bool, bool, bool, bool]] = {
    **dict.fromkeys(
        ["training_step", "on_train_batch_start", "on_train_batch_end", "on_before_backward", "backward",
         "on_after_backward", "on_before_optimizer_step", "optimizer_step", "configure_gradient_clipping",
         "clip_gradients", "on_before_zero_grad", "optimizer_zero_grad"], _PER_STEP),
    **dict.fromkeys(
        ["validation_step", "test_step", "on_validation_batch_start", "on_validation_batch_end",
         "on_test_batch_start", "on_test_batch_end"], _PER_EVAL_BATCH),
    **dict.fromkeys(
        ["on_train_start", "on_train_epoch_start", "on_train_epoch_end", "on_validation_start",
         "on_validation_epoch_start", "on_validation_epoch_end", "on_test_start", "on_test_epoch_start",
         "on_test_epoch_end", "training_epoch_end", "validation_epoch_end", "test_epoch_end"], _EPOCH_ONLY),
}

_REDUCE_FX = {"mean": "mean", "avg": "mean", "sum": "sum", "max": "max", "min": "min"}
# torch's reductions, and Python's builtins as Lightning accepts them
_TORCH_REDUCE_FX = {torch.mean: "mean", torch.sum: "sum", torch.max: "max", torch.min: "min", sum: "sum", max: "max",
                    min: "min"}
_KEPT_DTYPES = (torch.float32, torch.float64)  # logged values of other dtypes are converted to `_float_dtype()`
_COMPACT_EVERY = 1024  # fold pending epoch values into one tensor after this many, so memory stays flat


class _Metric:
    """One logged name in one loop run: its options, its last step value and its epoch accumulator."""

    __slots__ = ("name", "fx", "on_step", "on_epoch", "prog_bar", "logger", "reduce", "sync_dist", "sync_group",
                 "step_key", "epoch_key", "last", "values", "sizes", "folded", "filler_value", "metric_obj",
                 "updated", "dataloader_idx", "arguments")

    def __init__(self, name, fx, on_step, on_epoch, prog_bar, logger, reduce, sync_dist, sync_group, suffix=""):
        self.name, self.fx = name + suffix, fx
        self.on_step, self.on_epoch = on_step, on_epoch
        self.prog_bar, self.logger, self.reduce = prog_bar, logger, reduce
        self.sync_dist, self.sync_group = sync_dist, sync_group
        forked = on_step and on_epoch  # as Lightning: `loss_step/dataloader_idx_0`, the dataloader suffix last
        self.step_key = f"{name}_step{suffix}" if forked else self.name
        self.epoch_key = f"{name}_epoch{suffix}" if forked else self.name
        self.last: Optional[torch.Tensor] = None
        self.values: List[torch.Tensor] = []
        self.sizes: List[int] = []
        self.folded: Optional[List[torch.Tensor]] = None  # [reduced value, weight] of the batches compacted so far
        self.filler_value: Optional[torch.Tensor] = None  # logged on a filler batch (eval_loop): not accumulated
        self.metric_obj = None  # a torchmetrics.Metric logged directly: computed at epoch end
        self.updated = False
        self.dataloader_idx: Optional[int] = None  # the eval dataloader it was logged for; None: all of them
        self.arguments: Optional[tuple] = None  # the `self.log` arguments as passed, to see a call that differs

    def accumulate(self, value: torch.Tensor, batch_size: int) -> None:
        self.values.append(value)
        self.sizes.append(batch_size)
        if len(self.values) >= _COMPACT_EVERY:
            # the weight stays on the host, so reading it back never waits for the device
            self.folded = [self._local_parts()[0], torch.tensor(self._host_weight(), dtype=torch.float64)]
            self.values, self.sizes = [], []

    def _host_weight(self) -> float:
        """The summed batch sizes of this epoch's values, folded ones included (kept on the host)."""
        return float(sum(self.sizes)) + (0.0 if self.folded is None else self.folded[1].item())

    def _reduce_local(self) -> torch.Tensor:
        """The epoch value over this process's batches (for "mean": the batch-size-weighted mean)."""
        total, weight = self._local_parts()
        return total / weight if self.reduce == "mean" else total

    def has_values(self) -> bool:
        return bool(self.values) or self.folded is not None

    def _local_parts(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(this process's reduced values, their weight); for "mean" the total is the size-weighted sum. Values
        are float32 or float64, and sums add one batch at a time in logging order, as Lightning accumulates them:
        the same epoch value to the last bit."""
        parts = [] if self.folded is None else [self.folded[0].view(1)]  # the batches compacted earlier first
        weight = self._host_weight()
        if self.values:
            stacked = torch.stack([v if v.dtype in (torch.float32, torch.float64) else v.to(torch.get_default_dtype())
                                   for v in self.values])
            if self.reduce == "mean":
                stacked = stacked * torch.tensor(self.sizes, dtype=stacked.dtype).to(stacked.device, non_blocking=True)
            parts.append(stacked)
        terms = torch.cat(parts)
        # made on the host and copied without waiting (this also runs every _COMPACT_EVERY training steps)
        weight = torch.tensor(weight, dtype=terms.dtype).to(terms.device, non_blocking=True)
        if self.reduce in ("mean", "sum"):
            return _sequential_sum(terms), weight
        return (terms.max() if self.reduce == "max" else terms.min()), weight

    def epoch_value(self, strategy) -> torch.Tensor:
        if self.metric_obj is not None:
            value = self.metric_obj.compute()
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"The `.compute()` return of the metric logged as {self.name!r} must be a tensor, "
                                 f"got {type(value).__name__}: log the tensor it holds, or make `compute` return one.")
            return value
        if self.sync_dist and strategy is not None and strategy.world_size > 1:
            return self._reduce_synced(strategy)
        if not self.has_values():  # a rank that ran filler batches only shows their values in its unsynced metrics
            return self.last if self.filler_value is None else self.filler_value
        return self._reduce_local()

    def _reduce_synced(self, strategy) -> Optional[torch.Tensor]:
        """The epoch value over all ranks. A rank without values of its own (filler batches only) still takes
        part, with no weight, so that every rank runs the same collectives."""
        if self.has_values():
            total, weight = self._local_parts()
        elif self.filler_value is not None:
            total, weight = torch.zeros_like(self.filler_value), self.filler_value.new_zeros(())
        else:
            return self.last
        return reduce_weighted(strategy, total, weight, self.reduce, self.sync_group)


def reduce_weighted(strategy, total: torch.Tensor, weight: torch.Tensor, reduce: str, group: Any) -> torch.Tensor:
    """Reduce `total` over ranks, ignoring ranks whose `weight` is zero. For "mean", `total` is a weighted sum and
    the result is the sum of totals over the sum of weights; one collective either way."""
    total = total if total.is_floating_point() else total.to(torch.get_default_dtype())
    weight = weight.to(total.dtype)
    if reduce == "mean":
        summed = strategy.reduce(torch.stack([total, weight]), reduce_op="sum", group=group)
        return summed[0] / summed[1]
    if not weight:
        total = total.new_tensor({"sum": 0.0, "max": -math.inf, "min": math.inf}[reduce])
    return strategy.reduce(total, reduce_op=reduce, group=group)


class _LoopResults:
    """The metrics logged during one run of a loop (a train epoch, or one validation/test run)."""

    def __init__(self, training: bool):
        self.training = training
        self.metrics: Dict[str, _Metric] = {}
        self.pending: Dict[str, torch.Tensor] = {}  # step values waiting for the next logger write

    def reset(self) -> None:
        for metric in self.metrics.values():
            if metric.metric_obj is not None:
                metric.metric_obj.reset()
        self.metrics = {}


class Results:
    """The trainer's `self.log` sink. `active` is the results of the loop that is running now."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.train = _LoopResults(training=True)
        self.eval = _LoopResults(training=False)
        self.active = self.train
        self.callback_metrics: Dict[str, torch.Tensor] = {}
        self.logged_metrics: Dict[str, torch.Tensor] = {}
        self.progress_bar_metrics: Dict[str, torch.Tensor] = {}
        self.batch = None
        self.batch_size: Optional[int] = None
        self.dataloader_idx: int = 0
        self.num_dataloaders: int = 1
        self.filler = False  # an evaluation batch run only to keep this rank in step with the others (eval_loop)
        self._detached: Tuple[Any, Any] = (None, None)  # the last scalar tensor `self.log` detached, and its copy
        self._logger_writes = LoggerWrites()  # logged rows whose values are still on their way from the device

    # ------------------------------------------------------------------ called by the loops
    def on_batch_start(self, batch, dataloader_idx: int = 0) -> None:
        self.batch = batch
        self.batch_size = None
        self.dataloader_idx = dataloader_idx
        self._detached = (None, None)

    def detach(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor.detach()`; when this batch logged this very tensor (a step usually logs the loss it returns),
        the copy `self.log` detached: one tensor less to make per step."""
        source, detached = self._detached
        self._detached = (None, None)  # hold the step's graph no longer than the loop does
        return detached if source is tensor else tensor.detach()

    def _current_batch_size(self) -> int:
        if self.batch_size is None:
            tensor = first_tensor(self.batch)
            self.batch_size = int(tensor.size(0)) if tensor is not None and tensor.dim() > 0 else 1
        return self.batch_size

    # ------------------------------------------------------------------ self.log
    def log(self, fx: Optional[str], name: str, value: Any, prog_bar: bool, logger: bool,
            on_step: Optional[bool], on_epoch: Optional[bool], reduce_fx: Any, enable_graph: bool,
            sync_dist: bool, sync_dist_group: Any, add_dataloader_idx: bool, batch_size: Optional[int],
            rank_zero_only: bool, metric_attribute: Optional[str]) -> None:
        """`LightningModule.log`'s work (its arguments in its order: passed by position, as keyword matching costs
        more than the rest of a step's logging). `logger` is as given: None means True."""
        active = self.active
        key, suffix = name, ""
        if not active.training and add_dataloader_idx and self.num_dataloaders > 1 and fx not in _EPOCH_HOOKS:
            suffix = f"/dataloader_idx_{self.dataloader_idx}"
            key = name + suffix
        metric = active.metrics.get(key)
        if metric is None or metric.fx != fx:
            if add_dataloader_idx and "/dataloader_idx_" in name:
                raise MisconfigurationException(
                    f"You called `self.log` with the key `{name}`, but it should not contain information about "
                    "`dataloader_idx` when `add_dataloader_idx=True`: the suffix is added for you when several "
                    "dataloaders run (pass `add_dataloader_idx=False` to name it yourself).")
            metric = self._new_metric(fx, name, suffix, value, prog_bar, logger, on_step, on_epoch, reduce_fx,
                                      sync_dist, sync_dist_group, metric_attribute)
            if not active.training and fx not in _EPOCH_HOOKS:
                metric.dataloader_idx = self.dataloader_idx
            metric.arguments = (on_step, on_epoch, prog_bar, logger, reduce_fx, sync_dist)
            active.metrics[key] = metric
        elif metric.arguments != (on_step, on_epoch, prog_bar, logger, reduce_fx, sync_dist):
            self._check_same_options(metric, on_step, on_epoch, prog_bar, logger, reduce_fx, sync_dist)

        if metric.metric_obj is not None:
            value = getattr(metric.metric_obj, "_forward_cache", None)
            if value is None:
                metric.updated = True
                return
        elif isinstance(value, torch.Tensor):
            if value.dim():  # a scalar (the usual loss) needs neither the size check nor the squeeze
                if value.numel() != 1:
                    raise ValueError(
                        f"`self.log({name}, ...)` was called, but the tensor must have a single element (its shape "
                        f"is {tuple(value.shape)}): log one number (e.g. `value.mean()`), or each element under its "
                        "own name."
                    )
                value = value.squeeze() if enable_graph else value.detach().squeeze()
            elif not enable_graph:
                detached = value.detach()
                self._detached = (value, detached)
                value = detached
            if value.dtype not in _KEPT_DTYPES:  # as Lightning: integer and half values are kept as float32/64
                value = value.to(_float_dtype())
        else:
            value = _number_to_tensor(name, value)

        metric.updated = True
        if metric.on_step:
            if metric.sync_dist and self.trainer.world_size > 1:
                value = self._sync_step_value(metric, value)
            metric.last = value
            key_step = metric.step_key
            if active.training:
                self.callback_metrics[key_step] = value
                self.callback_metrics[metric.name] = value
            if metric.logger:
                active.pending[key_step] = value
                self.logged_metrics[key_step] = value  # visible at once (e.g. in on_train_batch_end), as in Lightning
            if metric.prog_bar:
                self.progress_bar_metrics[key_step] = value
        if metric.on_epoch:
            if fx in _EPOCH_HOOKS:  # logged once per epoch: the value is the epoch value
                metric.values, metric.sizes, metric.folded = [value], [1], None
                self._publish_epoch(metric, value)
            elif self.filler:
                metric.filler_value = value
            else:
                metric.accumulate(value, batch_size if batch_size is not None else self._current_batch_size())

    def _sync_step_value(self, metric: _Metric, value: torch.Tensor) -> torch.Tensor:
        """A step value reduced over ranks (a plain mean over ranks for "mean"); in evaluation a filler batch
        takes part with no weight."""
        strategy = self.trainer.strategy
        if self.active.training:
            return strategy.reduce(value, reduce_op=metric.reduce, group=metric.sync_group)
        weight = value.new_tensor(0.0 if self.filler else 1.0, dtype=torch.get_default_dtype())
        return reduce_weighted(strategy, value * weight if metric.reduce == "mean" else value, weight,
                               metric.reduce, metric.sync_group)

    def _check_same_options(self, metric: _Metric, on_step, on_epoch, prog_bar, logger, reduce_fx, sync_dist) -> None:
        """A name logged again in the same hook must keep its options (once the defaults are filled in): its step
        and epoch values are one series. Lightning raises too."""
        default_step, default_epoch, _, _ = LOG_OPTIONS[metric.fx]
        given = dict(on_step=default_step if on_step is None else bool(on_step),
                     on_epoch=default_epoch if on_epoch is None else bool(on_epoch), prog_bar=prog_bar, logger=logger,
                     reduce_fx=_parse_reduce_fx(reduce_fx, metric.name), sync_dist=sync_dist)
        given["logger"] = True if logger is None else logger
        first = dict(on_step=metric.on_step, on_epoch=metric.on_epoch, prog_bar=metric.prog_bar, logger=metric.logger,
                     reduce_fx=metric.reduce, sync_dist=metric.sync_dist)
        changed = [name for name in given if given[name] != first[name]]
        if changed:
            raise MisconfigurationException(
                f"You called `self.log({metric.name}, ...)` twice in `{metric.fx}` with different arguments: "
                + ", ".join(f"{name}={first[name]!r} first, then {name}={given[name]!r}" for name in changed)
                + ". Log each variant under its own name, or pass the same arguments each time."
            )
        metric.arguments = (on_step, on_epoch, prog_bar, logger, reduce_fx, sync_dist)

    def _new_metric(self, fx, name, suffix, value, prog_bar, logger, on_step, on_epoch, reduce_fx, sync_dist,
                    sync_group, metric_attribute):
        key = name + suffix
        if fx is None:
            raise MisconfigurationException(
                f"`self.log({key!r}, ...)` was called outside of a Trainer hook; log from a step or hook."
            )
        options = LOG_OPTIONS.get(fx)
        if self.trainer.state.fn == "predict":
            raise MisconfigurationException(
                f"You are trying to `self.log({key!r}, ...)` in `{fx}`, but the loop's result collection is not "
                "registered yet: `predict` hooks do not support logging. Return the values from `predict_step`, or "
                "write them with a prediction writer callback."
            )
        if options is None:
            raise MisconfigurationException(
                f"You can't `self.log()` inside `{fx}`. Log from a training/validation/test step or batch/epoch "
                "hook instead, or write to the logger directly with `self.logger.experiment`."
            )
        default_step, default_epoch, step_allowed, epoch_allowed = options
        on_step = default_step if on_step is None else bool(on_step)
        on_epoch = default_epoch if on_epoch is None else bool(on_epoch)
        if on_step and not step_allowed:
            raise MisconfigurationException(
                f"You can't `self.log({key!r}, ..., on_step=True)` in `{fx}`: it runs once per epoch. "
                "Use on_step=False (the default there)."
            )
        if not on_epoch and not epoch_allowed or (not on_step and not on_epoch and not step_allowed):
            raise MisconfigurationException(f"`self.log({key!r}, ...)` in `{fx}` needs on_epoch=True.")
        if not on_step and not on_epoch:
            raise MisconfigurationException(
                f"`self.log({key!r}, ..., on_step=False, on_epoch=False)` is not useful: it logs nothing; set one of "
                "them to True."
            )
        if logger and not self.trainer.loggers:
            rank_zero_warn(
                f"You called `self.log({name!r}, ..., logger=True)` but have no logger configured, so it is written"
                " nowhere: pass one, e.g. `Trainer(logger=CSVLogger(...))`, or leave `logger` unset."
            )
        logger = True if logger is None else logger
        reduce = _parse_reduce_fx(reduce_fx, key)
        metric = _Metric(name, fx, on_step, on_epoch, prog_bar, logger, reduce, sync_dist, sync_group, suffix)
        if _is_torchmetric(value):
            if metric_attribute is None:
                self._check_metric_is_attribute(name, value)
            metric.metric_obj = value
        # a name forked into _step/_epoch must not collide with another logged name
        for other in self.active.metrics.values():
            if other.name != key and (other.step_key == metric.epoch_key or other.epoch_key == metric.step_key):
                raise MisconfigurationException(f"`self.log({key!r})` clashes with the logged name {other.name!r}.")
        return metric

    def _check_metric_is_attribute(self, name: str, value: Any) -> None:
        """A logged torchmetrics object must belong to the LightningModule (as Lightning requires, to find its state
        again); checked when the name is first logged in a loop run, never per step."""
        attributes = {id(module): module_name for module_name, module in self.trainer.lightning_module.named_modules()
                      if _is_torchmetric(module)}
        if id(value) in attributes:
            return
        if not attributes:
            raise MisconfigurationException(
                f"`self.log({name}, ...)` was given a `torchmetrics.Metric` that is not an attribute of the "
                "`LightningModule`: fix this by setting an attribute for the metric in your `LightningModule` (e.g. "
                "`self.accuracy = Accuracy(...)` in `__init__`) and logging that object.")
        raise MisconfigurationException(
            f"`self.log({name}, ...)` was given a `torchmetrics.Metric` that is not an attribute of the "
            f"`LightningModule`: log one of its metric attributes, or fix this by calling "
            f"`self.log({name}, ..., metric_attribute=name)` where `name` is one of {list(attributes.values())}.")

    # ------------------------------------------------------------------ epoch ends
    def epoch_end(self, loop: _LoopResults) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """Compute every epoch value of `loop` and publish it to the metric dicts.

        Returns all epoch values and the subset that goes to loggers.
        """
        strategy = self.trainer.strategy
        values: Dict[str, torch.Tensor] = {}
        to_log: Dict[str, torch.Tensor] = {}
        for metric in loop.metrics.values():
            if not metric.on_epoch or not metric.updated:
                continue
            value = metric.epoch_value(strategy)
            if value is None:
                continue
            self._publish_epoch(metric, value)
            values[metric.epoch_key] = value
            if metric.logger:
                to_log[metric.epoch_key] = value
        return values, to_log

    def _publish_epoch(self, metric: _Metric, value: torch.Tensor) -> None:
        self.callback_metrics[metric.epoch_key] = value
        self.callback_metrics[metric.name] = value
        if metric.logger:
            self.logged_metrics[metric.epoch_key] = value
        if metric.prog_bar:
            self.progress_bar_metrics[metric.epoch_key] = value

    def take_step_logs(self, loop: Optional[_LoopResults] = None) -> Dict[str, torch.Tensor]:
        """The step values `loop` (default: training) logged since the last logger write; they also become
        `logged_metrics`. Training and evaluation keep separate queues, so a validation run inside an
        accumulation window never writes the window's training values."""
        loop = loop or self.train
        logs, loop.pending = loop.pending, {}
        self.logged_metrics.update(logs)
        return logs

    # ------------------------------------------------------------------ writes to the loggers
    def log_to_loggers(self, metrics: Dict[str, torch.Tensor], step: Optional[int] = None) -> None:
        """Send training step or epoch metrics to every logger at `step` (default: the optimizer steps done), with
        the epoch added; a logged "step" value is the x position instead, as in Lightning. Each row is written once
        its values are on the host, without waiting for the device (trainer/logger_writes.py);
        `flush_logger_writes` writes what is still on its way."""
        trainer = self.trainer
        if not metrics or not trainer.loggers:
            return
        self.logged_metrics.update(metrics)
        if step is None:
            stepped = trainer.fit_loop.state.batches_stepped
            step = max(stepped - 1, 0) if trainer.state.fn == "fit" else stepped
        self._logger_writes.add(trainer.loggers, metrics, step, trainer.current_epoch)

    def flush_logger_writes(self) -> None:
        """Write every logged row to the loggers now, waiting for the device if it must (before a checkpoint is
        assembled, and when a run ends)."""
        self._logger_writes.flush(self.trainer.loggers)

    def log_eval_step(self, step: int) -> None:
        """After an evaluation batch: its step values go to the loggers at `step`, the batch's position in its
        dataloader, as they are (no epoch added), and never during the sanity check."""
        if self.eval.pending and not self.trainer.sanity_checking and self.trainer.loggers:
            self._logger_writes.add(self.trainer.loggers, self.take_step_logs(self.eval), step, epoch=None)
        else:
            self.eval.pending = {}

    def log_hyperparams(self, model, datamodule) -> None:
        """The module's and datamodule's `save_hyperparameters` values, and the graph, to every logger (rank 0)."""
        trainer = self.trainer
        if not trainer.loggers or not trainer.is_global_zero:
            return
        hparams: Dict[str, Any] = {}
        if model._log_hyperparams:
            hparams.update(model.hparams_initial)
        if datamodule is not None and datamodule._log_hyperparams:
            dm_hparams = datamodule.hparams_initial
            clash = [k for k in dm_hparams
                     if k in hparams and k != "_class_path" and _differ(hparams[k], dm_hparams[k])]
            if clash:
                raise RuntimeError(
                    f"Error while merging hparams: the keys {clash} are present in both the LightningModule's "
                    "and LightningDataModule's hparams but have different values. Rename one of them, or give both "
                    "the same value."
                )
            hparams.update(dm_hparams)
        hparams.pop("_class_path", None)  # LightningCLI's record of which class it built, for load_from_checkpoint
        for logger in trainer.loggers:
            if hparams:
                logger.log_hyperparams(hparams)
            logger.log_graph(model)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        """What a checkpoint keeps of `self.log`: the training epoch's accumulators (so epoch means over a resumed
        epoch include the batches before the checkpoint) and the metric dicts (which monitors read).

        A logged torchmetrics object is not plain data: its epoch value restarts on resume.
        """
        train = {}
        for key, metric in self.train.metrics.items():
            if metric.metric_obj is None:
                train[key] = {slot: getattr(metric, slot) for slot in _Metric.__slots__ if slot not in _NOT_SAVED}
                train[key]["values"] = _stacked(metric.values)
        return {"train": train, "callback_metrics": dict(self.callback_metrics),
                "logged_metrics": dict(self.logged_metrics), "progress_bar_metrics": dict(self.progress_bar_metrics)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for key, saved in state["train"].items():
            metric = _Metric.__new__(_Metric)
            for slot in _Metric.__slots__:
                setattr(metric, slot, saved.get(slot))
            if isinstance(metric.values, torch.Tensor):
                metric.values = list(metric.values.unbind(0))
            self.train.metrics[key] = metric
        self.callback_metrics.update(state["callback_metrics"])
        self.logged_metrics.update(state["logged_metrics"])
        self.progress_bar_metrics.update(state["progress_bar_metrics"])

    def reset_metric_dicts(self) -> None:
        self.callback_metrics = {}
        self.logged_metrics = {}
        self.progress_bar_metrics = {}
        self.train.pending, self.eval.pending = {}, {}


# not plain data: a process group, a torchmetrics object, the `self.log` arguments (reduce_fx may be a function)
_NOT_SAVED = ("sync_group", "metric_obj", "arguments")


def _stacked(values: List[Any]) -> Any:
    """An epoch's accumulated step values as one tensor when they share dtype and device: one storage of 4 bytes
    a value in the checkpoint instead of a separate tensor (~250 bytes) each. Unstacked on load, bit for bit."""
    if values and all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in values) and \
            len({(v.dtype, v.device) for v in values}) == 1:
        return torch.stack([v.detach() for v in values])
    return values
_EPOCH_HOOKS = frozenset(fx for fx, options in LOG_OPTIONS.items() if options is _EPOCH_ONLY)


def _sequential_sum(terms: torch.Tensor) -> torch.Tensor:
    """terms[0] + terms[1] + ..., one addition at a time in the terms' precision, as a running sum adds them (as
    Lightning's does): `torch.sum` adds pairwise and would differ in the last bits. The additions stay on the
    terms' device, so the sum never waits for it. Runs at epoch end and every `_COMPACT_EVERY` batches, not per
    step."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _parse_reduce_fx(reduce_fx, name: str) -> str:
    if isinstance(reduce_fx, str) and reduce_fx.lower() in _REDUCE_FX:
        return _REDUCE_FX[reduce_fx.lower()]
    if reduce_fx in _TORCH_REDUCE_FX:
        return _TORCH_REDUCE_FX[reduce_fx]
    raise MisconfigurationException(
        f"`self.log({name!r}, ..., reduce_fx={reduce_fx!r})` cannot reduce: only `self.log(..., "
        "reduce_fx={min,max,mean,sum})` are supported (as strings or torch.min/max/mean/sum); for another reduction, "
        "log a `torchmetrics.Metric` instead."
    )


def _float_dtype() -> torch.dtype:
    """The dtype logged values are kept in: torch's default, but at least float32 (as Lightning)."""
    dtype = torch.get_default_dtype()
    return dtype if dtype in _KEPT_DTYPES else torch.float32


def _number_to_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            import numpy as np

            if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.size == 1):
                return torch.tensor(float(value))
        except ImportError:  # pragma: no cover
            pass
        raise ValueError(
            f"`self.log({name}, {value})` was called, but `{type(value).__name__}` values cannot be logged: log a "
            "number, a one-element tensor or a torchmetrics Metric (for a dict of values use `self.log_dict`)."
        )
    return torch.tensor(float(value))


def _is_torchmetric(value: Any) -> bool:
    return hasattr(value, "compute") and hasattr(value, "reset") and hasattr(value, "update") and not isinstance(
        value, torch.Tensor)


def _differ(a: Any, b: Any) -> bool:
    """Whether two hyperparameters of one name differ, as Lightning judges it: another type, another tensor object,
    or unequal."""
    if type(a) is not type(b):
        return True
    if isinstance(a, torch.Tensor):
        return a is not b
    try:
        return bool(a != b)
    except (TypeError, ValueError, RuntimeError):  # no single truth value (an array): the same object or not
        return a is not b
