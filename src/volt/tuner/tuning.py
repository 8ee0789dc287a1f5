"""Tuner: `Tuner(trainer).lr_find(model)` and `.scale_batch_size(model)` before `trainer.fit(model)`.

Each runs the Trainer call it tunes for (fit, or validate/test/predict for the batch size) with the search callback
in front of the others, and ends the call once the search is done: setup hooks, the search, teardown hooks; no
training, no sanity check, nothing logged (the loggers only tell the other callbacks where the run will log). The
trainer, module and data are then as they were, except the tuned value. The searches are volt/tuner/lr_finder.py
and batch_size_scaling.py.
"""
from typing import Any, Optional

from volt.callbacks.batch_size_finder import BatchSizeFinder
from volt.callbacks.callback import Callback
from volt.callbacks.lr_finder import LearningRateFinder
from volt.loggers.logger import Logger
from volt.tuner.lr_finder import _LRFinder
from volt.utilities.exceptions import MisconfigurationException, _TunerExitException

_METHODS = ("fit", "validate", "test", "predict")


class Tuner:
    """Tune a model's learning rate or batch size with `trainer` before training it (Lightning 2.6's Tuner)."""

    def __init__(self, trainer) -> None:
        self._trainer = trainer

    def scale_batch_size(self, model, train_dataloaders=None, val_dataloaders=None, dataloaders=None,
                         datamodule=None, method: str = "fit", mode: str = "power", steps_per_trial: int = 3,
                         init_val: int = 2, max_trials: int = 25, batch_arg_name: str = "batch_size",
                         margin: float = 0.05, max_val: int = 8192) -> Optional[int]:
        """The largest batch size that runs `steps_per_trial` steps of `method` without running out of memory
        (CUDA, or a `MemoryError` on the CPU); it is left set in `batch_arg_name` of the module, its hparams or the
        datamodule, which your dataloader hooks read. See `BatchSizeFinder` for the arguments."""
        _check_tuner_configuration(train_dataloaders, val_dataloaders, dataloaders, method)
        trainer = self._trainer
        if trainer.world_size > 1:
            raise ValueError("Tuning the batch size is currently not supported with distributed strategies.")
        _check_not_configured(trainer, BatchSizeFinder)
        finder = BatchSizeFinder(mode=mode, steps_per_trial=steps_per_trial, init_val=init_val,
                                 max_trials=max_trials, batch_arg_name=batch_arg_name, margin=margin, max_val=max_val)
        _run_search(trainer, finder, method, model, train_dataloaders, val_dataloaders, dataloaders, datamodule)
        return finder.optimal_batch_size

    def lr_find(self, model, train_dataloaders=None, val_dataloaders=None, dataloaders=None, datamodule=None,
                method: str = "fit", min_lr: float = 1e-8, max_lr: float = 1, num_training: int = 100,
                mode: str = "exponential", early_stop_threshold: Optional[float] = 4.0, update_attr: bool = True,
                attr_name: str = "") -> Optional[_LRFinder]:
        """Train `num_training` steps with the rate rising from `min_lr` to `max_lr` and return the results
        (`.results`, `.suggestion()`, `.plot()`); with `update_attr`, the suggestion is set in `model.lr` (or
        `learning_rate`, `hparams.lr`, `attr_name`) for the fit that follows. See `LearningRateFinder`."""
        if method != "fit":
            raise MisconfigurationException("method='fit' is the only valid configuration to run lr finder.")
        _check_tuner_configuration(train_dataloaders, val_dataloaders, dataloaders, method)
        _check_not_configured(self._trainer, LearningRateFinder)
        finder = LearningRateFinder(min_lr=min_lr, max_lr=max_lr, num_training_steps=num_training, mode=mode,
                                    early_stop_threshold=early_stop_threshold, update_attr=update_attr,
                                    attr_name=attr_name)
        _run_search(self._trainer, finder, method, model, train_dataloaders, val_dataloaders, dataloaders,
                    datamodule)
        return finder.optimal_lr


def _run_search(trainer, finder: Callback, method: str, model, train_dataloaders, val_dataloaders, dataloaders,
                datamodule) -> None:
    """Run the Trainer call `method` with `finder` first and an end right after it; put the Trainer's callbacks
    and loggers, and the module's train/eval modes (an evaluation call ends in eval mode), back afterwards."""
    callbacks, loggers = trainer.callbacks, trainer.loggers
    modes = [module.training for module in model.modules()]
    trainer.callbacks = [finder, _EndAfterSearch(), *callbacks]
    trainer.loggers = [_SilentLogger(logger) for logger in loggers]
    try:
        if method == "fit":
            trainer.fit(model, train_dataloaders, val_dataloaders, datamodule)
        else:
            getattr(trainer, method)(model, dataloaders, datamodule=datamodule)
    finally:
        trainer.callbacks, trainer.loggers = callbacks, loggers
        for module, training in zip(model.modules(), modes):
            module.training = training


class _EndAfterSearch(Callback):
    """Placed right after the search callback: ends the Trainer call at the hook where the search ran."""

    def on_fit_start(self, trainer, pl_module) -> None:
        raise _TunerExitException()

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "validate":
            raise _TunerExitException()

    def on_test_start(self, trainer, pl_module) -> None:
        raise _TunerExitException()

    def on_predict_start(self, trainer, pl_module) -> None:
        raise _TunerExitException()


class _SilentLogger(Logger):
    """Stands in for a logger during the Tuner's call: says where the run will log (name, version, folders), so
    callbacks set up as for the real run, and writes nothing (no hyperparameters, graph or metrics twice)."""

    def __init__(self, logger: Logger) -> None:
        self._logger = logger

    @property
    def name(self) -> Optional[str]:
        return self._logger.name

    @property
    def version(self) -> Any:
        return self._logger.version

    @property
    def root_dir(self) -> Optional[str]:
        return self._logger.root_dir

    @property
    def log_dir(self) -> Optional[str]:
        return self._logger.log_dir

    @property
    def save_dir(self) -> Optional[str]:
        return self._logger.save_dir

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def finalize(self, status: str) -> None:
        pass

    def __getattr__(self, name: str) -> Any:  # anything else (`experiment`, ...) is the real logger's
        if name == "_logger":
            raise AttributeError(name)
        return getattr(self._logger, name)


def _check_tuner_configuration(train_dataloaders, val_dataloaders, dataloaders, method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"method {method!r} is invalid. Should be one of {_METHODS}.")
    if method == "fit" and dataloaders is not None:
        raise MisconfigurationException(
            f"In tuner with method={method!r}, `dataloaders` argument should be None, please consider setting "
            "`train_dataloaders` and `val_dataloaders` instead.")
    if method != "fit" and (train_dataloaders is not None or val_dataloaders is not None):
        raise MisconfigurationException(
            f"In tuner with `method`={method!r}, `train_dataloaders` and `val_dataloaders` arguments should be None, "
            "please consider setting `dataloaders` instead.")


def _check_not_configured(trainer, kind: type) -> None:
    if any(isinstance(callback, kind) for callback in trainer.callbacks):
        raise ValueError(f"Trainer is already configured with a `{kind.__name__}` callback. Please remove it if you "
                         "want to use the Tuner.")
