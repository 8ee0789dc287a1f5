"""The Trainer: Lightning's arguments, the entry points (fit, validate, test, predict) and the properties users
read. The loops, hook dispatch, checkpoints and logging it runs live beside it in this package."""
import ast
import functools
import importlib.util
import inspect
import math
import os
from contextlib import contextmanager, nullcontext, suppress
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import torch

from volt.callbacks.callback import Callback
from volt.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from volt.datamodule import LightningDataModule
from volt.distributed.selection import select_strategy
from volt.distributed.strategy import Strategy
from volt.loggers.logger import Logger
from volt.module import LightningModule
from volt.plugins.trainer_plugins import PluginsInput, parse_plugins
from volt.profilers import PassThroughProfiler, Profiler, make_profiler
from volt.trainer.checkpointing import Checkpoints
from volt.trainer.data import shutdown_workers
from volt.trainer.eval_loop import EvalLoop
from volt.trainer.fit_loop import FitLoop
from volt.trainer.hooks import Hooks, ProfiledHooks, implements, wraps_only_the_default
from volt.trainer.optim import LightningOptimizer, configure_optimizers
from volt.trainer.precision import Precision, make_precision, normalize_precision
from volt.trainer.progress import LoopPosition
from volt.trainer.results import Results
from volt.trainer.signals import StopSignals
from volt.trainer.spawn import apply_results, collect_results
from volt.utilities.compile import compile_options, compile_steps, resolve_compiled
from volt.utilities.durations import duration_seconds
from volt.utilities.exceptions import MisconfigurationException, _TunerExitException
from volt.utilities.parsing import drop_unpicklable_hparams
from volt.utilities.rank_zero import rank_zero_deprecation, rank_zero_info, rank_zero_warn
from volt.utilities.warnings import PossibleUserWarning

if TYPE_CHECKING:
    from volt.trainer.trial import TrialRun

# Removed 1.x arguments and what replaces them.
_REMOVED_ARGUMENTS = {
    "resume_from_checkpoint": "pass the path to `trainer.fit(model, ckpt_path=...)`",
    "tpu_cores": "use `accelerator='tpu', devices=N`",
    "ipus": "use `accelerator='ipu', devices=N`",
    "num_processes": "use `accelerator='cpu', devices=N`",
    "auto_lr_find": "use `volt.tuner.Tuner(trainer).lr_find(model)` before `trainer.fit(model)`",
    "auto_scale_batch_size": "use `volt.tuner.Tuner(trainer).scale_batch_size(model)` before `trainer.fit(model)`",
    "auto_select_gpus": "use `devices='auto'` or a list of device indices",
    "progress_bar_refresh_rate": "pass `callbacks=[volt.callbacks.TQDMProgressBar(refresh_rate=N)]`",
    "process_position": "pass `callbacks=[volt.callbacks.TQDMProgressBar(process_position=N)]`",
    "weights_summary": "use `enable_model_summary=` or `callbacks=[volt.callbacks.ModelSummary(max_depth=N)]`",
    "checkpoint_callback": "use `enable_checkpointing=`",
    "flush_logs_every_n_steps": "pass it to the logger: `volt.loggers.CSVLogger(..., flush_logs_every_n_steps=N)`",
    "track_grad_norm": "log `torch.nn.utils.get_total_norm` of the gradients in `on_before_optimizer_step`",
    "terminate_on_nan": "use `detect_anomaly=True`",
    "prepare_data_per_node": "set `self.prepare_data_per_node` in your LightningModule/DataModule `__init__`",
    "stochastic_weight_avg": "pass `callbacks=[volt.callbacks.StochasticWeightAveraging(swa_lrs=...)]`",
    "amp_backend": "use `precision='16-mixed'`",
    "amp_level": "use `precision='16-mixed'`",
    "move_metrics_to_cpu": "remove it: volt keeps metrics on their device and reads them only when printing",
    "multiple_trainloader_mode": "wrap the loaders in `volt.utilities.CombinedLoader(loaders, mode=...)`",
    "replace_sampler_ddp": "use `use_distributed_sampler=`",
    "log_gpu_memory": "pass `callbacks=[volt.callbacks.DeviceStatsMonitor()]`",
    "weights_save_path": "use `callbacks=[volt.callbacks.ModelCheckpoint(dirpath=...)]`",
    "reload_dataloaders_every_epoch": "use `reload_dataloaders_every_n_epochs=1`",
    "distributed_backend": "use `strategy=` (e.g. 'ddp')",
    "truncated_bptt_steps": "use manual optimization and split the sequence in `training_step`",
    "max_steps_per_epoch": "use `limit_train_batches=`",
    "log_every_n_step": "use `log_every_n_steps=`",
}


def _defaults_from_env(init: Callable[..., None]) -> Callable[..., None]:
    """`PL_TRAINER_<ARGUMENT>` environment variables give the Trainer's defaults, as in Lightning
    (`PL_MYTRAINER_...` for a subclass `MyTrainer`): `PL_TRAINER_MAX_EPOCHS=3`. A value is read as a Python literal
    (`3`, `False`, `'gpu'`, `[0, 1]`), else as the string itself; arguments passed explicitly win."""
    names = [name for name, parameter in inspect.signature(init).parameters.items()
             if parameter.kind is inspect.Parameter.KEYWORD_ONLY]

    @functools.wraps(init)
    def init_with_env_defaults(self, *args: Any, **kwargs: Any) -> None:
        prefix = f"PL_{type(self).__name__.upper()}_"
        for name in names:
            value = os.environ.get(prefix + name.upper())
            if value and name not in kwargs:
                kwargs[name] = _env_value(value)
        init(self, *args, **kwargs)

    return init_with_env_defaults


def _env_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


class Trainer:
    """Runs fit/validate/test/predict for a LightningModule, with PyTorch Lightning 2.x's arguments.

    One volt extension: `compile=True`, or a dict of `torch.compile` keyword arguments, compiles the module's
    `forward` and steps (volt/utilities/compile.py), as passing `torch.compile(model)` does.
    """

    @_defaults_from_env
    def __init__(
        self,
        *,
        accelerator: str = "auto",
        strategy: Union[str, Strategy] = "auto",
        devices: Any = "auto",
        num_nodes: int = 1,
        precision: Optional[Union[int, str]] = None,
        logger: Optional[Union[Logger, Iterable[Logger], bool]] = None,
        callbacks: Optional[Union[List[Callback], Callback]] = None,
        fast_dev_run: Union[int, bool] = False,
        max_epochs: Optional[int] = None,
        min_epochs: Optional[int] = None,
        max_steps: int = -1,
        min_steps: Optional[int] = None,
        max_time: Optional[Union[str, timedelta, Dict[str, int]]] = None,
        limit_train_batches: Optional[Union[int, float]] = None,
        limit_val_batches: Optional[Union[int, float]] = None,
        limit_test_batches: Optional[Union[int, float]] = None,
        limit_predict_batches: Optional[Union[int, float]] = None,
        overfit_batches: Union[int, float] = 0.0,
        val_check_interval: Optional[Union[int, float]] = None,
        check_val_every_n_epoch: Optional[int] = 1,
        num_sanity_val_steps: Optional[int] = None,
        log_every_n_steps: Optional[int] = None,
        enable_checkpointing: Optional[bool] = None,
        enable_progress_bar: Optional[bool] = None,
        enable_model_summary: Optional[bool] = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: Optional[Union[int, float]] = None,
        gradient_clip_algorithm: Optional[str] = None,
        deterministic: Optional[Union[bool, str]] = None,
        benchmark: Optional[bool] = None,
        inference_mode: bool = True,
        use_distributed_sampler: bool = True,
        profiler: Optional[Union[Profiler, str]] = None,
        detect_anomaly: bool = False,
        barebones: bool = False,
        plugins: PluginsInput = None,
        sync_batchnorm: bool = False,
        reload_dataloaders_every_n_epochs: int = 0,
        default_root_dir: Optional[Union[str, os.PathLike]] = None,
        enable_autolog_hparams: bool = True,
        model_registry: Optional[str] = None,
        compile: Union[bool, Dict[str, Any], None] = None,
        gpus: Optional[Union[int, str, List[int]]] = None,
        **removed: Any,
    ) -> None:
        for name in removed:
            if name in _REMOVED_ARGUMENTS:
                raise TypeError(
                    f"Trainer(`{name}`=...) was removed in Lightning 2.0 and is not supported: {_REMOVED_ARGUMENTS[name]}."
                )
            raise TypeError(f"Trainer.__init__() got an unexpected keyword argument {name!r}.")

        if gpus is not None:  # the 1.x form: Trainer(gpus=N)
            if accelerator not in ("auto", "gpu", "cuda"):
                raise MisconfigurationException(f"Trainer(gpus={gpus!r}) conflicts with accelerator={accelerator!r}.")
            accelerator, devices = "gpu", gpus
            if gpus == 0 or gpus == []:
                accelerator, devices = "cpu", "auto"

        # ---- switches that turn features off
        self.enable_autolog_hparams = enable_autolog_hparams  # False: fit sends no hyperparameters to the loggers
        if model_registry is not None:
            rank_zero_warn(f"Trainer(model_registry={model_registry!r}) is ignored: volt does not upload checkpoints"
                           " to Lightning's model registry (litmodels). ModelCheckpoint writes checkpoints only.")
        self.barebones = barebones
        if barebones:
            _check_barebones(enable_checkpointing=enable_checkpointing, enable_progress_bar=enable_progress_bar,
                             enable_model_summary=enable_model_summary, logger=logger,
                             log_every_n_steps=log_every_n_steps, num_sanity_val_steps=num_sanity_val_steps,
                             fast_dev_run=fast_dev_run, detect_anomaly=detect_anomaly, profiler=profiler)
            enable_checkpointing = enable_progress_bar = enable_model_summary = logger = False
            log_every_n_steps = num_sanity_val_steps = 0
        fast_dev_run = _check_fast_dev_run(fast_dev_run)
        self.fast_dev_run = True if fast_dev_run == 1 else fast_dev_run  # as Lightning: True for one batch

        # ---- loop limits
        for name, value, minimum, optional in (
                ("max_epochs", max_epochs, -1, True), ("min_epochs", min_epochs, 0, True),
                ("max_steps", max_steps, -1, False), ("min_steps", min_steps, 0, True),
                ("accumulate_grad_batches", accumulate_grad_batches, 1, False),
                ("log_every_n_steps", log_every_n_steps, 0, True), ("num_sanity_val_steps", num_sanity_val_steps, -1, True),
                ("check_val_every_n_epoch", check_val_every_n_epoch, 1, True),
                ("reload_dataloaders_every_n_epochs", reload_dataloaders_every_n_epochs, 0, False)):
            if value is not None or not optional:
                _check_int(name, value, minimum, optional)
        self.max_epochs = max_epochs  # None: decided when fit starts (`_default_max_epochs`), as in Lightning
        self.min_epochs = min_epochs
        self.max_steps = max_steps
        self.min_steps = min_steps
        self.limit_train_batches = _batch_limit("limit_train_batches", limit_train_batches)
        self.limit_val_batches = _batch_limit("limit_val_batches", limit_val_batches)
        self.limit_test_batches = _batch_limit("limit_test_batches", limit_test_batches)
        self.limit_predict_batches = _batch_limit("limit_predict_batches", limit_predict_batches)
        self.val_check_interval, self._val_check_seconds = _val_check_interval(val_check_interval)
        if check_val_every_n_epoch is None and isinstance(val_check_interval, float):
            raise MisconfigurationException(
                "`val_check_interval` should be an integer or a time-based duration (str 'DD:HH:MM:SS', "
                "datetime.timedelta, or dict kwargs for timedelta) when `check_val_every_n_epoch=None`. A fraction of "
                f"an epoch ({val_check_interval}) needs epochs to count in."
            )
        self.check_val_every_n_epoch = check_val_every_n_epoch
        # -1 (every batch) is stored as inf, as Lightning does
        self.num_sanity_val_steps = {None: 2, -1: math.inf}.get(num_sanity_val_steps, num_sanity_val_steps)
        if self.fast_dev_run:
            self._set_fast_dev_run_limits(int(self.fast_dev_run))
        self.overfit_batches = _batch_limit("overfit_batches", overfit_batches)
        if self.overfit_batches:  # as Lightning: the same batches for training and validation, even in fast_dev_run
            self.limit_train_batches = self.limit_val_batches = self.overfit_batches
            rank_zero_info("`overfit_batches` is set: training uses the first batches in order, without shuffling.")
        self.log_every_n_steps = 50 if log_every_n_steps is None else log_every_n_steps
        self.accumulate_grad_batches = accumulate_grad_batches
        if gradient_clip_val is not None and (isinstance(gradient_clip_val, bool)
                                              or not isinstance(gradient_clip_val, (int, float))):
            raise TypeError(f"`Trainer(gradient_clip_val={gradient_clip_val!r})` is invalid: `gradient_clip_val` "
                            "should be an int or a float (the norm or value to clip gradients at), or None.")
        self.gradient_clip_val = gradient_clip_val
        if gradient_clip_algorithm is not None and str(gradient_clip_algorithm).lower() not in ("norm", "value"):
            raise MisconfigurationException(
                f"`gradient_clip_algorithm` {gradient_clip_algorithm} is invalid "
                f"(`Trainer(gradient_clip_algorithm={gradient_clip_algorithm!r})`). "
                "Allowed algorithms: 'norm', 'value'."
            )
        # None when not given (clipping then uses "norm"), as Lightning
        self.gradient_clip_algorithm = None if gradient_clip_algorithm is None else str(gradient_clip_algorithm).lower()
        self.inference_mode = inference_mode
        self.detect_anomaly = detect_anomaly
        self.reload_dataloaders_every_n_epochs = reload_dataloaders_every_n_epochs
        self.use_distributed_sampler = use_distributed_sampler
        self.deterministic = deterministic
        self.benchmark = benchmark
        self._default_root_dir = os.fspath(default_root_dir) if default_root_dir is not None else None
        plugins = parse_plugins(plugins, precision)  # precision, cluster environment, checkpoint I/O, layer sync
        self.sync_batchnorm = sync_batchnorm or plugins.layer_sync is not None
        self.profiler = make_profiler(profiler)  # PassThroughProfiler when none is asked for, as in Lightning
        self._compile_options = compile_options(compile)  # volt extension: torch.compile the module's steps
        self._compiler: Optional[Callable] = None
        _configure_determinism(deterministic, benchmark)

        # ---- hardware, precision
        self._accelerator_flag = accelerator
        self.strategy = select_strategy(strategy, accelerator, devices, num_nodes, plugins.cluster_environment)
        _warn_unused_gpu(self.strategy.root_device.type)
        # a plain attribute, not a property: the training step reads it
        self.precision_plugin = _choose_precision(precision, plugins.precision, self.strategy)
        self.precision = self.precision_plugin.precision
        self.strategy.precision_plugin = self.precision_plugin
        if plugins.checkpoint_io is not None:
            self.strategy.checkpoint_io = plugins.checkpoint_io

        # ---- state
        from volt.trainer.states import TrainerState  # its enums cost ~1.5 ms: paid by the first Trainer, not the import

        self.state = TrainerState()
        self.should_stop = False
        self.fit_loop = FitLoop(self)
        self.validate_loop = EvalLoop(self, "validate")
        self.test_loop = EvalLoop(self, "test")
        self.predict_loop = EvalLoop(self, "predict")
        # self.log storage of the running call (trainer/results.py); a new one per call. This first one holds the
        # metric dicts before any call, so that what is written into `trainer.callback_metrics` stays there
        self._results = Results(self)
        self._call_loops: Tuple[Any, ...] = ()  # the loops of the running (or last) call
        self._hooks: Optional[Hooks] = None  # hook dispatch of the running call (trainer/hooks.py)
        self._checkpoints = Checkpoints(self)  # what checkpoints hold and how they come back (checkpointing.py)
        self._position = LoopPosition(self)  # where the loops are, for multi-process stall reports
        self.datamodule: Optional[LightningDataModule] = None
        self.lr_scheduler_configs: list = []
        self.ckpt_path: Optional[str] = None
        # SIGTERM / Ctrl-C / requeue during fit: a graceful stop (trainer/signals.py)
        self._signals = StopSignals(plugins.cluster_environment)

        # ---- callbacks and loggers
        self.enable_checkpointing = enable_checkpointing is not False
        self.enable_progress_bar = enable_progress_bar is not False
        self.enable_model_summary = enable_model_summary is not False
        self.callbacks: List[Callback] = _build_callbacks(
            callbacks, self.enable_checkpointing, self.enable_progress_bar, self.enable_model_summary, max_time
        )
        self.loggers = _build_loggers(logger, self.default_root_dir, bool(self.fast_dev_run))

    def _default_max_epochs(self, warn: bool = False) -> int:
        """What fit runs without `max_epochs` (decided when it starts, as in Lightning): 1000 epochs, unless
        `max_steps` or a Timer (`max_time`) ends it; then no epoch limit (-1)."""
        from volt.callbacks.timer import Timer

        if self.max_steps != -1 or any(isinstance(callback, Timer) for callback in self.callbacks):
            return -1
        if warn:
            rank_zero_warn("`max_epochs` was not set. Setting it to 1000 epochs. To train without an epoch limit, set "
                           "`max_epochs=-1`.", category=PossibleUserWarning)
        return 1000

    def _set_fast_dev_run_limits(self, batches: int) -> None:
        """`fast_dev_run=n`: n batches of each stage in one epoch, no sanity check, validation after the epoch (the
        limits given are overridden, as Lightning does); the loggers are replaced by a DummyLogger."""
        self.limit_train_batches = self.limit_val_batches = batches
        self.limit_test_batches = self.limit_predict_batches = batches
        self.max_epochs, self.max_steps, self.num_sanity_val_steps = 1, batches, 0
        self.val_check_interval, self._val_check_seconds, self.check_val_every_n_epoch = 1.0, None, 1
        rank_zero_info(f"Running in `fast_dev_run` mode: will run the requested loop using {batches} batch(es). "
                       "Logging and checkpointing is suppressed.")

    # ================================================================== entry points
    def fit(self, model: LightningModule, train_dataloaders=None, val_dataloaders=None,
            datamodule: Optional[LightningDataModule] = None, ckpt_path: Optional[Union[str, os.PathLike]] = None,
            weights_only: Optional[bool] = None) -> None:
        """Train `model`; resume from `ckpt_path` (a path, "last", "best" or "hpc") when given.

        Checkpoints load safely (plain data only); pass `weights_only=False` only for a file you trust.
        """
        if isinstance(train_dataloaders, LightningDataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        _check_data_args(train_dataloaders, val_dataloaders, datamodule, "fit")
        self.fit_loop.train_source = train_dataloaders
        self.fit_loop.val_loop.source = val_dataloaders
        self._launch("fit", model, datamodule, ckpt_path, weights_only)

    def validate(self, model: Optional[LightningModule] = None, dataloaders=None, ckpt_path=None,
                 verbose: bool = True, datamodule: Optional[LightningDataModule] = None,
                 weights_only: Optional[bool] = None) -> List[Dict[str, float]]:
        """Run the validation loop once; returns one dict of epoch metrics per dataloader."""
        return self._evaluate("validate", model, dataloaders, ckpt_path, verbose, datamodule, weights_only)

    def test(self, model: Optional[LightningModule] = None, dataloaders=None, ckpt_path=None,
             verbose: bool = True, datamodule: Optional[LightningDataModule] = None,
             weights_only: Optional[bool] = None) -> List[Dict[str, float]]:
        """Run the test loop once; returns one dict of epoch metrics per dataloader."""
        return self._evaluate("test", model, dataloaders, ckpt_path, verbose, datamodule, weights_only)

    def predict(self, model: Optional[LightningModule] = None, dataloaders=None,
                datamodule: Optional[LightningDataModule] = None, return_predictions: Optional[bool] = None,
                ckpt_path=None, weights_only: Optional[bool] = None) -> Optional[list]:
        """Run `predict_step` over the predict dataloader(s); returns the outputs (a list per dataloader)."""
        # as Lightning: a spawning strategy keeps none by default (only rank 0's would come back), and refuses to
        # keep them (in the ranks, so that the error is the ProcessRaisedException of a spawned rank's failure)
        spawns = self.strategy.launches_in_child_processes
        self.predict_loop.return_predictions = not spawns if return_predictions is None else return_predictions
        self._evaluate("predict", model, dataloaders, ckpt_path, False, datamodule, weights_only)
        if not self.predict_loop.return_predictions:
            return None
        return self.predict_loop.predictions

    def _evaluate(self, stage, model, dataloaders, ckpt_path, verbose, datamodule, weights_only):
        """validate/test/predict: the arguments, then `_launch`; prints the results table."""
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        if dataloaders is not None and datamodule is not None:
            raise MisconfigurationException(
                f"You cannot pass both `{stage}(dataloaders=..., datamodule=...)`, choose one."
            )
        if model is None:
            if self.lightning_module is None:
                raise TypeError(f"`Trainer.{stage}()` requires a `LightningModule` when none is attached from an "
                                f"earlier call: pass `trainer.{stage}(model, ...)`.")
            model = self.lightning_module
            if ckpt_path is None:  # as Lightning: without a model, use the best checkpoint of the last fit
                on_exception = any(isinstance(c, OnExceptionCheckpoint) for c in self.callbacks)
                tip = (" There is also an on-exception checkpoint available, however it is used by default only when "
                       "fitting." if on_exception else "")
                rank_zero_warn(
                    f"`.{stage}(ckpt_path=None)` was called without a model. The best model of the previous `fit` "
                    f"call will be used.{tip} You can pass `.{stage}(ckpt_path='best')` to use the best model or "
                    f"`.{stage}(ckpt_path='last')` to use the last model. If you pass a value, this warning will be "
                    "silenced."
                )
                ckpt_path = "best"
        loop = self._eval_loop(stage)
        loop.source = dataloaders
        loop.loaders = None
        datamodule = datamodule or (self.datamodule if model is self.lightning_module else None)
        results = self._launch(stage, model, datamodule, ckpt_path, weights_only)
        if verbose and stage != "predict" and self.is_global_zero:
            _print_results(stage, results)
        return results

    def _eval_loop(self, stage: str) -> EvalLoop:
        return {"validate": self.validate_loop, "test": self.test_loop, "predict": self.predict_loop}[stage]

    # ================================================================== the run
    # `_launch` (in the calling process) -> the strategy starts the ranks -> `_run_in_process` (each rank:
    # failures and cleanup) -> `_run_stage` (setup, restore, the loop, teardown, in Lightning's hook order).
    def _launch(self, fn: str, model: LightningModule, datamodule, ckpt_path, weights_only):
        """Check the model, attach it, and run the stage in every process the strategy starts."""
        model, self._compiler = resolve_compiled(model, self._compile_options)  # torch.compile(model): its module
        _check_model(fn, model, self)
        drop_unpicklable_hparams(model.hparams)
        if fn == "fit" and self.max_epochs is None:
            self.max_epochs = self._default_max_epochs(warn=True)
        self.state.fn, self.state.status = fn, "running"
        self.state.stage = {"fit": "train"}.get(fn, fn)
        self.should_stop = False
        # as Lightning, the `*_dataloaders` properties show only the loaders of this call's loops
        self._call_loops = (self.fit_loop, self.fit_loop.val_loop) if fn == "fit" else (self._eval_loop(fn),)
        self.strategy.connect(model)  # `trainer.lightning_module` from now on
        self.datamodule = datamodule
        model.trainer = self
        if datamodule is not None:
            datamodule.trainer = self
        if fn == "fit":
            self._check_validation_parts(model, datamodule)
        self.strategy.position_source = self._position
        self._results = Results(self)
        if self.strategy.launches_in_child_processes:
            try:
                payload = self.strategy.launch(self._run_in_spawned_rank, fn, model, datamodule, ckpt_path,
                                               weights_only)
            except BaseException as exception:  # as Lightning: the launching process's callbacks hear of it too
                self.state.status = "interrupted"
                Hooks(self, self.callbacks, model, datamodule).call("on_exception", exception)
                self.strategy.on_exception(exception)
                raise
            return apply_results(self, payload)
        return self.strategy.launch(self._run_in_process, fn, model, datamodule, ckpt_path, weights_only)

    def _run_in_spawned_rank(self, fn, *args):
        if fn == "predict" and self.predict_loop.return_predictions:
            raise MisconfigurationException(
                "`return_predictions` should be set to `False` when using the strategies that spawn processes: only "
                "rank 0's predictions would come back. Pass `return_predictions=False` and write the predictions "
                "with a `BasePredictionWriter` callback, or use strategy='ddp'.")
        return collect_results(self, self._run_in_process(fn, *args))

    def _run_in_process(self, fn, model, datamodule, ckpt_path, weights_only):
        """This process's run of the stage: hook dispatch, profiler and stop signals around `_run_stage`; on a
        failure, the exception hooks, failed loggers and teardown. A KeyboardInterrupt ends in SystemExit(1) after
        them, as in Lightning."""
        callbacks = self._merge_model_callbacks(model)
        self._hooks = hooks = (ProfiledHooks if self._profiling else Hooks)(self, callbacks, model, datamodule)
        if self._profiling:
            self.profiler.reset()
        anomaly = torch.autograd.detect_anomaly(check_nan=True) if self.detect_anomaly else nullcontext()
        if fn == "fit":
            self._signals.install(self.strategy.stop_coordinator(lambda: self.fit_loop.state.total_batch_idx))
        try:
            with anomaly:
                return self._run_stage(fn, model, datamodule, ckpt_path, weights_only)
        except _TunerExitException:  # a `Tuner` search is done (volt/tuner): end the call before anything runs
            hooks.call("teardown", self.state.fn)
            self.strategy.teardown()
            self.state.status, self.state.stage = "finished", None
            return None
        except BaseException as exception:
            self.state.status = "interrupted"
            if isinstance(exception, KeyboardInterrupt):
                rank_zero_info("Detected KeyboardInterrupt, attempting graceful shutdown ...")
            self._checkpoints.finish_writes(failure=exception)  # a background write completes (or is noted)
            hooks.call("on_exception", exception)
            self.strategy.on_exception(exception)
            with suppress(Exception):  # rows whose values can no longer be read (a failed device) are dropped
                self._results.flush_logger_writes()
            for logger in self.loggers:
                logger.finalize("failed")
            self.strategy.teardown()
            if isinstance(exception, KeyboardInterrupt):
                raise SystemExit(1) from exception
            raise
        finally:
            loops = (self.fit_loop.val_loop, self.validate_loop, self.test_loop, self.predict_loop)
            for loader in [self.fit_loop.train_loader] + [ld for loop in loops for ld in loop.loaders or []]:
                shutdown_workers(loader)
            if fn == "fit":
                self._signals.restore()
            if self._profiling:
                self.profiler.teardown(fn)

    def _run_stage(self, fn, model, datamodule, ckpt_path, weights_only):
        hooks, checkpoints = self._hooks, self._checkpoints
        self.strategy.setup_environment()
        # the checkpoint first: "last" may pick the logger version to continue, and a resumed fit's loggers continue
        # their runs, before the callbacks' setup reads their folders (unless the strategy reads it after its setup)
        ckpt_path = checkpoints.resolve(fn, ckpt_path)
        read_late = self.strategy.restore_checkpoint_after_setup
        checkpoint = None if read_late else self._read_checkpoint(fn, ckpt_path, weights_only)
        if fn == "fit" and self.is_global_zero:  # a folder no log can be written to: say so now, not after an epoch
            from volt.checkpoint import check_writable_folder  # volt.checkpoint is not loaded by `import volt`

            for logger in self.loggers:
                if isinstance(logger.log_dir, str):
                    check_writable_folder(logger.log_dir, f"The log folder of {type(logger).__name__}")
        if self._profiling:
            self.profiler.lightning_module = model
            self.profiler.setup(stage=fn, local_rank=self.local_rank if self.world_size > 1 else None,
                                log_dir=self.log_dir)
        # 1. data preparation and setup
        if self.local_rank == 0:
            hooks.call("prepare_data")
        self.strategy.barrier("prepare_data")
        hooks.call("setup", self.state.fn)  # the TrainerFn member (a str), as Lightning
        if _overrides_sharded_model(model):  # the 1.x name, first
            hooks.call("configure_sharded_model")
        if implements(model, LightningModule, "configure_model"):  # on the device, in the precision's dtype
            with self.strategy.tensor_init_context():
                hooks.call("configure_model")
        self.strategy.setup(self)  # the precision's conversion, then the device (and the DDP/FSDP wrapper)
        if read_late:
            checkpoint = self._read_checkpoint(fn, ckpt_path, weights_only)
        if self._compiler is not None:
            compile_steps(model, self._compiler)

        # 2. what comes back before the optimizers exist
        if checkpoint is not None:
            checkpoints.restore_before_optimizers(checkpoint)

        # 3. optimizers, fit start, then the rest of the checkpoint, then the loop
        if fn == "fit":
            self.optimizers, self.lr_scheduler_configs = configure_optimizers(hooks)
            if self.enable_autolog_hparams:
                self._results.log_hyperparams(model, datamodule)
            hooks.call("on_fit_start")
            model.zero_grad()  # as Lightning, at the start of every stage (a resume's pending gradients come next)
            if checkpoint is not None:
                checkpoints.restore_training_state(checkpoint)
            self.fit_loop.run()
            checkpoints.finish_writes()  # background checkpoint writes are durable before on_fit_end
            self.state.stage = None
            hooks.call("on_fit_end")
            result = None
        else:
            if self.enable_autolog_hparams:  # as Lightning, every stage: TensorBoard's hp_metric placeholder in each
                self._results.log_hyperparams(model, datamodule)
            loop = self._eval_loop(fn)
            loop.loaders = None
            model.zero_grad()
            result = loop.run()
        hooks.call("teardown", self.state.fn)
        self._results.flush_logger_writes()
        for logger in self.loggers:
            logger.finalize("success")
        if self._profiling:  # every rank, as Lightning: a report file per rank (`filename`); only rank 0 logs one
            self.profiler.describe(fn)
        self.strategy.teardown()
        self.state.status = "finished"
        return result

    def _read_checkpoint(self, fn: str, ckpt_path: Optional[str], weights_only: Optional[bool]):
        """The checkpoint at `ckpt_path` (None without one); a resumed fit's loggers continue from it at once,
        before anything is logged."""
        checkpoint = self._checkpoints.load(ckpt_path, weights_only)
        if checkpoint is not None and fn == "fit":
            self._checkpoints.restore_loggers(checkpoint)
        return checkpoint

    def _check_validation_parts(self, model: LightningModule, datamodule) -> None:
        """Validation during fit needs a `validation_step` and validation data: with one but not the other it is
        skipped, and Lightning says so."""
        has_step = implements(model, LightningModule, "validation_step")
        has_data = (self.fit_loop.val_loop.source is not None
                    or implements(model, LightningModule, "val_dataloader")
                    or (datamodule is not None and implements(datamodule, LightningDataModule, "val_dataloader")))
        if has_data and not has_step:
            rank_zero_warn("You passed in a `val_dataloader` but have no `validation_step`. Skipping val loop.")
        if has_step and not has_data:
            rank_zero_warn("You defined a `validation_step` but have no `val_dataloader`. Skipping val loop.")

    def _merge_model_callbacks(self, model) -> List[Callback]:
        """Callbacks from `configure_callbacks` replace Trainer callbacks of the same type; checkpoints go last."""
        extra = []
        if implements(model, LightningModule, "configure_callbacks"):
            model._current_fx_name = "configure_callbacks"  # `self.log` there is refused naming the hook
            try:
                extra = model.configure_callbacks()
            finally:
                model._current_fx_name = None
        extra = [extra] if isinstance(extra, Callback) else list(extra or [])
        if extra:
            types = {type(cb) for cb in extra}
            self.callbacks = [cb for cb in self.callbacks if type(cb) not in types] + extra
        from volt.callbacks.model_checkpoint import ModelCheckpoint

        self.callbacks = [cb for cb in self.callbacks if not isinstance(cb, ModelCheckpoint)] + [
            cb for cb in self.callbacks if isinstance(cb, ModelCheckpoint)]
        return self.callbacks

    # ================================================================== checkpoints (volt/trainer/checkpointing.py)
    def save_checkpoint(self, filepath: Union[str, os.PathLike], weights_only: bool = False,
                        storage_options: Any = None) -> None:
        """Write a checkpoint now, atomically (every rank calls it; rank 0 writes, through
        `strategy.checkpoint_io`, which receives `storage_options`). Written from inside a batch, it records the loop
        mid-batch: a run resumed from it continues with the next batch."""
        if self.lightning_module is None:
            raise AttributeError(
                "Saving a checkpoint is only possible if a model is attached to the Trainer. Did you call "
                "`Trainer.save_checkpoint()` before calling `Trainer.{fit,validate,test,predict}`?"
            )
        self._checkpoints.save(filepath, weights_only, storage_options=storage_options)

    def schedule_checkpoint(self, filepath: Union[str, os.PathLike], weights_only: bool = False,
                            background: bool = False) -> None:
        """Write a checkpoint at the fit loop's next checkpoint point, once the running batch or epoch end is
        complete, so that a run resumed from it continues exactly (at once when none is running), by calling
        `self.save_checkpoint(filepath, weights_only)` there. ModelCheckpoint saves this way. `background=True`: copy it there and write the copy in a thread while training goes on
        (at most one such write in flight; the next save and the end of fit wait for it)."""
        self._checkpoints.schedule(filepath, weights_only, background)

    @contextmanager
    def init_module(self, empty_init: Optional[bool] = None) -> Iterator[None]:
        """Modules created in this block get their tensors on the Trainer's device and, for the true precisions
        ("64-true", "16-true", "bf16-true"), in its dtype, with no copy made first. `empty_init=True` also skips
        their initialisation (uninitialised memory, for weights a checkpoint will replace).

            with trainer.init_module():
                model = MyModel()
        """
        with self.strategy.tensor_init_context(empty_init):  # with the precision plugin's dtype
            yield

    def trial_run(self, callbacks: Iterable[Callback] = ()) -> "TrialRun":
        """A `with` block of throwaway training steps or evaluation batches inside the running call, seen only by
        `callbacks` and logged nowhere, after which weights, optimizer, RNG, loop position and metrics are as they
        were: the tuner's searches run in it (volt/trainer/trial.py)."""
        from volt.trainer.trial import TrialRun

        return TrialRun(self, callbacks)

    def at_checkpoint_point(self, fn: Callable[[], None]) -> None:
        """Run `fn()` at the fit loop's next checkpoint point, once the checkpoints scheduled before it are durable
        (at once when no batch or epoch end is running): for file work that must follow them, such as pointing a
        `last` link at a new file or deleting files that dropped out of the top k. After a background write, `fn`
        runs in the writer's thread when the write is done, so it must not call collectives."""
        self.fit_loop.at_checkpoint_point(lambda: self._checkpoints.after_writes(fn))

    def __getstate__(self) -> Dict[str, Any]:
        # the module goes along by name: when this Trainer is restored, its strategy may not be yet
        return {**self.__dict__, "_module": self.lightning_module}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        # A module pickles without its Trainer link (as in Lightning); a Trainer sent to another process with its
        # module (ddp_spawn) links them again there.
        state = dict(state)
        module = state.pop("_module", None)
        self.__dict__.update(state)
        if module is not None:
            module.trainer = self

    # ================================================================== properties users read
    @property
    def lightning_module(self) -> Optional[LightningModule]:
        """The module of the current (or last) call: the strategy's, as in Lightning (`strategy.connect(model)`)."""
        return self.strategy.lightning_module

    @property
    def current_epoch(self) -> int:
        return self.fit_loop.state.epoch

    @property
    def global_step(self) -> int:
        return self.fit_loop.state.global_step

    @property
    def default_root_dir(self) -> str:
        if self._default_root_dir is None:
            return os.getcwd()
        if "://" in self._default_root_dir:  # a remote (fsspec) folder, as given
            return self._default_root_dir
        return os.path.normpath(os.path.expanduser(self._default_root_dir))

    @property
    def callback_metrics(self) -> Dict[str, torch.Tensor]:
        return self._results.callback_metrics

    @property
    def logged_metrics(self) -> Dict[str, torch.Tensor]:
        return self._results.logged_metrics

    @property
    def progress_bar_metrics(self) -> Dict[str, float]:
        """The `prog_bar=True` values as Python numbers, as in Lightning: made when read, so reading them waits for
        the device (a progress bar reads `progress_bar_tensors` instead)."""
        return {name: value.item() if isinstance(value, torch.Tensor) else value
                for name, value in self._results.progress_bar_metrics.items()}

    @property
    def progress_bar_tensors(self) -> Dict[str, torch.Tensor]:
        """volt's: the values of `progress_bar_metrics` as they are logged, detached tensors on their device, for a
        bar that copies them to the host without waiting for the device."""
        return self._results.progress_bar_metrics

    @property
    def model(self):
        return self.strategy.model

    @property
    def logger(self):
        return self.loggers[0] if self.loggers else None

    @logger.setter
    def logger(self, logger) -> None:
        self.loggers = [logger] if logger else []

    @property
    def loggers(self) -> list:
        return self._loggers

    @loggers.setter
    def loggers(self, loggers) -> None:
        self._loggers = list(loggers) if loggers else []  # None: no loggers, as Lightning

    @property
    def log_dir(self) -> Optional[str]:
        if not self.loggers:
            return self.default_root_dir
        logger = self.loggers[0]
        return logger.log_dir if getattr(logger, "log_dir", None) is not None else logger.save_dir

    @property
    def checkpoint_callbacks(self) -> list:
        from volt.callbacks.model_checkpoint import ModelCheckpoint

        return [cb for cb in self.callbacks if isinstance(cb, ModelCheckpoint)]

    @property
    def checkpoint_callback(self):
        callbacks = self.checkpoint_callbacks
        return callbacks[0] if callbacks else None

    @property
    def early_stopping_callbacks(self) -> list:
        from volt.callbacks.early_stopping import EarlyStopping

        return [cb for cb in self.callbacks if isinstance(cb, EarlyStopping)]

    @property
    def early_stopping_callback(self):
        callbacks = self.early_stopping_callbacks
        return callbacks[0] if callbacks else None

    @property
    def progress_bar_callback(self):
        from volt.callbacks.progress import ProgressBar

        for callback in self.callbacks:
            if isinstance(callback, ProgressBar):
                return callback
        return None

    @property
    def training(self) -> bool:
        return self.state.stage == "train"

    @training.setter
    def training(self, value: bool) -> None:
        if value:
            self.state.stage = "train"

    @property
    def sanity_checking(self) -> bool:
        return self.state.stage == "sanity_check"

    @property
    def validating(self) -> bool:
        return self.state.stage == "validate"

    @property
    def testing(self) -> bool:
        return self.state.stage == "test"

    @property
    def predicting(self) -> bool:
        return self.state.stage == "predict"

    @property
    def interrupted(self) -> bool:
        return self.state.status == "interrupted"

    @property
    def received_sigterm(self) -> bool:
        """Whether this process got SIGTERM during the last `fit` (which then stopped gracefully)."""
        return self._signals.received_sigterm

    @property
    def enable_validation(self) -> bool:
        """Whether fit validates: a validation dataloader (argument or hook), a `validation_step` and
        `limit_val_batches` above 0."""
        module, datamodule = self.lightning_module, self.datamodule
        if module is None or not self.limit_val_batches or not implements(module, LightningModule, "validation_step"):
            return False
        return (self.fit_loop.val_loop.source is not None or implements(module, LightningModule, "val_dataloader")
                or (datamodule is not None and implements(datamodule, LightningDataModule, "val_dataloader")))

    @property
    def num_training_batches(self) -> Union[int, float]:
        return self.fit_loop.num_training_batches

    @property
    def num_val_batches(self) -> list:
        loop = self.fit_loop.val_loop if self.state.fn == "fit" else self.validate_loop
        return list(loop.shown_num_batches)

    @property
    def num_sanity_val_batches(self) -> list:
        steps = self.num_sanity_val_steps  # fit's validation loaders alone, as in Lightning
        return [min(steps, b) for b in self.fit_loop.val_loop.shown_num_batches]

    @property
    def num_test_batches(self) -> list:
        return list(self.test_loop.shown_num_batches)

    @property
    def num_predict_batches(self) -> list:
        return list(self.predict_loop.shown_num_batches)

    @property
    def val_check_batch(self) -> float:
        return self.fit_loop.val_check_batch

    @property
    def estimated_stepping_batches(self) -> Union[int, float]:
        """Optimizer steps the whole fit will take (for schedulers like OneCycleLR)."""
        if self.fit_loop.train_loader is None:
            self.fit_loop.setup_train_data()
        batches = self.num_training_batches
        if batches == math.inf:
            return self.max_steps if self.max_steps != -1 else math.inf
        per_epoch = math.ceil(batches / self.accumulate_grad_batches)
        max_epochs = self.max_epochs if self.max_epochs is not None else self._default_max_epochs()
        if max_epochs == -1:
            return self.max_steps if self.max_steps != -1 else math.inf
        total = per_epoch * max_epochs
        return min(total, self.max_steps) if self.max_steps != -1 else total

    @property
    def num_nodes(self) -> int:
        """Nodes in the job (as the cluster environment reports it under torchrun or SLURM)."""
        return self.strategy.num_nodes

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def node_rank(self) -> int:
        return self.strategy.node_rank

    @property
    def _profiling(self) -> bool:
        """Whether the profiler records anything: the default PassThroughProfiler does not, so hooks run unwrapped."""
        return type(self.profiler) is not PassThroughProfiler

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def num_devices(self) -> int:
        return len(getattr(self.strategy, "parallel_devices", None) or [self.strategy.root_device])

    @property
    def device_ids(self) -> list:
        """The device indices of this node (CPU processes count from 0), as in Lightning."""
        devices = getattr(self.strategy, "parallel_devices", None) or [self.strategy.root_device]
        return [device.index or position for position, device in enumerate(devices)]

    @property
    def accelerator(self):
        """The Accelerator in use (the instance passed as `accelerator=`, else one for the device type)."""
        from volt.accelerators import accelerator_for

        return accelerator_for(self._accelerator_flag, self.strategy.root_device.type)

    @property
    def scaler(self):
        return self.precision_plugin.scaler

    @property
    def optimizers(self) -> List[torch.optim.Optimizer]:
        """The optimizers `configure_optimizers` returned (the strategy holds them, as in Lightning)."""
        return self.strategy.optimizers

    @optimizers.setter
    def optimizers(self, optimizers: List[torch.optim.Optimizer]) -> None:
        """Replace the optimizers (also from a callback, as in Lightning): `self.optimizers()` gives the new ones."""
        self.strategy.optimizers = [opt.optimizer if isinstance(opt, LightningOptimizer) else opt for opt in optimizers]
        self.strategy._lightning_optimizers = [LightningOptimizer(opt, self) for opt in self.strategy.optimizers]

    @property
    def lr_schedulers(self) -> list:
        return [config.scheduler for config in self.lr_scheduler_configs]

    @property
    def train_dataloader(self):
        return self._shown_loaders(self.fit_loop)

    @property
    def val_dataloaders(self):
        fit_validates = self.fit_loop.val_loop in self._call_loops
        return self._shown_loaders(self.fit_loop.val_loop if fit_validates else self.validate_loop)

    @property
    def test_dataloaders(self):
        return self._shown_loaders(self.test_loop)

    @property
    def predict_dataloaders(self):
        return self._shown_loaders(self.predict_loop)

    def _shown_loaders(self, loop):
        """A loop's loaders as its `*_dataloaders` property shows them: None unless the last call ran that loop."""
        if loop not in self._call_loops:
            return None
        return loop.shown_loaders if loop is self.fit_loop or loop.loaders else loop.loaders


# ====================================================================== construction helpers
_MINUS_ONE_MEANS = {"max_epochs": " (-1: no limit)", "max_steps": " (-1: no limit)",
                    "num_sanity_val_steps": " (-1: all batches)"}


_INT_KINDS = {-1: "a non-negative integer or -1", 0: "a non-negative integer", 1: "a positive integer"}
_INT_WORDING = {"reload_dataloaders_every_n_epochs": "should be an int >= 0"}  # Lightning's, which tests match


def _check_int(name: str, value: Any, minimum: int, optional: bool = False) -> None:
    """An integer argument at or above `minimum` (Lightning's wording inside, which users' tests match)."""
    if isinstance(value, bool) or not isinstance(value, int):
        wrong = "should be an integer"
    elif value < minimum:
        wrong = f"must be {_INT_KINDS[minimum]}"
    else:
        return
    wrong = _INT_WORDING.get(name, wrong)
    raise MisconfigurationException(f"`Trainer({name}={value!r})` is invalid: `{name}` {wrong}"
                                    f"{_MINUS_ONE_MEANS.get(name, '')}{', or None' if optional else ''}.")


_BAREBONES_OFF = {"enable_checkpointing": "Checkpointing", "enable_progress_bar": "The progress bar",
                  "enable_model_summary": "The model summary", "logger": "Logging", "log_every_n_steps": "Logging",
                  "num_sanity_val_steps": "Sanity checking", "fast_dev_run": "The development run",
                  "detect_anomaly": "Anomaly detection", "profiler": "Profiling"}


def _check_barebones(**values: Any) -> None:
    """`barebones=True` turns off everything that costs speed: a value asking for one of them is refused, as in
    Lightning."""
    for name, value in values.items():
        if value is not None and value is not False and not (isinstance(value, int) and value == 0):
            raise ValueError(
                f"`Trainer(barebones=True, {name}={value!r})` was passed. {_BAREBONES_OFF[name]} can impact raw speed "
                f"so it is disabled in barebones mode: remove `{name}={value!r}` or `barebones=True`."
            )
    rank_zero_info("You are running in `Trainer(barebones=True)` mode: everything that may impact raw speed is off "
                   "(checkpointing, progress bar, model summary, logging and `self.log`, sanity check, development "
                   "run, anomaly detection, profiling).")


def _batch_limit(name: str, value: Any) -> Union[int, float]:
    """A `limit_*_batches` (or `overfit_batches`, numeric `val_check_interval`) value: a fraction in [0.0, 1.0] or
    a number of batches (a whole float counts as one, as in Lightning); None is 1.0. An explicit 1 or 1.0 is
    logged with what it means, as Lightning does (the two are easily confused)."""
    if value is None:
        return 1.0
    if value == 1 and type(value) in (int, float):
        what = {"limit_train_batches": ("1 batch per epoch", "100% of the batches per epoch"),
                "val_check_interval": ("validation will run after every batch",
                                       "validation will run at the end of the training epoch")}
        one, all_ = what.get(name, ("1 batch", "100% of the batches"))
        if name != "val_check_interval":
            one, all_ = f"{one} will be used", f"{all_} will be used"
        rank_zero_info(f"`Trainer({name}={value})` was configured so {one if isinstance(value, int) else all_}.")
    if not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 0:
        if isinstance(value, int) or value <= 1.0:
            return value
        if value % 1.0 == 0:
            return int(value)
    raise MisconfigurationException(
        f"You have passed invalid value {value!r} for `{name}`: `Trainer({name}={value!r})` must be a fraction of the "
        "batches in [0.0, 1.0] or an int number of batches.")


def _val_check_interval(value: Any) -> Tuple[Any, Optional[float]]:
    """(`val_check_interval`, its seconds when it is a duration). A fraction of the epoch in (0.0, 1.0], a number
    of batches, or, as in Lightning 2.6, a wall-clock interval: "DD:HH:MM:SS", a `timedelta` or a dict of
    `timedelta` arguments."""
    if value is None:
        return 1.0, None
    if isinstance(value, (str, dict, timedelta)):
        return value, _interval_seconds(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (
            isinstance(value, float) and value > 1.0 and value % 1.0):
        raise MisconfigurationException(
            f"You have passed invalid value {value!r} for `val_check_interval`: `Trainer(val_check_interval={value!r})` "
            "must be a fraction of the epoch in (0.0, 1.0], an int number of batches, or a duration: 'DD:HH:MM:SS', a "
            "datetime.timedelta or a dict like {'minutes': 30}.")
    return _batch_limit("val_check_interval", value), None


def _interval_seconds(value: Union[str, dict, timedelta]) -> float:
    """The seconds of a time-based `val_check_interval`."""
    seconds = duration_seconds(value, f"`Trainer(val_check_interval={value!r})`")
    if seconds <= 0:
        raise MisconfigurationException(f"`Trainer(val_check_interval={value!r})` must be a positive duration.")
    return seconds


def _check_fast_dev_run(value: Union[int, bool]) -> int:
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int) or value < 0:
        raise MisconfigurationException(
            f"fast_dev_run={value!r} is not a valid configuration. It should be >= 0: a bool or an int (the number of "
            "batches to run)."
        )
    return value




def _check_model(fn: str, model: Any, trainer: "Trainer") -> None:
    if not isinstance(model, LightningModule):
        raise TypeError(
            f"`Trainer.{fn}`: `model` must be a `LightningModule` (or a `torch.compile` of one), got "
            f"`{type(model).__qualname__}`. Subclass `volt.LightningModule` (or `import volt as pl; pl.LightningModule`)."
        )
    _check_configure_model(model)
    if fn != "fit":
        _check_eval_step(fn, model)
        return
    if not model.automatic_optimization:
        if trainer.gradient_clip_val:
            raise MisconfigurationException(
                "Automatic gradient clipping is not supported for manual optimization. Remove "
                "`Trainer(gradient_clip_val=...)`, or call `self.clip_gradients(opt, ...)` in `training_step`."
            )
        if trainer.accumulate_grad_batches != 1:
            raise MisconfigurationException(
                "Automatic gradient accumulation is not supported for manual optimization. Remove "
                "`Trainer(accumulate_grad_batches=...)` and accumulate in `training_step`."
            )
    if not implements(model, LightningModule, "training_step"):
        raise MisconfigurationException(
            f"No `training_step()` method defined in {type(model).__name__}. `Trainer.fit` needs "
            "`training_step(self, batch, batch_idx)` returning the loss."
        )
    if not implements(model, LightningModule, "configure_optimizers"):
        raise MisconfigurationException(
            f"No `configure_optimizers()` method defined in {type(model).__name__}, so `Trainer.fit` would train "
            "nothing. Return an optimizer from it, e.g. `torch.optim.Adam(self.parameters(), lr=1e-3)`."
        )


def _overrides_sharded_model(model: LightningModule) -> bool:
    """A wrapper (functools.wraps) around the default does not count, as in Lightning."""
    return implements(model, LightningModule, "configure_sharded_model") and not wraps_only_the_default(
        model, LightningModule, "configure_sharded_model")


def _choose_precision(flag: Any, plugin: Optional[Precision], strategy: Strategy) -> Precision:
    """The precision plugin from `precision=`, `plugins=[...]` or the strategy's `precision_plugin=`, whichever was
    given (two that disagree are an error)."""
    own = strategy.precision_plugin
    if own is None or own is plugin:
        return plugin or make_precision(normalize_precision(flag), strategy.root_device)
    if plugin is not None:
        raise MisconfigurationException(
            f"Precision set through both the strategy ({type(strategy).__name__}(precision_plugin="
            f"{type(own).__name__}(...))) and `plugins=[{type(plugin).__name__}(...)]`: pass it in one place only."
        )
    if flag is not None and normalize_precision(flag) != own.precision:
        raise MisconfigurationException(
            f"`Trainer(precision={flag!r})` disagrees with the strategy's precision plugin ({type(own).__name__}, "
            f"precision {own.precision!r}): pass one of them only."
        )
    return own


def _check_configure_model(model: LightningModule) -> None:
    """`configure_sharded_model` is the deprecated name of `configure_model`: it still runs, with a warning; both
    overridden is an error, as in Lightning."""
    if not _overrides_sharded_model(model):
        return
    name = type(model).__name__
    if implements(model, LightningModule, "configure_model"):
        raise RuntimeError(f"Both `{name}.configure_model`, and `{name}.configure_sharded_model` are overridden. The"
                           " latter is deprecated: move its code into `configure_model`.")
    rank_zero_deprecation(f"You have overridden `{name}.configure_sharded_model` which is deprecated. Please override"
                          " the `configure_model` hook instead.")


def _check_eval_step(fn: str, model: LightningModule) -> None:
    """validate/test need the module's step; predict's default step calls `forward`, so it needs one of them."""
    name = {"validate": "validation_step", "test": "test_step", "predict": "predict_step"}[fn]
    if fn == "predict":
        if model.predict_step is None:
            raise MisconfigurationException("`predict_step` cannot be None: `Trainer.predict` needs it, or the "
                                            "default one that calls `forward`.")
        if not implements(model, LightningModule, name) and not implements(model, LightningModule, "forward"):
            raise MisconfigurationException(f"`{type(model).__name__}.predict_step` (the default) requires `forward` "
                                            "method to run: define `forward` or `predict_step`.")
    elif not implements(model, LightningModule, name):
        raise MisconfigurationException(f"No `{name}()` method defined in {type(model).__name__} to run "
                                        f"`Trainer.{fn}`. Define `{name}(self, batch, batch_idx)`.")


def _check_data_args(train, val, datamodule, fn) -> None:
    if datamodule is not None and (train is not None or val is not None):
        raise MisconfigurationException(
            f"You cannot pass `train_dataloader` or `val_dataloaders` to `trainer.{fn}(datamodule=...)`; choose one."
        )
    if datamodule is not None and not isinstance(datamodule, LightningDataModule):
        raise TypeError(f"`datamodule` must be a LightningDataModule, got {type(datamodule).__name__}.")


def _warn_unused_gpu(device_type: str) -> None:
    """As Lightning: a run on the CPU of a machine with a GPU is more often a forgotten `accelerator=` than a choice."""
    from volt.accelerators import CUDAAccelerator, MPSAccelerator

    if ((device_type != "cuda" and CUDAAccelerator.is_available())
            or (device_type != "mps" and MPSAccelerator.is_available())):
        rank_zero_warn("GPU available but not used: this Trainer runs on the CPU. Pass `Trainer(accelerator='gpu')` "
                       "to train on the GPU.", category=PossibleUserWarning)


def _configure_determinism(deterministic, benchmark) -> None:
    if deterministic not in (None, False, True, "warn"):
        raise MisconfigurationException(f"`deterministic={deterministic!r}` must be a bool, 'warn' or None.")
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if benchmark is not None:
        torch.backends.cudnn.benchmark = bool(benchmark)
    elif deterministic:
        torch.backends.cudnn.benchmark = False


def _build_callbacks(callbacks, enable_checkpointing, enable_progress_bar, enable_model_summary, max_time):
    if callbacks is None:
        callbacks = []
    elif isinstance(callbacks, Callback):
        callbacks = [callbacks]
    else:
        callbacks = list(callbacks)
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise TypeError(f"`callbacks` must contain Callback instances, got {type(callback).__name__}.")
    from volt.callbacks.model_checkpoint import ModelCheckpoint
    from volt.callbacks.progress import ProgressBar
    from volt.utilities.registry import load_external_callbacks

    has_checkpoint = any(isinstance(cb, ModelCheckpoint) for cb in callbacks)
    if has_checkpoint and not enable_checkpointing:
        raise MisconfigurationException(
            "Trainer was configured with `enable_checkpointing=False` but found `ModelCheckpoint` in callbacks list."
        )
    if enable_checkpointing and not has_checkpoint:
        callbacks.append(ModelCheckpoint())
    if max_time is not None:
        from volt.callbacks.timer import Timer

        if any(isinstance(cb, Timer) for cb in callbacks):
            rank_zero_info("Ignoring `Trainer(max_time=...)`, callbacks list already contains a Timer.")
        else:
            callbacks.append(Timer(duration=max_time, interval="step"))
    bars = [cb for cb in callbacks if isinstance(cb, ProgressBar)]
    has_bar = bool(bars)
    if len(bars) > 1:
        raise MisconfigurationException(
            f"You added multiple progress bar callbacks to the Trainer ({', '.join(type(b).__name__ for b in bars)}),"
            " but only one progress bar is supported: keep one of them."
        )
    if has_bar and not enable_progress_bar:
        raise MisconfigurationException(
            f"Trainer was configured with `enable_progress_bar=False` but found `{type(bars[0]).__name__}` in callbacks"
            " list: remove it, or leave enable_progress_bar on."
        )
    rich = importlib.util.find_spec("rich") is not None  # as Lightning: the rich bar and summary when installed
    if enable_progress_bar and not has_bar:
        from volt.callbacks.progress import RichProgressBar, TQDMProgressBar

        callbacks.append(RichProgressBar() if rich else TQDMProgressBar())
    if enable_model_summary:
        from volt.callbacks.model_summary import ModelSummary, RichModelSummary

        if not any(isinstance(cb, ModelSummary) for cb in callbacks):
            callbacks.append(RichModelSummary() if rich else ModelSummary())
    for callback in load_external_callbacks():  # as Lightning: those installed packages register, after the defaults
        if not isinstance(callback, Callback):
            raise TypeError(f"A callback factory registered through an entry point made a {type(callback).__name__},"
                            " not a Callback: fix or uninstall the package that registers it.")
        callbacks.append(callback)
    _check_unique_state_keys(callbacks)
    # as Lightning: checkpoint callbacks last, so they see what every other callback did at each point
    return [cb for cb in callbacks if not isinstance(cb, ModelCheckpoint)] + [
        cb for cb in callbacks if isinstance(cb, ModelCheckpoint)]


def _check_unique_state_keys(callbacks: List[Callback]) -> None:
    """Stateful callbacks are saved under their `state_key`: two with one key would lose a state in checkpoints."""
    seen = set()
    for callback in callbacks:
        if not implements(callback, Callback, "state_dict"):
            continue
        if callback.state_key in seen:
            name = type(callback).__name__
            raise RuntimeError(
                f"Found more than one stateful callback of type `{name}` with the state key {callback.state_key!r}: "
                "a checkpoint would keep the state of only one. The `callback.state_key` must be unique among all "
                f"callbacks in the Trainer (see `{name}`'s arguments, or override `state_key`)."
            )
        seen.add(callback.state_key)


def _build_loggers(logger, default_root_dir: str, fast_dev_run: bool) -> list:
    loggers = _make_loggers(logger, default_root_dir)
    if fast_dev_run and loggers:  # as Lightning: code that writes to `self.logger` runs, and nothing is written
        from volt.loggers.logger import DummyLogger

        return [DummyLogger()]
    return loggers


def _make_loggers(logger, default_root_dir: str) -> list:
    if logger is False:
        return []
    if logger is None or logger is True:
        if importlib.util.find_spec("tensorboardX") is not None:
            from volt.loggers.tensorboard import TensorBoardLogger

            return [TensorBoardLogger(save_dir=default_root_dir)]
        from volt.loggers.csv_logs import CSVLogger

        return [CSVLogger(save_dir=default_root_dir)]
    if isinstance(logger, Iterable):
        return list(logger)
    return [logger]


def _print_results(stage: str, results: List[Dict[str, float]]) -> None:
    if not results or not any(results):
        return
    title = {"validate": "Validate metric", "test": "Test metric"}[stage]
    names = sorted({k for r in results for k in r})
    headers = [title] + [f"DataLoader {i}" for i in range(len(results))]
    rows = [[name] + [f"{r[name]:.6g}" if name in r else "" for r in results] for name in names]
    widths = [max(len(str(row[i])) for row in [headers] + rows) + 2 for i in range(len(headers))]
    line = "─" * (sum(widths) + len(widths) - 1)
    print(line)
    print(" ".join(h.center(w) for h, w in zip(headers, widths)))
    print(line)
    for row in rows:
        print(" ".join(str(c).center(w) for c, w in zip(row, widths)))
    print(line)

