"""LightningModule: a torch.nn.Module that also holds the steps, optimizers and hooks of a training run.

Every hook has Lightning's name, signature and default. The Trainer calls a module hook only when the user's
class (or instance) overrides it, except the hooks whose default does the work, such as `optimizer_step` and
`on_validation_model_eval` (see `volt/trainer/hooks.py`).
"""
import copy
import inspect
import logging
import os
import sys
from argparse import Namespace
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, BinaryIO, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from volt.utilities.apply_func import move_data_to_device
from volt.utilities.exceptions import dataloader_not_implemented
from volt.utilities.grads import clip_grads
from volt.utilities.parsing import AttributeDict
from volt.utilities.rank_zero import rank_zero_warn
from volt.utilities.tracing import is_tracing_module, tracing_module

log = logging.getLogger("volt")

# (class, hyperparameters) while `given_hyperparameters` is active.
_given_hparams: ContextVar[Optional[tuple]] = ContextVar("volt_given_hparams", default=None)


@contextmanager
def given_hyperparameters(cls: type, hparams: Dict[str, Any]):
    """An object of class `cls` built inside this block saves `hparams` when its `__init__` calls
    `save_hyperparameters()`, instead of the arguments it received (objects of other classes it builds are not
    affected). LightningCLI builds the model and datamodule this way: their checkpoints then hold the config that
    built them (class paths and arguments of injected objects such as an optimizer factory or an activation module,
    not the objects), which `load_from_checkpoint` builds again."""
    token = _given_hparams.set((cls, dict(hparams)))
    try:
        yield
    finally:
        _given_hparams.reset(token)


class HyperparametersMixin:
    """`save_hyperparameters` and `hparams`, shared by LightningModule and LightningDataModule."""

    __jit_unused_properties__ = ["hparams", "hparams_initial"]

    def __init__(self) -> None:
        super().__init__()
        self._log_hyperparams = True  # send them to the loggers (`save_hyperparameters(logger=False)` turns it off)
        self._hparams_name: Optional[str] = None  # "kwargs" when collected from `__init__`'s arguments

    def save_hyperparameters(self, *args: Any, ignore: Optional[Union[Sequence[str], str]] = None,
                             frame=None, logger: bool = True) -> None:
        """Collect `__init__`'s arguments (all, the names given, or a dict/Namespace) into `self.hparams`.

        They are saved in checkpoints, so `load_from_checkpoint` can rebuild the object, and sent to loggers.
        """
        self._log_hyperparams = logger
        if not frame:
            frame = inspect.currentframe().f_back
        given = _given_hparams.get()
        if given is not None and type(self) is given[0]:
            init_args = dict(given[1])
        else:
            init_args = _collect_init_args(frame)
        ignore = [ignore] if isinstance(ignore, str) else list(ignore or [])
        for name, value in init_args.items():
            if isinstance(value, nn.Module) and name not in ignore and (not args or name in args):
                rank_zero_warn(f"Attribute {name!r} is an instance of `nn.Module` and is already saved during "
                               "checkpointing (a checkpoint leaves it out of the hyperparameters). It is recommended "
                               f"to ignore them using `self.save_hyperparameters(ignore=[{name!r}])`.")
        if len(args) == 1 and not isinstance(args[0], str):
            hp = args[0]
            if isinstance(hp, Namespace):
                hp = vars(hp)
            if not isinstance(hp, Mapping):
                raise ValueError(  # ValueError, as Lightning raises
                    f"save_hyperparameters got {type(hp).__name__}: {_PRIMITIVES_REFUSED}pass argument names, a dict, "
                    "a Namespace or nothing."
                )
            # the __init__ argument that holds the container, so load_from_checkpoint passes it back as one
            self._hparams_name = next((name for name, value in init_args.items() if value is args[0]), None)
            if _is_omegaconf(hp) and not hasattr(self, "_hparams"):  # kept as the container it is, as Lightning
                self._hparams, self._hparams_initial = hp, copy.deepcopy(hp)
                return
            hp = dict(hp)
        elif args:
            if not all(isinstance(a, str) for a in args):
                raise ValueError(f"save_hyperparameters{args!r}: {_PRIMITIVES_REFUSED}pass the names of `__init__`'s "
                                 "arguments, or one dict or Namespace.")
            missing = [a for a in args if a not in init_args]
            if missing:
                raise ValueError(
                    f"save_hyperparameters: {missing} are not arguments of {type(self).__name__}.__init__; "
                    f"available: {sorted(init_args)}."
                )
            hp = {name: init_args[name] for name in args}
            self._hparams_name = "kwargs"
        else:
            hp = dict(init_args)
            self._hparams_name = "kwargs"
        self._set_hparams(hp)
        for name in ignore:  # also from what an earlier call (a parent class's `__init__`) saved, as Lightning
            self._hparams.pop(name, None)
        self._hparams_initial = copy.deepcopy(self._hparams)

    def _set_hparams(self, hp: Mapping) -> None:
        """Add to what earlier calls saved (a parent class's `__init__` that saves its own arguments, then the
        subclass's), as Lightning does."""
        if hasattr(self, "_hparams"):
            self._hparams.update(hp)
        else:
            self._hparams = AttributeDict(hp)

    @property
    def hparams(self) -> AttributeDict:
        if not hasattr(self, "_hparams"):
            self._hparams = AttributeDict()
        return self._hparams

    @property
    def hparams_initial(self) -> AttributeDict:
        if not hasattr(self, "_hparams_initial"):
            return AttributeDict()
        return copy.deepcopy(self._hparams_initial)


_PRIMITIVES_REFUSED = "Primitives (<class 'bool'>, <class 'int'>, <class 'float'>, <class 'str'>) are not allowed; "


def _is_omegaconf(value: Any) -> bool:
    return type(value).__module__.partition(".")[0] == "omegaconf"


def _collect_init_args(frame) -> Dict[str, Any]:
    """Arguments of the `__init__` calls on the stack, outermost last wins: as Lightning, the unbroken run of
    `__init__` frames of hyperparameter-holding objects that starts at `frame` (the subclasses' calls and, where
    one such object builds another in its `__init__`, the enclosing one's too)."""
    collected: Dict[str, Any] = {}
    frames = []
    while frame is not None:
        code = frame.f_code
        if (code.co_name == "__init__" and code.co_argcount
                and isinstance(frame.f_locals.get(code.co_varnames[0]), HyperparametersMixin)):
            frames.append(frame)
        elif frames:
            break
        frame = frame.f_back
    for f in frames:  # innermost first; an outer call's value wins, as in Lightning (and keys keep its order)
        code, local_vars = f.f_code, f.f_locals
        count = code.co_argcount + code.co_kwonlyargcount
        collected.update({name: local_vars[name] for name in code.co_varnames[1:count] if name in local_vars})
        if code.co_flags & inspect.CO_VARKEYWORDS:
            kwargs = local_vars.get(code.co_varnames[count + bool(code.co_flags & inspect.CO_VARARGS)])
            collected.update(kwargs if isinstance(kwargs, dict) else {})
    return collected


class _class_only_method(classmethod):
    """A classmethod that refuses to run on an instance: `model.load_from_checkpoint(path)` builds a new object and
    leaves `model` as it was, a mistake that would otherwise pass silently."""

    def __get__(self, instance: Any, owner: Optional[type] = None) -> Any:
        if instance is None:
            return super().__get__(None, owner)
        where = f"{type(instance).__name__}.{self.__func__.__name__}"

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise TypeError(f"The classmethod `{where}` cannot be called on an instance: it returns a new object. "
                            f"Call it on the class and use what it returns: `obj = {where}(...)`.")

        return refuse


class LightningModule(HyperparametersMixin, nn.Module):
    """Your model, its training/validation/test/predict steps, and its optimizers.

    Override `training_step` and `configure_optimizers` at least. See the hook map in `volt/trainer/fit_loop.py`.
    """

    # Where `save_hyperparameters` values go in a checkpoint (Lightning's keys).
    CHECKPOINT_HYPER_PARAMS_KEY = "hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "hparams_type"

    # Properties TorchScript must not compile: they read the Trainer or parameters, not forward's inputs.
    __jit_unused_properties__ = HyperparametersMixin.__jit_unused_properties__ + [
        "trainer", "device", "dtype", "automatic_optimization", "strict_loading", "example_input_array",
        "current_epoch", "global_step", "global_rank", "local_rank", "on_gpu", "logger", "loggers",
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainer = None
        self._automatic_optimization = True
        self._current_fx_name: Optional[str] = None
        self._example_input_array = None
        self._strict_loading: Optional[bool] = None
        self.prepare_data_per_node = True
        self.allow_zero_length_dataloader_with_multiple_devices = False

    # ------------------------------------------------------------------ properties users read
    @property
    def trainer(self):
        if self._trainer is None and not is_tracing_module():
            raise RuntimeError(f"{type(self).__name__} is not attached to a `Trainer`.")
        return self._trainer

    @trainer.setter
    def trainer(self, trainer) -> None:
        for child in self.children():  # a LightningModule inside this one sees the Trainer too, as in Lightning
            if isinstance(child, LightningModule):
                child.trainer = trainer
        self._trainer = trainer

    @property
    def fabric(self) -> None:
        """The Lightning Fabric the module was set up with: always None, as volt has no Fabric (module code that checks
        `self.fabric is not None` takes its Trainer branch, as under Lightning's Trainer)."""
        return None

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.get_default_dtype()

    @property
    def automatic_optimization(self) -> bool:
        return self._automatic_optimization

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self._automatic_optimization = bool(value)

    @property
    def strict_loading(self) -> bool:
        return True if self._strict_loading is None else self._strict_loading

    @strict_loading.setter
    def strict_loading(self, value: bool) -> None:
        self._strict_loading = value

    @property
    def example_input_array(self):
        return self._example_input_array

    @example_input_array.setter
    def example_input_array(self, example) -> None:
        self._example_input_array = example

    @property
    def current_epoch(self) -> int:
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def global_rank(self) -> int:
        return self._trainer.global_rank if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        return self._trainer.local_rank if self._trainer is not None else 0

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def logger(self):
        return self._trainer.logger if self._trainer is not None else None

    @property
    def loggers(self) -> list:
        return self._trainer.loggers if self._trainer is not None else []

    # ------------------------------------------------------------------ the user's steps
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return super().forward(*args, **kwargs)

    def training_step(self, *args: Any, **kwargs: Any):
        """Return the loss (a tensor), a dict with a "loss" key, or None to skip the batch."""
        raise NotImplementedError(
            f"{type(self).__name__} has no `training_step`. Define `training_step(self, batch, batch_idx)` "
            "returning the loss to train with `Trainer.fit`."
        )

    def validation_step(self, *args: Any, **kwargs: Any):
        """Optional. Log validation metrics with `self.log`."""

    def test_step(self, *args: Any, **kwargs: Any):
        """Optional. Log test metrics with `self.log`."""

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        """Defaults to calling the model on the whole batch, as Lightning does."""
        batch = args[0] if args else kwargs.get("batch")
        return self(batch)

    def configure_optimizers(self):
        """Return an optimizer, a list of them, `([optimizers], [schedulers])`, or a dict/list of dicts with
        "optimizer", "lr_scheduler" and "monitor"."""
        rank_zero_warn("`configure_optimizers` must be implemented to be used with the Lightning Trainer")
        return None

    def configure_callbacks(self):
        """Callbacks that belong to this model; they replace Trainer callbacks of the same type."""
        return []

    def configure_model(self) -> None:
        """Create modules here to build them directly on the device or sharded (FSDP)."""

    def configure_sharded_model(self) -> None:
        """1.x name of `configure_model`."""

    # ------------------------------------------------------------------ logging
    def log(self, name: str, value: Any, prog_bar: bool = False, logger: Optional[bool] = None,
            on_step: Optional[bool] = None, on_epoch: Optional[bool] = None, reduce_fx: Any = "mean",
            enable_graph: bool = False, sync_dist: bool = False, sync_dist_group: Any = None,
            add_dataloader_idx: bool = True, batch_size: Optional[int] = None, metric_attribute: Optional[str] = None,
            rank_zero_only: bool = False) -> None:
        """Record a metric. Defaults depend on the hook (training: per step; validation/test: per epoch mean)."""
        trainer = self._trainer
        if trainer is None or trainer.barebones:
            if trainer is not None and trainer.barebones:
                rank_zero_warn(
                    "You are trying to `self.log()` but `Trainer(barebones=True)` is configured. Logging can impact "
                    "raw speed so it is disabled under this setting."
                )
            else:
                rank_zero_warn(
                    "You are trying to `self.log()` but the `self.trainer` reference is not registered on the model "
                    "yet. This is most likely because the model hasn't been passed to the `Trainer`"
                )
            return
        trainer._results.log(self._current_fx_name, name, value, prog_bar, logger, on_step,
                             on_epoch, reduce_fx, enable_graph, sync_dist, sync_dist_group, add_dataloader_idx,
                             batch_size, rank_zero_only, metric_attribute)

    def log_dict(self, dictionary: Mapping[str, Any], prog_bar: bool = False, logger: Optional[bool] = None,
                 on_step: Optional[bool] = None, on_epoch: Optional[bool] = None, reduce_fx: Any = "mean",
                 enable_graph: bool = False, sync_dist: bool = False, sync_dist_group: Any = None,
                 add_dataloader_idx: bool = True, batch_size: Optional[int] = None,
                 rank_zero_only: bool = False) -> None:
        """`self.log` for each item of a dict (or a torchmetrics MetricCollection)."""
        torchmetrics = sys.modules.get("torchmetrics")  # not imported: `dictionary` cannot be a MetricCollection
        if torchmetrics is not None and isinstance(dictionary, torchmetrics.MetricCollection):
            # the metrics of a compute group share one state: pass it by reference rather than copy it at every log
            items = dictionary.items(keep_base=False, copy_state=not dictionary.compute_groups)
        else:
            items = dictionary.items()
        for name, value in items:
            self.log(name, value, prog_bar=prog_bar, logger=logger, on_step=on_step, on_epoch=on_epoch,
                     reduce_fx=reduce_fx, enable_graph=enable_graph, sync_dist=sync_dist,
                     sync_dist_group=sync_dist_group, add_dataloader_idx=add_dataloader_idx,
                     batch_size=batch_size, rank_zero_only=rank_zero_only)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """`print` on global rank 0 only, through the progress bar (if any) so its line stays intact."""
        if self.global_rank != 0:
            return
        bar = self._trainer.progress_bar_callback if self._trainer is not None else None
        if bar is not None and getattr(bar, "is_enabled", True):
            bar.print(*args, **kwargs)
        else:
            print(*args, **kwargs)

    # ------------------------------------------------------------------ optimizers
    def optimizers(self, use_pl_optimizer: bool = True):
        """The optimizer(s) from `configure_optimizers`: one object when there is one, else a list."""
        opts = self.trainer.strategy._lightning_optimizers if use_pl_optimizer else self.trainer.optimizers
        return opts[0] if len(opts) == 1 else list(opts)

    def lr_schedulers(self):
        """The scheduler(s) from `configure_optimizers`: None, one object, or a list."""
        configs = self.trainer.lr_scheduler_configs
        if not configs:
            return None
        schedulers = [config.scheduler for config in configs]
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward for manual optimization: runs the backward hooks and the precision plugin's loss scaling."""
        if self.automatic_optimization:
            raise RuntimeError(
                "`manual_backward` is for manual optimization. Set `self.automatic_optimization = False` in "
                "`__init__`, or return the loss from `training_step` and let volt call backward."
            )
        self.trainer.fit_loop.backward(loss, *args, **kwargs)

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Hook: how the loss is backpropagated."""
        loss.backward(*args, **kwargs)

    def toggle_optimizer(self, optimizer) -> None:
        """Make only this optimizer's parameters require grad (others are frozen until `untoggle_optimizer`)."""
        optimizer = getattr(optimizer, "optimizer", optimizer)
        own = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self._param_requires_grad_state = {}
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) not in own and id(p) not in self._param_requires_grad_state:
                        self._param_requires_grad_state[id(p)] = (p, p.requires_grad)
                        p.requires_grad = False

    def untoggle_optimizer(self, optimizer) -> None:
        """Undo `toggle_optimizer`."""
        for p, requires_grad in getattr(self, "_param_requires_grad_state", {}).values():
            p.requires_grad = requires_grad
        self._param_requires_grad_state = {}

    @contextmanager
    def toggled_optimizer(self, optimizer):
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """Hook: performs the optimizer step. The closure runs training_step, zero_grad and backward."""
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer) -> None:
        """Hook: zero the gradients (set them to None)."""
        optimizer.zero_grad()

    def lr_scheduler_step(self, scheduler, metric: Any) -> None:
        """Hook: step one scheduler; `metric` is the monitored value for ReduceLROnPlateau, else None."""
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Hook: clip gradients before the optimizer step. Defaults to the Trainer's settings."""
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                            gradient_clip_algorithm=gradient_clip_algorithm)

    def clip_gradients(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip the gradients of `optimizer`'s parameters by 2-norm ("norm") or by value ("value"). What is left out
        is the Trainer's (`Trainer(gradient_clip_val=..., gradient_clip_algorithm=...)`), as in Lightning."""
        trainer_val = self._trainer.gradient_clip_val if self._trainer is not None else None
        if gradient_clip_val is None:
            gradient_clip_val = trainer_val
        elif trainer_val is not None and trainer_val != gradient_clip_val:
            from volt.utilities.exceptions import MisconfigurationException

            raise MisconfigurationException(
                f"You have set `Trainer(gradient_clip_val={trainer_val!r})` and have passed "
                f"`clip_gradients(gradient_clip_val={gradient_clip_val!r})`: set the value in one place only.")
        trainer_algorithm = self._trainer.gradient_clip_algorithm if self._trainer is not None else None
        if gradient_clip_algorithm is None:
            gradient_clip_algorithm = trainer_algorithm
        elif trainer_algorithm is not None and trainer_algorithm != str(gradient_clip_algorithm).lower():
            from volt.utilities.exceptions import MisconfigurationException

            raise MisconfigurationException(
                f"You have set `Trainer(gradient_clip_algorithm={trainer_algorithm!r})` and have passed "
                f"`clip_gradients(gradient_clip_algorithm={gradient_clip_algorithm!r})`: set it in one place only.")
        algorithm = str(gradient_clip_algorithm or "norm").lower()
        if algorithm not in ("norm", "value"):
            raise ValueError(f"gradient_clip_algorithm={algorithm!r} is not supported; use 'norm' or 'value'.")
        if gradient_clip_val is None or gradient_clip_val <= 0:
            return
        optimizer = getattr(optimizer, "optimizer", optimizer)
        if self._trainer is not None:  # the precision plugin clips (mixed precision checks the optimizer first)
            self._trainer.precision_plugin.clip_gradients(optimizer, gradient_clip_val, algorithm)
        else:
            clip_grads((p for group in optimizer.param_groups for p in group["params"]), gradient_clip_val, algorithm)

    # ------------------------------------------------------------------ data hooks
    def prepare_data(self) -> None:
        """Download or write data once per node (rank 0). Do not set state here."""

    def setup(self, stage: str) -> None:
        """Called at the start of fit/validate/test/predict on every process."""

    def teardown(self, stage: str) -> None:
        """Called at the end of fit/validate/test/predict on every process."""

    def train_dataloader(self):
        raise dataloader_not_implemented("train_dataloader")

    def val_dataloader(self):
        raise dataloader_not_implemented("val_dataloader")

    def test_dataloader(self):
        raise dataloader_not_implemented("test_dataloader")

    def predict_dataloader(self):
        raise dataloader_not_implemented("predict_dataloader")

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Hook: move a batch to the device (tensors in nested collections)."""
        return move_data_to_device(batch, device)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    # ------------------------------------------------------------------ model hooks (no-ops by default)
    def on_fit_start(self) -> None: ...
    def on_fit_end(self) -> None: ...
    def on_train_start(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_test_start(self) -> None: ...
    def on_test_end(self) -> None: ...
    def on_predict_start(self) -> None: ...
    def on_predict_end(self) -> None: ...
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Optional[int]: ...
    def on_train_batch_end(self, outputs, batch: Any, batch_idx: int) -> None: ...
    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_validation_batch_end(self, outputs, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_end(self, outputs, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_batch_end(self, outputs, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_train_epoch_start(self) -> None: ...
    def on_train_epoch_end(self) -> None: ...
    def on_validation_epoch_start(self) -> None: ...
    def on_validation_epoch_end(self) -> None: ...
    def on_test_epoch_start(self) -> None: ...
    def on_test_epoch_end(self) -> None: ...
    def on_predict_epoch_start(self) -> None: ...
    def on_predict_epoch_end(self) -> None: ...
    def on_before_zero_grad(self, optimizer) -> None: ...
    def on_before_backward(self, loss: torch.Tensor) -> None: ...
    def on_after_backward(self) -> None: ...
    def on_before_optimizer_step(self, optimizer) -> None: ...

    def on_validation_model_zero_grad(self) -> None:
        """Free gradient memory before validation inside `fit`."""
        self.zero_grad()  # set_to_none=True is the default

    def on_validation_model_eval(self) -> None:
        """Eval mode for validation (the strategy's wrapper too, e.g. DDP's)."""
        self.trainer.model.eval()

    def on_validation_model_train(self) -> None:
        """Called after validation only when overridden; without it, every submodule gets back the mode it had."""
        self.trainer.model.train()

    def on_test_model_eval(self) -> None:
        self.trainer.model.eval()

    def on_test_model_train(self) -> None:
        """Called after testing only when overridden (see `on_validation_model_train`)."""
        self.trainer.model.train()

    def on_predict_model_eval(self) -> None:
        self.trainer.model.eval()

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Add or change entries of the checkpoint dict before it is written."""

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Read entries of a checkpoint before the weights are restored."""

    # ------------------------------------------------------------------ utilities
    def __getstate__(self) -> Dict[str, Any]:
        # The Trainer link is runtime state: a pickled or deep-copied module (an EMA copy, a module sent to another
        # process) is detached, as in Lightning, rather than dragging the Trainer, its loaders and workers along.
        state = dict(self.__dict__)
        state["_trainer"] = None
        return state

    def freeze(self) -> "LightningModule":
        """Turn off gradients for all parameters and switch to eval mode; returns the module, as Lightning."""
        for param in self.parameters():
            param.requires_grad = False
        return self.eval()

    def unfreeze(self) -> "LightningModule":
        """Turn gradients back on and switch to train mode; returns the module, as Lightning."""
        for param in self.parameters():
            param.requires_grad = True
        return self.train()

    def all_gather(self, data, group=None, sync_grads: bool = False):
        """Gather tensors (or collections of them) from every process: a new leading dimension of world size."""
        return self.trainer.strategy.all_gather(data, group=group, sync_grads=sync_grads)

    # ------------------------------------------------------------------ export
    def to_onnx(self, file_path: Union[str, os.PathLike, BinaryIO, None] = None, input_sample: Any = None,
                **kwargs: Any):
        """Export `forward` to ONNX with `torch.onnx.export(self, input_sample, file_path, **kwargs)`, in eval mode.

        `input_sample` defaults to `example_input_array`; it goes through the module's batch-transfer hooks to the
        module's device first. Returns what torch returns (an `ONNXProgram` with its default exporter). Needs the
        `onnx` package, and `onnxscript` for torch's default (dynamo) exporter: `pip install "volt[onnx]"`.
        """
        dynamo = kwargs.get("dynamo", inspect.signature(torch.onnx.export).parameters["dynamo"].default)
        _require_packages(f"{type(self).__name__}.to_onnx()", ["onnx", "onnxscript"] if dynamo else ["onnx"])
        input_sample = self._export_sample(input_sample, "input_sample", "to_onnx()")
        if isinstance(file_path, os.PathLike):
            file_path = os.fspath(file_path)
        with self._export_mode():
            return torch.onnx.export(self, input_sample, file_path, **kwargs)

    @torch.no_grad()
    def to_torchscript(self, file_path: Union[str, os.PathLike, None] = None, method: str = "script",
                       example_inputs: Any = None, **kwargs: Any):
        """Compile the module with TorchScript, in eval mode: `torch.jit.script` (method="script"), or
        `torch.jit.trace` on `example_inputs` (default `example_input_array`, moved to the module's device).

        `kwargs` go to torch's function. With `file_path` the result is also saved (local or fsspec path), for
        `torch.jit.load`. Returns the ScriptModule. (torch deprecates TorchScript from 2.10: prefer `to_onnx` or
        `torch.export` for new code.)
        """
        from volt.utilities.rank_zero import rank_zero_deprecation

        rank_zero_deprecation("`LightningModule.to_torchscript` is deprecated, as in Lightning, where it has been "
                              "deprecated in v2.7 and will be removed in v2.8: TorchScript is deprecated in PyTorch. "
                              "Export with `to_onnx` or `torch.export.export()` instead.")
        if method not in ("script", "trace"):
            raise ValueError(f"to_torchscript(method={method!r}): the method only supports 'script' or 'trace'.")
        if method == "trace":
            example_inputs = self._export_sample(example_inputs, "example_inputs", "to_torchscript(method='trace')")
            if kwargs.get("check_inputs") is not None:
                kwargs["check_inputs"] = [self._transfer_sample(inputs) for inputs in kwargs["check_inputs"]]
        with self._export_mode():
            if method == "script":
                compiled = torch.jit.script(self, **kwargs)
            else:
                compiled = torch.jit.trace(self, example_inputs=example_inputs, **kwargs)
        if file_path is not None:
            import fsspec

            with fsspec.open(os.fspath(file_path), "wb") as file:
                torch.jit.save(compiled, file)
        return compiled

    def _export_sample(self, sample: Any, argument: str, caller: str) -> Any:
        """The sample to export with (default `example_input_array`), through the batch-transfer hooks."""
        if sample is None:
            sample = self.example_input_array
        if sample is None:
            if argument == "input_sample":  # Lightning's wording for each export
                missing = ("Could not export to ONNX since neither `input_sample` nor `model.example_input_array` "
                           "attribute is set.")
            else:
                missing = f"It requires either `{argument}` or `model.example_input_array`."
            raise ValueError(f"`{type(self).__name__}.{caller}` needs an input to run the model on. {missing} Pass "
                             f"`{argument}`, or set `self.example_input_array` in `__init__`.")
        return self._transfer_sample(sample)

    def _transfer_sample(self, sample: Any) -> Any:
        """Through the module's batch-transfer hooks to its device, as a batch would go."""
        sample = self.on_before_batch_transfer(sample, 0)
        sample = self.transfer_batch_to_device(sample, self.device, 0)
        return self.on_after_batch_transfer(sample, 0)

    @contextmanager
    def _export_mode(self):
        """Eval mode, and a `trainer` that reads None instead of raising, restored afterwards even on error."""
        training = self.training
        self.eval()
        try:
            with tracing_module():
                yield
        finally:
            self.train(training)

    @_class_only_method
    def load_from_checkpoint(cls, checkpoint_path: Union[str, os.PathLike], map_location=None,
                             hparams_file: Optional[Union[str, os.PathLike]] = None, strict: Optional[bool] = None,
                             weights_only: bool = True, **kwargs: Any):
        """Rebuild the module from a checkpoint: saved hyperparameters (or `hparams_file`'s, overridden by `kwargs`)
        and weights.

        `checkpoint_path` is a checkpoint file or a sharded checkpoint folder (read whole, in this process; its
        optimizer states are left unread). Loading is safe by default (`weights_only=True`): the checkpoint is read
        as plain data and no code runs.
        """
        from volt.sharded_checkpoint import load
        from volt.utilities.compile import state_dict_for

        checkpoint = load(checkpoint_path, map_location=map_location or "cpu", weights_only=weights_only,
                          optimizer_states=False)
        model = _instantiate_from_checkpoint(cls, checkpoint, hparams_file, kwargs)
        model.on_load_checkpoint(checkpoint)
        if "state_dict" not in checkpoint:
            raise KeyError(f"{checkpoint_path} has no 'state_dict': it is not a model checkpoint.")
        if strict is not None and model._strict_loading is not None and strict != model._strict_loading:
            raise ValueError(f"load_from_checkpoint(..., strict={strict!r}) is in conflict with "
                             f"`{cls.__name__}.strict_loading={model._strict_loading!r}`: set the same value in both.")
        if not checkpoint["state_dict"]:  # as Lightning: the model keeps its initial weights, with a warning
            rank_zero_warn(f"The state dict in {str(checkpoint_path)!r} contains no parameters.")
        else:
            model.load_state_dict(state_dict_for(model, checkpoint["state_dict"]),
                                  strict=model.strict_loading if strict is None else strict)
        if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
            model.to(map_location)
        return model


def _require_packages(feature: str, packages: Sequence[str]) -> None:
    """Raise one error naming every package `feature` needs that is not installed."""
    import importlib.util

    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ModuleNotFoundError(f"{feature} needs {' and '.join(missing)}, which {verb} not installed:"
                                  f" `pip install {' '.join(missing)}`.")


def _instantiate_from_checkpoint(cls, checkpoint: Dict[str, Any], hparams_file, overrides: Dict[str, Any]):
    """`cls` built from the checkpoint's hyperparameters (or `hparams_file`'s), `overrides` winning.

    Hyperparameters saved from one `__init__` argument (`save_hyperparameters(config)`) go back into that argument;
    otherwise each is its own argument. Names `__init__` does not take are dropped, unless it takes `**kwargs`.
    """
    from volt.checkpoint import decode_hparams

    # "module_arguments": where Lightning before 1.0 saved them
    saved = checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY, checkpoint.get("module_arguments")
                           if cls.CHECKPOINT_HYPER_PARAMS_KEY == "hyper_parameters" else None)
    hparams = decode_hparams(saved or {})
    config = None  # an OmegaConf container saved as plain data (`hparams_type`): passed back as one
    if checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_TYPE) in ("DictConfig", "ListConfig"):
        from omegaconf import OmegaConf

        config = OmegaConf.create(hparams)
    if hparams_file is not None:
        hparams = _read_hparams_file(hparams_file, hparams)
    hparams = {**hparams, **overrides}
    instantiator = _trusted_instantiator(cls, hparams.pop("_instantiator", None), hparams.get("_class_path"))
    params = inspect.signature(cls.__init__).parameters
    container = params.get(checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_NAME) or "")
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if container is not None and container.kind in named and container.name != "self":
        whole = config if config is not None and not overrides and hparams_file is None else AttributeDict(hparams)
        init_kwargs = {container.name: whole, **overrides}
    else:
        init_kwargs = hparams
    # names `__init__` does not take are dropped; not for a subclass named by "_class_path" (LightningCLI's subclass
    # mode), whose own `__init__` the instantiator checks them against
    chosen_subclass = instantiator is not None and "_class_path" in init_kwargs
    if not chosen_subclass and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        init_kwargs = {k: v for k, v in init_kwargs.items() if k in params}
    obj = instantiator(cls, init_kwargs) if instantiator else cls(**init_kwargs)
    # keep the checkpoint's hparams visible even if __init__ did not call save_hyperparameters
    if not getattr(obj, "_hparams", None):
        obj._set_hparams(hparams)
    return obj


# The functions a checkpoint's "_instantiator" may name (LightningCLI's, volt's or Lightning's spelling), each built
# by volt's: a checkpoint never names code to import and run.
_TRUSTED_INSTANTIATORS = ("volt.cli.instantiate_module", "lightning.pytorch.cli.instantiate_module",
                          "pytorch_lightning.cli.instantiate_module")


def _trusted_instantiator(cls, name: Any, class_path: Any):
    """The function that rebuilds `cls` from hyperparameters saved by LightningCLI (None when they were not), after
    checking that the checkpoint names a trusted function and, with "_class_path", an imported subclass of `cls`."""
    if name is None:
        return None
    if name not in _TRUSTED_INSTANTIATORS:
        raise ValueError(f"The checkpoint asks for {name!r} to build {cls.__name__}, which is not one of the trusted"
                         f" instantiators {list(_TRUSTED_INSTANTIATORS)}; it was not run. Remove '_instantiator' from"
                         " its hyperparameters to build the class directly.")
    if class_path is not None and not _imported_subclass(class_path, cls):
        raise ValueError(f"The checkpoint asks for class {class_path!r}, which is not an imported subclass of"
                         f" {cls.__name__}; it was not loaded. Import the module that defines it first, if you trust"
                         " the checkpoint.")
    return instantiate_module


def instantiate_module(class_type: type, config: Dict[str, Any]) -> Any:
    """Build `class_type` (or, with a "_class_path" key, that subclass of it) from `config` as LightningCLI would:
    values are checked against the `__init__` signature and nested class configs are built too. `load_from_checkpoint`
    rebuilds a module saved by LightningCLI with it (also `volt.cli.instantiate_module`)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    if "_class_path" in config:
        parser.add_subclass_arguments(class_type, "module", fail_untyped=False)
        config = {"class_path": config["_class_path"],
                  "dict_kwargs": {key: value for key, value in config.items() if key != "_class_path"}}
    else:
        parser.add_class_arguments(class_type, "module", fail_untyped=False)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse<4.49
    return instantiate(parser.parse_object({"module": config})).module


def _imported_subclass(class_path: Any, cls: type) -> bool:
    """Whether `class_path` ("package.module.Class") names a subclass of `cls` in a module already imported."""
    import sys

    module_name, _, name = str(class_path).rpartition(".")
    found = getattr(sys.modules.get(module_name), name, None)
    return isinstance(found, type) and issubclass(found, cls)


def _read_hparams_file(path: Union[str, os.PathLike], saved: Dict[str, Any]) -> Dict[str, Any]:
    """The hyperparameters in a YAML file (e.g. a logger's hparams.yaml); `saved` with a warning if it is missing."""
    if os.path.splitext(os.fspath(path))[1].lower() not in (".yaml", ".yml"):
        raise ValueError(f"hparams_file must be a .yaml or .yml file (a logger's hparams.yaml), got {path}.")
    if not os.path.isfile(path):
        rank_zero_warn(f"hparams_file {path} does not exist; the hyperparameters saved in the checkpoint are used.",
                       category=RuntimeWarning)
        return saved
    import yaml

    from volt.loggers.utils import hparams_yaml_loader

    with open(path) as f:
        hparams = yaml.load(f, Loader=hparams_yaml_loader())
    if not isinstance(hparams, (dict, type(None))):
        raise ValueError(f"hparams_file {path} holds a {type(hparams).__name__}; expected a mapping of names to"
                         " values.")
    return hparams or {}
