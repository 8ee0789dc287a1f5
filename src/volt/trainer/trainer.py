"""The Trainer: Lightning's arguments and entry points, and the small services the loops call."""
import importlib.util
import inspect
import logging
import math
import os
from contextlib import nullcontext
from datetime import timedelta
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import torch

from volt.callbacks.callback import Callback
from volt.datamodule import LightningDataModule
from volt.distributed.strategy import Strategy, parse_accelerator, parse_devices
from volt.loggers.logger import Logger
from volt.module import LightningModule
from volt.profilers import Profiler, make_profiler
from volt.trainer.data import shutdown_workers
from volt.trainer.eval_loop import EvalLoop
from volt.trainer.fit_loop import FitLoop
from volt.trainer.hooks import Hooks, ProfiledHooks
from volt.trainer.optim import LightningOptimizer, configure_optimizers
from volt.trainer.precision import Precision, make_precision, normalize_precision
from volt.trainer.results import Results
from volt.trainer.signals import StopSignals, requeued_job
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_info, rank_zero_only, rank_zero_warn

log = logging.getLogger("volt")

VOLT_VERSION = "0.1.0"
LIGHTNING_COMPAT_VERSION = "2.6.6"  # written as `pytorch-lightning_version`, so Lightning loads volt checkpoints
# The fit loop state that differs between processes: a multi-process checkpoint keeps every rank's.
_PER_RANK_STATE = ("rng", "results", "grads", "epoch_rng", "sampler_rng")

# Removed 1.x arguments and what replaces them.
_REMOVED_ARGUMENTS = {
    "resume_from_checkpoint": "pass the path to `trainer.fit(model, ckpt_path=...)`",
    "tpu_cores": "use `accelerator='tpu', devices=N`",
    "ipus": "use `accelerator='ipu', devices=N`",
    "num_processes": "use `accelerator='cpu', devices=N`",
    "auto_lr_find": "use `volt.tuner.Tuner(trainer).lr_find(model)` (Lightning: `Tuner.lr_find`)",
    "auto_scale_batch_size": "use `Tuner(trainer).scale_batch_size(model)`",
    "auto_select_gpus": "use `devices='auto'` or a list of device indices",
    "progress_bar_refresh_rate": "pass `callbacks=[TQDMProgressBar(refresh_rate=N)]`",
    "process_position": "pass `callbacks=[TQDMProgressBar(process_position=N)]`",
    "weights_summary": "use `enable_model_summary=` or `callbacks=[ModelSummary(max_depth=N)]`",
    "checkpoint_callback": "use `enable_checkpointing=`",
    "flush_logs_every_n_steps": "pass `flush_logs_every_n_steps` to the logger, e.g. `CSVLogger(..., flush_logs_every_n_steps=N)`",
    "track_grad_norm": "log `torch.nn.utils.get_total_norm` of the gradients in `on_before_optimizer_step`",
    "terminate_on_nan": "use `detect_anomaly=True`",
    "prepare_data_per_node": "set `self.prepare_data_per_node` in your LightningModule/DataModule `__init__`",
    "stochastic_weight_avg": "use the `StochasticWeightAveraging` callback",
    "amp_backend": "use `precision='16-mixed'`",
    "amp_level": "use `precision='16-mixed'`",
    "move_metrics_to_cpu": "remove it: volt keeps metrics on their device and reads them only when printing",
    "multiple_trainloader_mode": "wrap the loaders in `CombinedLoader(loaders, mode=...)`",
    "replace_sampler_ddp": "use `use_distributed_sampler=`",
    "log_gpu_memory": "use the `DeviceStatsMonitor` callback",
    "weights_save_path": "use `callbacks=[ModelCheckpoint(dirpath=...)]`",
    "reload_dataloaders_every_epoch": "use `reload_dataloaders_every_n_epochs=1`",
    "distributed_backend": "use `strategy=` (e.g. 'ddp')",
    "truncated_bptt_steps": "use manual optimization and split the sequence in `training_step`",
    "max_steps_per_epoch": "use `limit_train_batches=`",
    "log_every_n_step": "use `log_every_n_steps=`",
}


class TrainerState:
    """`fn` is the entry point running ("fit", "validate", "test", "predict"); `stage` is the loop running
    ("train", "sanity_check", "validate", "test", "predict"); `status` is "initializing" / "running" /
    "finished" / "interrupted"."""

    def __init__(self) -> None:
        self.fn: Optional[str] = None
        self.stage: Optional[str] = None
        self.status: str = "initializing"

    @property
    def finished(self) -> bool:
        return self.status == "finished"


class Trainer:
    """Runs fit/validate/test/predict for a LightningModule, with PyTorch Lightning 2.x's arguments."""

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
        plugins: Optional[list] = None,
        sync_batchnorm: bool = False,
        reload_dataloaders_every_n_epochs: int = 0,
        default_root_dir: Optional[Union[str, os.PathLike]] = None,
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
        self.barebones = barebones
        if barebones:
            for name, value in (("enable_checkpointing", enable_checkpointing), ("enable_progress_bar", enable_progress_bar),
                                ("enable_model_summary", enable_model_summary), ("logger", logger)):
                if value:
                    raise MisconfigurationException(
                        f"`Trainer(barebones=True)` turns off {name}; remove `{name}={value!r}` or barebones."
                    )
            enable_checkpointing = enable_progress_bar = enable_model_summary = False
            logger = False
        self.fast_dev_run = _check_fast_dev_run(fast_dev_run)

        # ---- loop limits
        self.max_epochs = max_epochs if max_epochs is not None else (1000 if max_steps == -1 else -1)
        self.min_epochs = min_epochs
        self.max_steps = max_steps
        self.min_steps = min_steps
        if self.fast_dev_run:
            self.max_epochs, self.max_steps = 1, int(self.fast_dev_run)
            num_sanity_val_steps, val_check_interval, check_val_every_n_epoch = 0, 1.0, 1
            rank_zero_info(
                f"Running in `fast_dev_run` mode: will run the requested loop using {int(self.fast_dev_run)} "
                "batch(es). Logging and checkpointing is suppressed."
            )
        _check_int("max_steps", max_steps, minimum=-1)
        _check_int("accumulate_grad_batches", accumulate_grad_batches, minimum=1)
        self.limit_train_batches = 1.0 if limit_train_batches is None else limit_train_batches
        self.limit_val_batches = 1.0 if limit_val_batches is None else limit_val_batches
        self.limit_test_batches = 1.0 if limit_test_batches is None else limit_test_batches
        self.limit_predict_batches = 1.0 if limit_predict_batches is None else limit_predict_batches
        self.overfit_batches = _check_overfit(overfit_batches)
        if self.overfit_batches:
            rank_zero_info("`overfit_batches` is set: training uses the first batches in order, without shuffling.")
        self.val_check_interval = 1.0 if val_check_interval is None else val_check_interval
        if isinstance(self.val_check_interval, float) and not 0.0 < self.val_check_interval <= 1.0:
            raise MisconfigurationException(
                f"`val_check_interval={val_check_interval}` must be a fraction in (0.0, 1.0] or an int batch count."
            )
        self.check_val_every_n_epoch = check_val_every_n_epoch
        self.num_sanity_val_steps = 2 if num_sanity_val_steps is None else num_sanity_val_steps
        self.log_every_n_steps = 50 if log_every_n_steps is None else log_every_n_steps
        _check_int("log_every_n_steps", self.log_every_n_steps, minimum=0)
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val = gradient_clip_val
        if gradient_clip_algorithm not in (None, "norm", "value"):
            raise MisconfigurationException(
                f"`gradient_clip_algorithm={gradient_clip_algorithm!r}` is invalid. Allowed algorithms: 'norm', 'value'."
            )
        self.gradient_clip_algorithm = gradient_clip_algorithm or "norm"
        self.inference_mode = inference_mode
        self.detect_anomaly = detect_anomaly
        self.reload_dataloaders_every_n_epochs = reload_dataloaders_every_n_epochs
        self.use_distributed_sampler = use_distributed_sampler
        self.sync_batchnorm = sync_batchnorm
        self.deterministic = deterministic
        self.benchmark = benchmark
        self._default_root_dir = os.fspath(default_root_dir) if default_root_dir is not None else None
        if plugins not in (None, []):
            raise MisconfigurationException(
                f"`plugins={plugins!r}` is not supported by volt; use `precision=` and `strategy=` arguments instead."
            )
        self.profiler = make_profiler(profiler)
        _configure_determinism(deterministic, benchmark)

        # ---- hardware, precision
        self._accelerator_flag = accelerator
        device_type = parse_accelerator(accelerator)
        device_ids = parse_devices(devices, device_type)
        self.strategy = _select_strategy(strategy, device_type, device_ids, num_nodes, accelerator)
        self.precision = normalize_precision(precision)
        self._precision = make_precision(self.precision, self.strategy.root_device)
        self.strategy.precision_plugin = self._precision

        # ---- state
        self.state = TrainerState()
        self.should_stop = False
        self.fit_loop = FitLoop(self)
        self.validate_loop = EvalLoop(self, "validate")
        self.test_loop = EvalLoop(self, "test")
        self.predict_loop = EvalLoop(self, "predict")
        self._results: Optional[Results] = None
        self._hooks: Optional[Hooks] = None
        self.lightning_module: Optional[LightningModule] = None
        self.datamodule: Optional[LightningDataModule] = None
        self.optimizers: List[torch.optim.Optimizer] = []
        self.lr_scheduler_configs: list = []
        self.ckpt_path: Optional[str] = None
        self._return_predictions = True
        self._weights_only: Optional[bool] = None
        self._eval_log_steps = 0  # evaluation batches that wrote step metrics: their loggers' x axis
        self._profiling_wrapped = False  # the strategy's steps are wrapped with the profiler once
        self._signals = StopSignals()  # SIGTERM / Ctrl-C / requeue during fit: a graceful stop (trainer/signals.py)

        # ---- callbacks and loggers
        self.enable_checkpointing = enable_checkpointing is not False
        self.enable_progress_bar = enable_progress_bar is not False
        self.enable_model_summary = enable_model_summary is not False
        self.callbacks: List[Callback] = _build_callbacks(
            callbacks, self.enable_checkpointing, self.enable_progress_bar, self.enable_model_summary, max_time
        )
        self.loggers = _build_loggers(logger, self.default_root_dir, bool(self.fast_dev_run))

    # ================================================================== entry points
    def fit(self, model: LightningModule, train_dataloaders=None, val_dataloaders=None,
            datamodule: Optional[LightningDataModule] = None, ckpt_path: Optional[Union[str, os.PathLike]] = None,
            weights_only: Optional[bool] = None) -> None:
        """Train `model`; resume from `ckpt_path` (a path, "last" or "best") when given.

        Checkpoints load safely (plain data only); pass `weights_only=False` only for a file you trust.
        """
        self._weights_only = weights_only
        if isinstance(train_dataloaders, LightningDataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        _check_data_args(train_dataloaders, val_dataloaders, datamodule, "fit")
        self.fit_loop._train_source = train_dataloaders
        self.fit_loop.val_loop._source = val_dataloaders
        self._run("fit", model, datamodule, ckpt_path)

    def validate(self, model: Optional[LightningModule] = None, dataloaders=None, ckpt_path=None,
                 verbose: bool = True, datamodule: Optional[LightningDataModule] = None,
                 weights_only: Optional[bool] = None) -> List[Dict[str, float]]:
        """Run the validation loop once; returns one dict of epoch metrics per dataloader."""
        self._weights_only = weights_only
        return self._run_eval("validate", model, dataloaders, ckpt_path, verbose, datamodule)

    def test(self, model: Optional[LightningModule] = None, dataloaders=None, ckpt_path=None,
             verbose: bool = True, datamodule: Optional[LightningDataModule] = None,
             weights_only: Optional[bool] = None) -> List[Dict[str, float]]:
        """Run the test loop once; returns one dict of epoch metrics per dataloader."""
        self._weights_only = weights_only
        return self._run_eval("test", model, dataloaders, ckpt_path, verbose, datamodule)

    def predict(self, model: Optional[LightningModule] = None, dataloaders=None,
                datamodule: Optional[LightningDataModule] = None, return_predictions: Optional[bool] = None,
                ckpt_path=None, weights_only: Optional[bool] = None) -> Optional[list]:
        """Run `predict_step` over the predict dataloader(s); returns the outputs (a list per dataloader)."""
        self._weights_only = weights_only
        self._return_predictions = True if return_predictions is None else return_predictions
        self._run_eval("predict", model, dataloaders, ckpt_path, False, datamodule)
        if not self._return_predictions:
            return None
        predictions = self.predict_loop.predictions
        return predictions[0] if len(predictions) == 1 else predictions

    def _run_eval(self, stage, model, dataloaders, ckpt_path, verbose, datamodule):
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        if dataloaders is not None and datamodule is not None:
            raise MisconfigurationException(
                f"You cannot pass both `{stage}(dataloaders=..., datamodule=...)`, choose one."
            )
        if model is None:
            if self.lightning_module is None:
                raise MisconfigurationException(
                    f"`trainer.{stage}()` needs a model: pass `trainer.{stage}(model, ...)`."
                )
            model = self.lightning_module
            if ckpt_path is None:  # as Lightning: without a model, use the best checkpoint of the last fit
                rank_zero_warn(
                    f"`.{stage}(ckpt_path=None)` was called without a model. The best model of the previous `fit` "
                    f"call will be used. You can pass `.{stage}(ckpt_path='best')` to use the best model or "
                    f"`.{stage}(ckpt_path='last')` to use the last model. If you pass a value, this warning will be "
                    "silenced."
                )
                ckpt_path = "best"
        loop = {"validate": self.validate_loop, "test": self.test_loop, "predict": self.predict_loop}[stage]
        loop._source = dataloaders
        loop.loaders = None
        results = self._run(stage, model, datamodule or (self.datamodule if model is self.lightning_module else None),
                            ckpt_path)
        if verbose and stage != "predict" and self.is_global_zero:
            _print_results(stage, results)
        return results

    # ================================================================== the run
    def _run(self, fn: str, model: LightningModule, datamodule, ckpt_path):
        if not isinstance(model, LightningModule):
            raise TypeError(
                f"`Trainer.{fn}` requires a `LightningModule`, got {type(model).__name__}. Subclass "
                "`volt.LightningModule` (or `import volt as pl; pl.LightningModule`)."
            )
        if fn == "fit" and not model.automatic_optimization:
            if self.gradient_clip_val:
                raise MisconfigurationException(
                    "Automatic gradient clipping is not supported for manual optimization. Remove "
                    "`Trainer(gradient_clip_val=...)`, or call `self.clip_gradients(opt, ...)` in `training_step`."
                )
            if self.accumulate_grad_batches != 1:
                raise MisconfigurationException(
                    "Automatic gradient accumulation is not supported for manual optimization. Remove "
                    "`Trainer(accumulate_grad_batches=...)` and accumulate in `training_step`."
                )
        if fn == "fit" and type(model).training_step is LightningModule.training_step:
            raise MisconfigurationException(
                f"No `training_step()` method defined in {type(model).__name__}. `Trainer.fit` needs "
                "`training_step(self, batch, batch_idx)` returning the loss."
            )
        self.state.fn, self.state.status = fn, "running"
        self.state.stage = {"fit": "train"}.get(fn, fn)
        self.should_stop = False
        self.lightning_module = model
        self.datamodule = datamodule
        model.trainer = self
        if datamodule is not None:
            datamodule.trainer = self
        self.strategy.connect(model)
        self._results = Results(self)
        return self.strategy.launch(self._run_stage, fn, model, datamodule, ckpt_path)

    def _run_stage(self, fn, model, datamodule, ckpt_path):
        callbacks = self._merge_model_callbacks(model)
        self._hooks = hooks = (ProfiledHooks if self.profiler else Hooks)(self, callbacks, model, datamodule)
        self._batch_needs_work: Optional[bool] = None  # decided at the first batch, once hooks and device are known
        if self.profiler is not None:
            self.profiler.reset()
        if self.profiler is not None and not self._profiling_wrapped:
            from volt.profilers import profile_method

            for name in ("training_step", "validation_step", "test_step", "predict_step"):
                if hasattr(self.strategy, name):
                    profile_method(self.profiler, self.strategy, name, f"[Strategy]{type(self.strategy).__name__}.{name}")
            profile_method(self.profiler, self, "_optimizer_step", "[Strategy]optimizer_step")
            self._profiling_wrapped = True
        anomaly = torch.autograd.detect_anomaly(check_nan=True) if self.detect_anomaly else nullcontext()
        if fn == "fit":
            self._signals.install(self.strategy.stop_coordinator(lambda: self.fit_loop.state.total_batch_idx))
        try:
            with anomaly:
                return self._run_stage_inner(fn, model, datamodule, ckpt_path, hooks)
        except BaseException as exception:
            self.state.status = "interrupted"
            if isinstance(exception, KeyboardInterrupt):
                rank_zero_info("Detected KeyboardInterrupt, attempting graceful shutdown ...")
            hooks.callbacks("on_exception", exception)
            if datamodule is not None:
                datamodule.on_exception(exception)
            for logger in self.loggers:
                logger.finalize("failed")
            self.strategy.teardown()
            raise
        finally:
            loops = (self.fit_loop.val_loop, self.validate_loop, self.test_loop, self.predict_loop)
            for loader in [self.fit_loop.train_loader] + [ld for loop in loops for ld in loop.loaders or []]:
                shutdown_workers(loader)
            if fn == "fit":
                self._signals.restore()
            if self.profiler is not None:
                self.profiler.teardown(fn)

    def _run_stage_inner(self, fn, model, datamodule, ckpt_path, hooks):
        self.strategy.setup_environment()
        # "last" first: it may pick the logger version to continue, which the callbacks' setup reads
        ckpt_path = self._resolve_ckpt_path(fn, ckpt_path)
        if self.profiler is not None:
            self.profiler.lightning_module = model
            self.profiler.setup(stage=fn, local_rank=self.local_rank if self.world_size > 1 else None,
                                log_dir=self.log_dir)
        # 1. data preparation and setup
        if self.local_rank == 0:
            if datamodule is not None:
                datamodule.prepare_data()
            hooks.call_module("prepare_data")
        self.strategy.barrier("prepare_data")
        hooks.callbacks("setup", fn)
        if datamodule is not None:
            datamodule.setup(fn)
        hooks.call_module("setup", fn)
        hooks.call_module("configure_model")
        if hooks.module_overrides("configure_sharded_model"):
            hooks.call_module("configure_sharded_model")
        model = self._precision.convert_module(model)
        self.strategy.setup_module(model)

        # 2. restore what comes before the optimizers
        checkpoint = self._load_checkpoint(ckpt_path)
        if checkpoint is not None:
            self._restore_module_and_callbacks(checkpoint, hooks)

        # 3. optimizers, fit start, then the rest of the checkpoint
        if fn == "fit":
            self._setup_optimizers(model)
            self._log_hyperparams(model, datamodule)
            hooks.call("on_fit_start")
            if checkpoint is not None:
                self._restore_training_state(checkpoint)
            self.fit_loop.run()
            self.state.stage = None
            hooks.call("on_fit_end")
            result = None
        else:
            loop = {"validate": self.validate_loop, "test": self.test_loop, "predict": self.predict_loop}[fn]
            loop.loaders = None
            result = loop.run()
        hooks.callbacks("teardown", fn)
        if datamodule is not None:
            datamodule.teardown(fn)
        hooks.call_module("teardown", fn)
        for logger in self.loggers:
            logger.finalize("success")
        if self.profiler is not None and self.is_global_zero:
            self.profiler.describe(fn)
        self.strategy.teardown()
        self.state.status = "finished"
        return result

    def _merge_model_callbacks(self, model) -> List[Callback]:
        """Callbacks from `configure_callbacks` replace Trainer callbacks of the same type; checkpoints go last."""
        extra = model.configure_callbacks() if _overridden(model, "configure_callbacks") else []
        extra = [extra] if isinstance(extra, Callback) else list(extra or [])
        if extra:
            types = {type(cb) for cb in extra}
            self.callbacks = [cb for cb in self.callbacks if type(cb) not in types] + extra
        from volt.callbacks.model_checkpoint import ModelCheckpoint

        self.callbacks = [cb for cb in self.callbacks if not isinstance(cb, ModelCheckpoint)] + [
            cb for cb in self.callbacks if isinstance(cb, ModelCheckpoint)]
        return self.callbacks

    def _setup_optimizers(self, model) -> None:
        model._current_fx_name = "configure_optimizers"
        try:
            self.optimizers, self.lr_scheduler_configs = configure_optimizers(model)
        finally:
            model._current_fx_name = None
        if "optimizer_idx" in inspect.signature(model.training_step).parameters:  # the 1.x multi-optimizer form
            raise MisconfigurationException(
                "Training with multiple optimizers is only supported with manual optimization. Remove the "
                "`optimizer_idx` argument from `training_step`, set `self.automatic_optimization = False` in "
                "`__init__` and step each optimizer yourself: `opt_g, opt_d = self.optimizers()`."
            )
        if model.automatic_optimization and len(self.optimizers) > 1:
            raise MisconfigurationException(
                "Training with multiple optimizers is only supported with manual optimization. Set "
                "`self.automatic_optimization = False` in `__init__`, then call `opt.step()` for each optimizer "
                "yourself in `training_step`."
            )
        self.strategy._lightning_optimizers = [LightningOptimizer(opt, self) for opt in self.optimizers]

    # ================================================================== services the loops call
    def _prepare_batch(self, batch: Any, dataloader_idx: int) -> Any:
        """Precision input conversion and the batch-transfer hooks; nothing at all for plain CPU training."""
        if self._batch_needs_work is None:
            self._batch_needs_work = (self._hooks.custom_transfer or self.strategy.root_device.type != "cpu"
                                      or type(self._precision).convert_input is not Precision.convert_input)
        if not self._batch_needs_work:
            return batch
        batch = self._precision.convert_input(batch)
        device = self.strategy.root_device
        if self._hooks.custom_transfer or device.type != "cpu":
            batch = self._hooks.batch_transfer(batch, device, dataloader_idx)
        return batch

    def _zero_grad(self, optimizer, batch_idx: int) -> None:
        hooks = self._hooks
        hooks.call("on_before_zero_grad", optimizer)
        if hooks.module_overrides("optimizer_zero_grad"):
            hooks.call_module("optimizer_zero_grad", self.current_epoch, batch_idx, optimizer)
        else:
            optimizer.zero_grad()

    def _loop_backward(self, loss: torch.Tensor, optimizer, *args: Any, **kwargs: Any) -> None:
        hooks = self._hooks
        hooks.call("on_before_backward", loss)
        if hooks.module_overrides("backward"):
            backward_fn = lambda l, *a, **k: hooks.call_module("backward", l, *a, **k)  # noqa: E731
        else:
            backward_fn = _torch_backward
        self._precision.backward(loss, backward_fn, *args, **kwargs)
        hooks.call("on_after_backward")

    def _optimizer_step(self, optimizer, closure=None, **kwargs: Any):
        """Where every optimizer step happens (automatic and manual): closure, hooks, clipping, step."""
        hooks, module = self._hooks, self.lightning_module
        automatic = module.automatic_optimization

        def after_closure():
            hooks.call("on_before_optimizer_step", optimizer)
            if automatic and (self.gradient_clip_val or hooks.module_overrides("configure_gradient_clipping")):
                hooks.call_module("configure_gradient_clipping", optimizer, self.gradient_clip_val,
                                  self.gradient_clip_algorithm if self.gradient_clip_val else None)

        out = self._precision.optimizer_step(optimizer, closure or _no_closure, after_closure, automatic, **kwargs)
        self.fit_loop.state.global_step += 1
        return out

    def _call_dataloader_hook(self, name: str, required: bool = True):
        """The loaders from the datamodule if it defines `name`, else from the module."""
        datamodule, module = self.datamodule, self.lightning_module
        owner = module
        if datamodule is not None and (name in vars(datamodule)
                                       or getattr(type(datamodule), name) is not getattr(LightningDataModule, name)):
            owner = datamodule
        elif not _overridden(module, name) and name != "train_dataloader" and not required:
            return None
        previous = module._current_fx_name
        module._current_fx_name = name
        try:
            return getattr(owner, name)()
        except NotImplementedError:
            if required or name == "train_dataloader":
                raise
            return None
        finally:
            module._current_fx_name = previous

    def _use_distributed_sampler(self) -> bool:
        return self.use_distributed_sampler and self.world_size > 1

    def _dataloaders_stale(self, loaded_epoch: int) -> bool:
        """`reload_dataloaders_every_n_epochs`: loaders made at `loaded_epoch` are due to be made again."""
        n = self.reload_dataloaders_every_n_epochs
        return bool(n) and self.current_epoch - loaded_epoch >= n

    def _log_to_loggers(self, metrics: Dict[str, torch.Tensor], step: Optional[int] = None) -> None:
        """Send metrics to every logger, converting tensors to floats here (the only host sync for logging)."""
        if not metrics or not self.loggers:
            return
        self._results.logged_metrics.update(metrics)
        scalars = {k: (v.item() if isinstance(v, torch.Tensor) else float(v)) for k, v in metrics.items()}
        if step is None:
            step = max(self.fit_loop.state.batches_stepped - 1, 0) if self.state.fn == "fit" else \
                self.fit_loop.state.batches_stepped
        if "step" in scalars:
            step = int(scalars.pop("step"))
        else:
            scalars.setdefault("epoch", self.current_epoch)
        step = max(int(step), 0)
        for logger in self.loggers:
            logger.log_metrics(scalars, step=step)
            logger.save()

    def _eval_step_log(self, stage: str) -> None:
        results = self._results
        if results.eval.pending and not self.sanity_checking:
            self._log_to_loggers(results.take_step_logs(results.eval), step=self._eval_log_steps)
            self._eval_log_steps += 1
        else:
            results.eval.pending = {}

    @rank_zero_only
    def _log_hyperparams(self, model, datamodule) -> None:
        if not self.loggers:
            return
        hparams: Dict[str, Any] = {}
        if getattr(model, "_log_hyperparams", True):
            hparams.update(model.hparams_initial)
        if datamodule is not None and getattr(datamodule, "_log_hyperparams", True):
            dm_hparams = datamodule.hparams_initial
            clash = {k for k in dm_hparams if k in hparams and hparams[k] != dm_hparams[k]}
            if clash:
                raise MisconfigurationException(
                    f"Error while merging hparams: the keys {sorted(clash)} are present in both the LightningModule's "
                    "and LightningDataModule's hparams but have different values."
                )
            hparams.update(dm_hparams)
        for logger in self.loggers:
            if hparams:
                logger.log_hyperparams(hparams)
            logger.log_graph(model)

    # ================================================================== checkpoints
    def save_checkpoint(self, filepath: Union[str, os.PathLike], weights_only: bool = False,
                        storage_options: Any = None) -> None:
        """Write a checkpoint atomically (rank 0 writes; every rank must call it)."""
        if self.lightning_module is None:
            raise RuntimeError(
                "Saving a checkpoint is only possible if a model is attached to the Trainer. Did you call "
                "`Trainer.save_checkpoint()` before calling `Trainer.{fit,validate,test,predict}`?"
            )
        self._write_checkpoint(self._dump_checkpoint(weights_only), filepath)

    def _save_checkpoint_when_complete(self, filepath: str, weights_only: bool, then: Callable[[], None]) -> None:
        """ModelCheckpoint's save: written once the running batch or epoch end is complete (`FitLoop.when_complete`),
        so that it resumes exactly; then `then()`.

        At a validation end or an epoch end, where only the module's hooks and scheduler steps follow, the checkpoint
        is built here, so its hooks run in Lightning's order, and its optimizer, scheduler and loop state are
        refreshed when it is written (weights are references to the live tensors, so they are current too). In a
        training batch, where logging and validation follow, it is built when written.
        """
        assemble_now = self.validating or self.fit_loop.state.epoch_done
        checkpoint = self._dump_checkpoint(weights_only) if assemble_now else None

        def write() -> None:
            if checkpoint is None:
                assembled = self._dump_checkpoint(weights_only)
            else:
                assembled = checkpoint
                if "optimizer_states" in assembled:
                    assembled["optimizer_states"] = [self.strategy.optimizer_state(opt) for opt in self.optimizers]
                    assembled["lr_schedulers"] = [c.scheduler.state_dict() for c in self.lr_scheduler_configs]
                assembled["loops"]["fit_loop"] = self._fit_loop_state()
            self._write_checkpoint(assembled, filepath)
            then()

        self.fit_loop.when_complete(write)

    def _write_checkpoint(self, checkpoint: Dict[str, Any], filepath) -> None:
        if self.is_global_zero:
            from volt.checkpoint import save_checkpoint

            save_checkpoint(checkpoint, filepath)
        self.strategy.barrier("save_checkpoint")

    def _dump_checkpoint(self, weights_only: bool = False) -> Dict[str, Any]:
        from volt.checkpoint import encode_hparams

        model = self.lightning_module
        checkpoint: Dict[str, Any] = {
            "epoch": self.current_epoch,
            "global_step": self.global_step,
            "pytorch-lightning_version": LIGHTNING_COMPAT_VERSION,
            "volt_version": VOLT_VERSION,
            "state_dict": self.strategy.lightning_module_state_dict(),
            "loops": {"fit_loop": self._fit_loop_state()},
        }
        if not weights_only:
            callback_states = {}
            for callback in self.callbacks:
                state = callback.state_dict()
                if state:
                    callback_states[callback.state_key] = state
            checkpoint["callbacks"] = callback_states
            checkpoint["optimizer_states"] = [self.strategy.optimizer_state(opt) for opt in self.optimizers]
            checkpoint["lr_schedulers"] = [config.scheduler.state_dict() for config in self.lr_scheduler_configs]
            precision_state = self._precision.state_dict()
            if precision_state:
                checkpoint["MixedPrecision"] = precision_state
            if self.datamodule is not None:
                dm_state = self.datamodule.state_dict()
                if dm_state:
                    checkpoint[type(self.datamodule).__qualname__] = dm_state
        if model.hparams:
            checkpoint["hparams_name"] = getattr(model, "_hparams_name", "kwargs") or "kwargs"
            checkpoint["hyper_parameters"] = encode_hparams(dict(model.hparams))
        if self.datamodule is not None and self.datamodule.hparams:
            checkpoint["datamodule_hparams_name"] = getattr(self.datamodule, "_hparams_name", "kwargs") or "kwargs"
            checkpoint["datamodule_hyper_parameters"] = encode_hparams(dict(self.datamodule.hparams))
        if not weights_only:
            self._hooks.callbacks("on_save_checkpoint", checkpoint)
        if self._hooks.module_overrides("on_save_checkpoint"):
            self._hooks.call_module("on_save_checkpoint", checkpoint)  # names the hook, so self.log there raises
        return checkpoint

    def _fit_loop_state(self) -> Dict[str, Any]:
        """The loop's position and everything needed to continue from it exactly (see `_restore_training_state`).

        Every rank builds it (every checkpoint save runs on all ranks). With several ranks, each rank's own RNG
        streams, epoch accumulators and pending gradients are gathered into `per_rank` (rank 0 writes the file);
        the top-level entries are rank 0's, for a resume on another number of processes.
        """
        from volt.trainer.progress import results_state

        for logger in self.loggers:  # rows logged before this checkpoint are on disk before it is
            logger.save()
        fit_loop = self.fit_loop
        state = {
            **fit_loop.state.state_dict(),
            "rng": fit_loop.rng_state(),
            "should_stop": self.should_stop,
            "results": results_state(self._results) if self._results is not None and self.state.fn == "fit" else None,
            "loggers": [getattr(logger, "_resume_marker", lambda: None)() for logger in self.loggers],
            "eval_log_steps": self._eval_log_steps,
            "checkpoint_callbacks": {cb.state_key: cb._resume_state() for cb in self.checkpoint_callbacks},
            # inside an accumulation window: the gradients summed so far
            "grads": self.strategy.accumulated_grads() if fit_loop.grads_pending else None,
        }
        if self.world_size > 1:
            per_rank = self.strategy.gather_object({key: state[key] for key in _PER_RANK_STATE})
            if per_rank is not None and len(per_rank) > 1:  # a single entry: the main process after a spawn
                state["per_rank"] = per_rank
        return state

    def _resolve_ckpt_path(self, fn: str, ckpt_path) -> Optional[str]:
        if ckpt_path is None and fn == "fit" and requeued_job():
            rank_zero_info("This SLURM job was requeued: resuming from its last checkpoint (ckpt_path='last').")
            ckpt_path = "last"
        if ckpt_path is None:
            return None
        if ckpt_path == "best":
            if self.checkpoint_callback is None:
                raise ValueError(f'`.{fn}(ckpt_path="best")` is set but `ModelCheckpoint` is not configured.')
            best = self.checkpoint_callback.best_model_path
            if not best:
                if self.fast_dev_run:
                    raise ValueError(
                        f'You cannot execute `.{fn}(ckpt_path="best")` with `fast_dev_run=True`. Please pass an '
                        f"exact checkpoint path to `.{fn}(ckpt_path=...)`"
                    )
                raise ValueError(
                    f'`.{fn}(ckpt_path="best")` is set but `ModelCheckpoint` has not saved a best model yet: run '
                    "`fit` first, or pass an exact checkpoint path."
                )
            return best
        if ckpt_path == "last":
            last = self._find_last_checkpoint()
            if last is None:
                rank_zero_warn(
                    f'`.{fn}(ckpt_path="last")` found no last checkpoint; starting from scratch.'
                )
            return last
        return os.fspath(ckpt_path)

    def _find_last_checkpoint(self) -> Optional[str]:
        """The newest `last*.ckpt` (for `ckpt_path="last"`), in the checkpoint callbacks' folders.

        A callback without a `dirpath` writes into the logger's version folder. A new process (a requeued job, a
        rerun script) has a logger that would start a new version, so every version's `checkpoints` folder is
        searched, and the logger then continues the version the checkpoint came from rather than opening a new one.
        With no checkpoint callback, `<default_root_dir>/checkpoints` (where a graceful stop saves) is searched.
        """
        import glob

        folders = []
        for callback in self.checkpoint_callbacks or [None]:
            if callback is not None and callback.dirpath:
                folders.append(callback.dirpath)
            elif callback is not None and self.loggers and _unversioned(self.loggers[0]):
                logger = self.loggers[0]
                save_dir = logger.save_dir if logger.save_dir is not None else self.default_root_dir
                folders += glob.glob(os.path.join(glob.escape(os.path.join(save_dir, str(logger.name))), "*",
                                                  "checkpoints"))
            elif callback is not None:
                folders.append(callback._default_dirpath(self))
            else:
                folders.append(os.path.join(self.default_root_dir, "checkpoints"))
        candidates = [os.path.join(folder, name) for folder in folders if os.path.isdir(folder)
                      for name in os.listdir(folder) if name.startswith("last") and name.endswith(".ckpt")]
        candidates = [path for path in candidates if os.path.isfile(path)]  # not a link to a deleted file
        if not candidates:
            return None
        newest = max(candidates, key=os.path.getmtime)
        version = os.path.basename(os.path.dirname(os.path.dirname(newest)))
        for logger in self.loggers:
            if _unversioned(logger) and os.path.isdir(os.path.join(logger.root_dir, version)):
                number = version[len("version_"):]
                logger._version = int(number) if version.startswith("version_") and number.isdigit() else version
        return newest

    def _load_checkpoint(self, path: Optional[str]) -> Optional[Dict[str, Any]]:
        """Load the checkpoint at `path` (already resolved from "last"/"best"); None when there is none."""
        self.ckpt_path = path
        if path is None:
            return None
        from volt.checkpoint import load_checkpoint

        return load_checkpoint(path, map_location=self.strategy.root_device,
                               weights_only=self._weights_only is not False)

    def _restore_module_and_callbacks(self, checkpoint: Dict[str, Any], hooks: Hooks) -> None:
        model = self.lightning_module
        if hooks.module_overrides("on_load_checkpoint"):
            hooks.call_module("on_load_checkpoint", checkpoint)
        if self.state.fn == "fit":
            hooks.callbacks("on_load_checkpoint", checkpoint)
            states = checkpoint.get("callbacks") or {}
            for callback in self.callbacks:
                state = states.get(callback.state_key)
                if state is None:
                    state = states.get(type(callback).__qualname__)
                if state is not None:
                    callback.load_state_dict(state)
            if self.datamodule is not None and type(self.datamodule).__qualname__ in checkpoint:
                self.datamodule.load_state_dict(checkpoint[type(self.datamodule).__qualname__])
        if "state_dict" not in checkpoint:
            raise KeyError(f"The checkpoint {self.ckpt_path} has no 'state_dict'; it is not a model checkpoint.")
        self.strategy.load_model_state_dict(checkpoint["state_dict"], strict=model.strict_loading)

    def _restore_training_state(self, checkpoint: Dict[str, Any]) -> None:
        for opt, state in zip(self.optimizers, checkpoint.get("optimizer_states", [])):
            self.strategy.load_optimizer_state_dict(opt, state)
        for config, state in zip(self.lr_scheduler_configs, checkpoint.get("lr_schedulers", [])):
            config.scheduler.load_state_dict(state)
        if "MixedPrecision" in checkpoint:
            self._precision.load_state_dict(checkpoint["MixedPrecision"])
        loop_state = dict((checkpoint.get("loops") or {}).get("fit_loop") or {})
        s = self.fit_loop.state
        if "epoch_done" in loop_state:  # written by volt: the exact cursor, at a complete batch or epoch end
            per_rank = loop_state.pop("per_rank", None)
            saved_world = len(per_rank) if per_rank is not None else 1
            if saved_world == self.world_size:
                if per_rank is not None:  # this rank's RNG, accumulators, pending gradients
                    loop_state.update(per_rank[self.global_rank])
            else:
                _note_world_size_change(saved_world, self.world_size, mid_epoch=not loop_state.get("epoch_done"))
            self.fit_loop._restored_rng = loop_state.pop("rng", None)  # applied where the resumed run reaches it
            self.fit_loop._restored_results = loop_state.pop("results", None)
            self.should_stop = bool(loop_state.pop("should_stop", False))
            self._eval_log_steps = loop_state.pop("eval_log_steps", 0)
            saved = loop_state.pop("checkpoint_callbacks", None) or {}
            for callback in self.checkpoint_callbacks:
                if callback.state_key in saved:
                    callback._load_resume_state(saved[callback.state_key])
            grads = loop_state.pop("grads", None)
            if grads:
                self.strategy.load_accumulated_grads(grads)
            for logger, marker in zip(self.loggers, loop_state.pop("loggers", None) or []):
                if marker is not None and hasattr(logger, "_resume_from"):
                    logger._resume_from(marker)
            s.load_state_dict(loop_state)
            if s.epoch_done:
                s.epoch += 1
                s.batch_idx, s.epoch_done, s.val_done_at_batch = 0, False, -1
                s.epoch_rng = s.sampler_rng = None
        else:  # another writer (e.g. Lightning): its batch progress says whether it stopped mid-epoch
            batches = loop_state.get("epoch_loop.batch_progress") or {}
            consumed = int((batches.get("current") or {}).get("processed", 0))
            mid_epoch = consumed > 0 and not batches.get("is_last_batch", True)
            # as Lightning does, the rest of an unfinished epoch is drawn afresh from the loader's start
            s.epoch = int(checkpoint.get("epoch", 0)) + (0 if mid_epoch else 1)
            s.batch_idx = consumed if mid_epoch else 0
            s.total_batch_idx = int((batches.get("total") or {}).get("processed", 0))
            s.global_step = int(checkpoint.get("global_step", 0))
            s.batches_stepped = s.global_step

    # ================================================================== properties users read
    @property
    def current_epoch(self) -> int:
        return self.fit_loop.state.epoch

    @property
    def global_step(self) -> int:
        return self.fit_loop.state.global_step

    @property
    def default_root_dir(self) -> str:
        return self._default_root_dir if self._default_root_dir is not None else os.getcwd()

    @property
    def callback_metrics(self) -> Dict[str, torch.Tensor]:
        return self._results.callback_metrics if self._results is not None else {}

    @property
    def logged_metrics(self) -> Dict[str, torch.Tensor]:
        return self._results.logged_metrics if self._results is not None else {}

    @property
    def progress_bar_metrics(self) -> Dict[str, torch.Tensor]:
        return self._results.progress_bar_metrics if self._results is not None else {}

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
    def num_training_batches(self) -> Union[int, float]:
        return self.fit_loop.num_training_batches

    @property
    def num_val_batches(self) -> list:
        loop = self.fit_loop.val_loop if self.state.fn == "fit" else self.validate_loop
        return list(loop.num_batches)

    @property
    def num_sanity_val_batches(self) -> list:
        steps = self.num_sanity_val_steps
        return [b if steps == -1 else min(steps, b) for b in self.num_val_batches]

    @property
    def num_test_batches(self) -> list:
        return list(self.test_loop.num_batches)

    @property
    def num_predict_batches(self) -> list:
        return list(self.predict_loop.num_batches)

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
        if self.max_epochs == -1:
            return self.max_steps if self.max_steps != -1 else math.inf
        total = per_epoch * self.max_epochs
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
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def num_devices(self) -> int:
        return len(getattr(self.strategy, "parallel_devices", None) or [self.strategy.root_device])

    @property
    def device_ids(self) -> list:
        return [d.index or 0 for d in (getattr(self.strategy, "parallel_devices", None) or [self.strategy.root_device])]

    @property
    def accelerator(self) -> str:
        return self.strategy.root_device.type

    @property
    def precision_plugin(self):
        return self._precision

    @property
    def scaler(self):
        return self._precision.scaler

    @property
    def lr_schedulers(self) -> list:
        return [config.scheduler for config in self.lr_scheduler_configs]

    @property
    def train_dataloader(self):
        return self.fit_loop.train_loader

    @property
    def val_dataloaders(self):
        loaders = self.fit_loop.val_loop.loaders or self.validate_loop.loaders
        return loaders[0] if loaders and len(loaders) == 1 else loaders

    @property
    def test_dataloaders(self):
        loaders = self.test_loop.loaders
        return loaders[0] if loaders and len(loaders) == 1 else loaders

    @property
    def predict_dataloaders(self):
        loaders = self.predict_loop.loaders
        return loaders[0] if loaders and len(loaders) == 1 else loaders


# ====================================================================== construction helpers
def _note_world_size_change(saved: int, now: int, mid_epoch: bool) -> None:
    """Say what a resume on another number of processes keeps exactly (volt/distributed/ddp.py has the details)."""
    rest = (" The interrupted epoch continues after the number of batches each rank had run, so its remaining "
            "samples are not exactly the ones no rank had seen; from the next epoch on, the order is exact again."
            if mid_epoch else "")
    rank_zero_warn(
        f"Resuming a checkpoint written by {saved} process(es) on {now}: weights, optimizer, scheduler and precision "
        "state, the epoch and step counters and the callbacks' state are restored exactly; RNG streams, epoch metric "
        f"accumulators and pending accumulation gradients are rank 0's.{rest}"
    )


def _unversioned(logger) -> bool:
    """A volt logger that will pick the next free version folder on first use (none chosen yet)."""
    return getattr(logger, "_version", 0) is None and hasattr(logger, "root_dir")


def _torch_backward(loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
    loss.backward(*args, **kwargs)


def _no_closure() -> None:
    return None


def _overridden(obj: Any, name: str) -> bool:
    return getattr(type(obj), name, None) is not getattr(LightningModule, name, None)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MisconfigurationException(f"`Trainer({name}={value!r})` must be an int >= {minimum}.")


def _check_fast_dev_run(value: Union[int, bool]) -> int:
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int) or value < 0:
        raise MisconfigurationException(
            f"`fast_dev_run={value!r}` must be a bool or a positive int (the number of batches to run)."
        )
    return value


def _check_overfit(value: Union[int, float]) -> Union[int, float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (isinstance(value, float) and value > 1):
        raise MisconfigurationException(
            f"`overfit_batches={value!r}` must be an int batch count or a fraction in [0.0, 1.0]."
        )
    return value


def _check_data_args(train, val, datamodule, fn) -> None:
    if datamodule is not None and (train is not None or val is not None):
        raise MisconfigurationException(
            f"You cannot pass `train_dataloader` or `val_dataloaders` to `trainer.{fn}(datamodule=...)`; choose one."
        )
    if datamodule is not None and not isinstance(datamodule, LightningDataModule):
        raise TypeError(f"`datamodule` must be a LightningDataModule, got {type(datamodule).__name__}.")


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


def _select_strategy(strategy, device_type: str, device_ids: List[int], num_nodes: int, accelerator) -> Strategy:
    from volt.distributed.ddp import select_parallel_strategy

    parallel = select_parallel_strategy(strategy, device_type, device_ids, num_nodes)
    if parallel is not None:
        return parallel
    if isinstance(strategy, Strategy):
        return strategy
    name = str(strategy).lower() if strategy is not None else "auto"
    if name not in ("auto", "single_device"):
        raise MisconfigurationException(
            f"strategy={strategy!r} is not supported. Choose 'auto', 'single_device', 'ddp', 'ddp_spawn', "
            "'ddp_fork', 'ddp_notebook', 'ddp_find_unused_parameters_true' or 'fsdp'."
        )
    index = device_ids[0] if device_type == "cuda" else None
    device = torch.device(device_type, index) if index is not None else torch.device(device_type)
    return Strategy(device, accelerator=device_type)


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
    has_bar = any(isinstance(cb, ProgressBar) for cb in callbacks)
    if has_bar and not enable_progress_bar:
        raise MisconfigurationException(
            "Trainer was configured with `enable_progress_bar=False` but found a progress bar in the callbacks list."
        )
    if enable_progress_bar and not has_bar:
        from volt.callbacks.progress import TQDMProgressBar

        callbacks.append(TQDMProgressBar())
    if enable_model_summary:
        from volt.callbacks.model_summary import ModelSummary

        if not any(isinstance(cb, ModelSummary) for cb in callbacks):
            callbacks.append(ModelSummary())
    return callbacks


def _build_loggers(logger, default_root_dir: str, fast_dev_run: bool) -> list:
    if fast_dev_run or logger is False:
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

