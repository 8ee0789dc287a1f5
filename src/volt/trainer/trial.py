"""Trial runs: a few training steps or evaluation batches inside a running Trainer call that leave no trace.

The tuner's searches (volt/tuner) run them from a callback hook (`on_fit_start`, `on_validation_start`, ...):

    with trainer.trial_run([recorder]) as trial:
        trial.fit(max_steps=100)          # training steps, from the loop position the block began at
        trial.evaluate(max_batches=3)     # batches of the running validate/test/predict loop
        trial.reload_dataloaders()        # after changing the batch size the dataloader hooks read

Inside the block the loops run as usual on the module and datamodule (their hooks included), but only the given
callbacks receive callback hooks, the loggers are a stand-in that writes nothing (`self.logger.experiment...` still
runs), `self.log` goes to a throwaway store, and the loops' info lines ("fit stopped: max_steps reached") are not
shown; in fit, the learning-rate schedulers do not step and there is no sanity check, no validation and no
`max_epochs`.

When the block ends, even by an exception, everything the trials changed is as it was when it began: the module's
state_dict and gradients, the optimizers' state, the precision plugin's loss scale, the RNG streams (torch, CUDA,
numpy, `random`, and the data samplers' own generators), the fit loop's position, the module's train/eval modes, and
the Trainer's settings, callbacks, loggers and metrics. The snapshot is plain data kept in host memory (so trials
have the accelerator's memory to themselves) and comes back through `torch.load(weights_only=True)`. Then the
running loop's dataloaders are made again, so the run continues with whatever batch size a search left set.
"""
import copy
import io
import logging
import pickle
from typing import Any, Dict, Iterable, List, Tuple

import torch

from volt.callbacks.callback import Callback
from volt.loggers.logger import Logger
from volt.trainer.data import resumable_sampler, shutdown_workers
from volt.trainer.hooks import Hooks
from volt.trainer.results import Results
from volt.utilities.seed import get_rng_states, set_rng_states

# Trainer attributes a trial inside fit sets for itself, and the values it sets; the block's end puts the user's
# back. (Evaluation trials run the evaluation loop as configured.)
_FIT_SETTINGS = {"max_epochs": -1, "min_epochs": None, "min_steps": None, "limit_val_batches": 0,
                 "num_sanity_val_steps": 0, "val_check_interval": 1.0, "lr_scheduler_configs": []}
_KEPT = (*_FIT_SETTINGS, "max_steps", "should_stop", "callbacks", "loggers", "_hooks", "_results")
_VOLT_LOG = logging.getLogger("volt")


class TrialRun:
    """See the module docstring. Made by `Trainer.trial_run(callbacks)`; use it as a context manager."""

    def __init__(self, trainer, callbacks: Iterable[Callback] = ()) -> None:
        self.trainer = trainer
        self.callbacks = list(callbacks)
        self._generators = _SamplerGenerators()

    # ------------------------------------------------------------------ the block
    def __enter__(self) -> "TrialRun":
        trainer = self.trainer
        if trainer.lightning_module is None or trainer.state.status != "running":
            raise RuntimeError("`trainer.trial_run()` needs a running Trainer call: use it from a callback hook such "
                               "as `on_fit_start`.")
        model = trainer.lightning_module
        self._kept: Dict[str, Any] = {name: getattr(trainer, name) for name in _KEPT}
        self._stage = trainer.state.stage
        self._grads_pending = trainer.fit_loop.grads_pending
        self._loop_state = copy.deepcopy(trainer.fit_loop.state.state_dict())
        self._modes = [module.training for module in model.modules()]
        self._rng = get_rng_states()
        try:  # fails here, before any trial, if something is not plain data
            self._saved = _plain_copy(self._state())
        except pickle.UnpicklingError as error:
            raise RuntimeError(
                "A trial run keeps the module's, optimizers' and precision plugin's state as plain data (tensors, "
                f"numbers, strings, lists, dicts), as checkpoints do; this state holds something else: {error}"
            ) from error
        callbacks = [*self.callbacks, self._generators]
        if trainer.state.fn == "fit":
            for name, value in _FIT_SETTINGS.items():
                setattr(trainer, name, copy.copy(value))
        trainer.callbacks, trainer.loggers = callbacks, [_DiscardingLogger()] if trainer.loggers else []
        trainer._hooks = Hooks(trainer, callbacks, model, trainer.datamodule)
        trainer._results = Results(trainer)  # each trial gets a fresh one, too
        _VOLT_LOG.addFilter(_warnings_only)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        trainer = self.trainer
        _VOLT_LOG.removeFilter(_warnings_only)
        for name, value in self._kept.items():
            setattr(trainer, name, value)
        trainer.state.stage = self._stage
        self._restore(self._saved)
        if exc_info[0] is None:  # a failed search ends the call: no loaders for it
            self._remake_dataloaders()
        set_rng_states(self._rng)  # last: nothing after it may draw
        self._generators.restore()

    # ------------------------------------------------------------------ inside the block
    def fit(self, max_steps: int) -> None:
        """Train for `max_steps` optimizer steps (fewer if a callback sets `trainer.should_stop`), from the loop
        position the block began at (each call starts there again)."""
        trainer = self.trainer
        if trainer.state.fn != "fit":
            raise RuntimeError(f"`trial.fit()` runs inside `Trainer.fit`, not `Trainer.{trainer.state.fn}`: "
                               "use `trial.evaluate()`.")
        loop = trainer.fit_loop
        loop.state.load_state_dict(copy.deepcopy(self._loop_state))
        trainer.should_stop = False
        trainer.max_steps = loop.state.global_step + max_steps
        trainer.state.stage = "train"
        trainer._results = Results(trainer)
        loop.run()

    def evaluate(self, max_batches: int) -> None:
        """Run the running validate/test/predict loop over at most `max_batches` batches of each dataloader."""
        loop = self._eval_loop()
        self.trainer._results = Results(self.trainer)
        loop.run(max_batches=max_batches)

    def reload_dataloaders(self) -> None:
        """Make the running loop's dataloaders again (their hooks read the batch size anew)."""
        if self.trainer.state.fn == "fit":
            loop = self.trainer.fit_loop
            shutdown_workers(loop.train_loader)
            loop.setup_train_data()
            for loader in loop.val_loop.loaders or []:
                shutdown_workers(loader)
            loop.val_loop.loaders = None
            if loop.validates_in_epoch(loop.state.epoch):  # as Lightning: `trainer.val_dataloaders` shows the size
                loop.val_loop.setup_data()
        else:
            loop = self._eval_loop()
            for loader in loop.loaders or []:
                shutdown_workers(loader)
            loop.setup_data()

    @property
    def dataloaders(self) -> List[Any]:
        """The running loop's dataloaders, as it made them (training in fit; evaluation otherwise)."""
        if self.trainer.state.fn == "fit":
            loader = self.trainer.fit_loop.train_loader
            return [] if loader is None else [loader]
        return list(self._eval_loop().loaders or [])

    @property
    def dataloaders_given(self) -> bool:
        """Whether the running call got its dataloaders as arguments (`fit(model, loader)`) rather than from a
        `*_dataloader` hook: `reload_dataloaders` then gets the very same loaders back."""
        trainer = self.trainer
        source = trainer.fit_loop.train_source if trainer.state.fn == "fit" else self._eval_loop().source
        return source is not None

    # ------------------------------------------------------------------ snapshot
    def _eval_loop(self):
        trainer = self.trainer
        loops = {"validate": trainer.validate_loop, "test": trainer.test_loop, "predict": trainer.predict_loop}
        if trainer.state.fn not in loops:
            raise RuntimeError("`trial.evaluate()` runs inside `Trainer.validate`, `test` or `predict`: inside "
                               "`Trainer.fit`, use `trial.fit()`.")
        return loops[trainer.state.fn]

    def _state(self) -> Dict[str, Any]:
        trainer = self.trainer
        strategy = trainer.strategy
        return {
            "module": strategy.lightning_module_state_dict(),
            "grads": {name: p.grad for name, p in trainer.lightning_module.named_parameters() if p.grad is not None},
            "optimizers": [strategy.optimizer_state(optimizer) for optimizer in trainer.optimizers],
            "precision": trainer.precision_plugin.state_dict(),
        }

    def _restore(self, saved: Dict[str, Any]) -> None:
        trainer = self.trainer
        strategy, model = trainer.strategy, trainer.lightning_module
        strategy.load_model_state_dict({"state_dict": saved["module"]}, strict=True)
        for name, parameter in model.named_parameters():
            grad = saved["grads"].get(name)
            parameter.grad = None if grad is None else grad.to(parameter.device)
        for optimizer, state in zip(trainer.optimizers, saved["optimizers"]):
            strategy.load_optimizer_state(optimizer, state)
        if saved["precision"]:
            trainer.precision_plugin.load_state_dict(saved["precision"])
        trainer.fit_loop.state.load_state_dict(self._loop_state)  # in place: a loop that called the hook holds it
        trainer.fit_loop.grads_pending = self._grads_pending
        for module, training in zip(model.modules(), self._modes):
            module.training = training

    def _remake_dataloaders(self) -> None:
        """The running loop continues with loaders made under the user's settings again (sizes, validation
        interval) and the batch size now set."""
        trainer = self.trainer
        if trainer.state.fn != "fit" or trainer.fit_loop.train_loader is not None:
            self.reload_dataloaders()


class _SamplerGenerators(Callback):
    """Records each data sampler's own generator (`DataLoader(shuffle=True, generator=g)`) before a trial first
    draws from it, so that the block's end can put it back."""

    def __init__(self) -> None:
        self._states: Dict[int, Tuple[torch.Generator, torch.Tensor]] = {}

    def restore(self) -> None:
        for generator, state in self._states.values():
            generator.set_state(state)

    def _record(self, loaders: List[Any]) -> None:
        for loader in loaders:
            sampler = resumable_sampler(loader)
            generator = sampler.own_generator() if sampler is not None else None
            if generator is not None and id(generator) not in self._states:
                self._states[id(generator)] = (generator, generator.get_state())

    def on_train_start(self, trainer, pl_module) -> None:
        self._record([trainer.fit_loop.train_loader])

    def on_validation_start(self, trainer, pl_module) -> None:
        self._record(trainer.validate_loop.loaders or [])

    def on_test_start(self, trainer, pl_module) -> None:
        self._record(trainer.test_loop.loaders or [])

    def on_predict_start(self, trainer, pl_module) -> None:
        self._record(trainer.predict_loop.loaders or [])


class _DiscardingLogger(Logger):
    """The loggers' stand-in during a trial: module code that writes to `self.logger` or its `experiment` runs, and
    nothing is written (Lightning's DummyLogger)."""

    name = version = ""

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    @property
    def experiment(self) -> "_Discard":
        return _Discard()


class _Discard:
    """Any attribute, call or item of it is itself: `logger.experiment.add_image(...)` does nothing."""

    def __getattr__(self, name: str) -> "_Discard":
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> "_Discard":
        return self

    def __getitem__(self, key: Any) -> "_Discard":
        return self


def _plain_copy(state: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of `state` in host memory, through `torch.save` and `torch.load(weights_only=True)`: like a
    checkpoint, it may hold plain data only."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING
