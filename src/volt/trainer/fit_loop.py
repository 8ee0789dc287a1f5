"""The training loop, top to bottom. This docstring is the map of where every hook fires.

    Trainer.fit
      configure_callbacks -> prepare_data -> setup("fit") -> configure_model           (trainer.py)
      [resume] on_load_checkpoint (module, callbacks) -> weights
      configure_optimizers -> on_fit_start
      [resume] optimizers, schedulers, loop state, precision state
      FitLoop.run
        sanity check: on_sanity_check_start -> validation on a few batches -> on_sanity_check_end
        train_dataloader -> on_train_start
        for each epoch:
          on_train_epoch_start                                      (not for an epoch resumed inside, as Lightning)
          for each batch:
            on_before_batch_transfer -> transfer_batch_to_device -> on_after_batch_transfer
            on_train_batch_start                                   (returning -1 ends the epoch)
            optimizer_step(epoch, batch_idx, optimizer, closure)   (accumulating batches: closure only)
              closure: training_step -> on_before_zero_grad -> optimizer_zero_grad (first batch of a window)
                       -> on_before_backward -> backward -> on_after_backward
              then:    on_before_optimizer_step -> configure_gradient_clipping -> optimizer.step
            lr_scheduler_step (interval "step"; interval "epoch" on the last batch)
            on_train_batch_end -> step metrics to loggers
            [validation when due] -> ReduceLROnPlateau with interval "step"
            CHECKPOINT POINT (the batch is complete): scheduled checkpoints are written, a stop signal is acted on
          training_epoch_end(outputs) (1.x) -> on_train_epoch_end (callbacks, module, then checkpoint/early stopping)
          ReduceLROnPlateau with interval "epoch" -> epoch metrics to loggers
          CHECKPOINT POINT (the epoch end is complete)
        on_train_end
      on_fit_end -> teardown("fit")                                                      (trainer.py)

Exact resume: ModelCheckpoint and a graceful stop write only at a checkpoint point (`Trainer.schedule_checkpoint`,
volt/trainer/checkpointing.py), where a batch or an epoch end is complete, so the loop state (progress.LoopState)
has nothing half done. A resumed run rebuilds the interrupted epoch's data order from the RNG
state the epoch started with, skips the consumed batches at the sampler level (iterable datasets: restores the
stream's saved state when it has one, else replays them), and continues from the checkpoint's RNG state at the
matching point: right before its next batch.
"""
import functools
import itertools
import math
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Tuple

import torch

from volt.trainer.data import (DataLoaderIter, DevicePrefetcher, as_given, check_iterable, check_loaders,
                              distributed_sampler_fn, limit_batches, loaders_stale, prefetchable, profiled_fetches,
                              resumable_sampler, set_data_epoch, stateful_stream, training_loader,
                              warn_overfit_shuffling, wrap_loader)
from volt.trainer.eval_loop import EvalLoop
from volt.trainer.hooks import step_caller, takes_dataloader_iter
from volt.trainer.progress import LoopState
from volt.utilities.combined_loader import CombinedLoader, loader_length
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.host_copy import HostCopy
from volt.utilities.rank_zero import rank_zero_info, rank_zero_warn
from volt.utilities.seed import get_rng_states, set_rng_states
from volt.utilities.warnings import PossibleUserWarning

_END = object()
_NO_KWARGS: Dict[str, Any] = {}  # the automatic step's optimizer.step() arguments: none (never written to)


def _trainer_attribute(name: str) -> property:
    """A property of the loop that reads and sets the Trainer's attribute `name`."""
    return property(lambda loop: getattr(loop.trainer, name), lambda loop, value: setattr(loop.trainer, name, value))


class FitLoop:
    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.state = LoopState()
        self.val_loop = EvalLoop(trainer, "validate")
        self.train_loader: Any = None
        self.shown_loaders: Any = None  # what `trainer.train_dataloader` shows (`setup_train_data`)
        self.num_training_batches: float = math.inf
        self.val_check_batch: float = math.inf
        self.train_source: Any = None  # the dataloaders passed to `Trainer.fit`, if any
        self._resumed_rng: Optional[dict] = None  # RNG state at the moment the checkpoint was taken
        self._resumed_results: Optional[dict] = None  # self.log state from the checkpoint
        self._resumed_stream: Optional[dict] = None  # the iterable training stream's state from the checkpoint
        # where the last epoch stopped, when the fit's stop cut it short (`LoopState.cut_short_after`): the RNG
        # state and the stream's position, which a fit that goes on continues from (`_reopen_cut_epoch`)
        self._cut_rng: Optional[dict] = None
        self._cut_stream: Optional[dict] = None
        # Lightning's `fit_loop.restarting`: True from a checkpoint's restore while the fit finishes the epoch the
        # checkpoint was taken inside (until that epoch's end is done); user callbacks read it
        self.restarting = False
        # Called once when a run reaches the point where it is ready to train (a resumed one: the checkpoint's
        # point, its data repositioned): checkpointing.py times recoveries with it.
        self.on_resume_point: Optional[Callable[[], None]] = None
        self.stream: Any = None  # what says where an iterable training stream stands (data.stateful_stream)
        self._no_stream_why = ""  # why there is none, for the replay notice
        self._stream_state: Optional[dict] = None  # the stream's state before the batch fetched ahead
        self._unit_running = False  # a batch or an epoch end is running: work for the checkpoint point waits
        self._at_point: List[Callable[[], None]] = []
        self.grads_pending = False  # the last batch accumulated gradients without stepping: a checkpoint keeps them
        self._epoch_outputs: List[Any] = []
        self._user_optimizer_step = False  # what the module overrides, read once per fit in `run`
        self._plain_optimizer_step = False  # the precision plugin adds nothing to optimizer.step (set in `run`)
        self._iterating = False  # `training_step(self, dataloader_iter)`: the step fetches its own batches
        self._warned_no_loss = False  # each warned once per fit
        self._warned_none_batch = False
        self._warned_non_finite = False
        self._told_minimum = False  # "min_epochs not met" said
        self._loss_checks: Deque[Tuple[HostCopy, int, int, int]] = deque()  # on their way to the host (`_check_loss`)
        self._collect_outputs = False
        self._train_loaded_epoch = 0
        self._last_validation = 0.0  # time.monotonic() when training started or the last validation ended

    # ------------------------------------------------------------------ the run
    def run(self) -> None:
        trainer, hooks = self.trainer, self.trainer._hooks
        self._user_optimizer_step = "optimizer_step" in hooks.module_overrides
        self._plain_optimizer_step = trainer.precision_plugin.plain_optimizer_step
        self._collect_outputs = "training_epoch_end" in hooks.module_overrides  # 1.x: keep every batch's outputs
        self._iterating = takes_dataloader_iter(trainer.lightning_module, "training_step")
        self._warned_no_loss = self._warned_non_finite = self._warned_none_batch = self._told_minimum = False
        self._loss_checks.clear()
        if self._should_sanity_check():
            self._sanity_check()
        if self._resumed_results is not None:  # after the sanity check, which clears the metric dicts
            trainer._results.load_state_dict(self._resumed_results)
            self._resumed_results = None
        if self.state.cut_short_after and not self._stops_in_epoch():
            self._reopen_cut_epoch()
        self.setup_train_data()
        if self.num_training_batches == 0:
            rank_zero_info("`Trainer.fit` stopped: No training batches.")
            return
        mid_epoch = self.state.batch_idx > 0  # resumed inside an epoch: its end still has to run
        if self.done and not mid_epoch:
            self._reach_resume_point()
            return
        if self.val_loop.loaders is None and self.validates_in_epoch(self.state.epoch):
            self.val_loop.enabled_or_setup()  # as Lightning: progress bars know the validation size at train start
        _warn_eval_modules(trainer.lightning_module)
        hooks.call("on_train_start")
        self._last_validation = time.monotonic()  # a time-based `val_check_interval` counts from here
        if not mid_epoch:
            self._reach_resume_point()
        try:
            while mid_epoch or not self.done:
                mid_epoch = False
                self.run_epoch()
        except BaseException:
            self._unit_running, self._at_point = False, []  # a batch that failed half-way writes no checkpoint
            raise
        self.restarting = False
        hooks.call("on_train_end")

    @property
    def done(self) -> bool:
        trainer, s = self.trainer, self.state
        if trainer.max_steps != -1 and s.global_step >= trainer.max_steps:
            rank_zero_info(f"`Trainer.fit` stopped: `max_steps={trainer.max_steps}` reached.")
            return True
        if trainer.max_epochs not in (None, -1) and s.epoch >= trainer.max_epochs:
            rank_zero_info(f"`Trainer.fit` stopped: `max_epochs={trainer.max_epochs}` reached.")
            return True
        if trainer.should_stop and self.can_stop_early:
            return True
        return False

    # Lightning's `trainer.fit_loop.max_epochs = 4` (e.g. to fit further): the Trainer's limits, read and set here
    max_epochs = _trainer_attribute("max_epochs")
    min_epochs = _trainer_attribute("min_epochs")
    max_steps = _trainer_attribute("max_steps")
    min_steps = _trainer_attribute("min_steps")

    @property
    def batches_stepped(self) -> int:
        """Training batches that ended with an optimizer step (Lightning's `_batches_that_stepped`): the x axis of
        the step metrics, which callbacks that write to the loggers themselves use too."""
        return self.state.batches_stepped

    @property
    def batches_into_epoch(self) -> int:
        """Batches of the current epoch already run. Above 0 at train start when the run resumes inside an epoch:
        it gets no `on_train_epoch_start` for it (as Lightning), so callbacks that set per-epoch state there set it
        in `on_train_start` too."""
        return self.state.batch_idx

    @property
    def can_stop_early(self) -> bool:
        trainer, s = self.trainer, self.state
        met_epochs = s.epoch >= trainer.min_epochs if trainer.min_epochs else True
        met_steps = s.global_step >= trainer.min_steps if trainer.min_steps else True
        if not (met_epochs and met_steps) and trainer.should_stop and not self._told_minimum:
            self._told_minimum = True  # once a fit, as Lightning
            rank_zero_info(f"Trainer was signaled to stop but the required `min_epochs={trainer.min_epochs!r}` or "
                           f"`min_steps={trainer.min_steps!r}` has not been met. Training will continue...")
        return met_epochs and met_steps

    def run_epoch(self) -> None:
        trainer, hooks, s = self.trainer, self.trainer._hooks, self.state
        if s.batch_idx == 0:  # as Lightning, an epoch a checkpoint resumes inside does not start again
            if loaders_stale(trainer, self._train_loaded_epoch):
                self.setup_train_data()
            hooks.call("on_train_epoch_start")
        self._epoch_outputs = []
        n = self.num_training_batches
        # fixed for the epoch, so the batch loop below does not ask again at every batch: what runs, and the hooks
        # it calls, bound (None: nothing implements the hook)
        automatic = trainer.lightning_module.automatic_optimization
        schedulers = automatic and bool(trainer.lr_scheduler_configs)
        validates = self.validates_in_epoch(s.epoch)
        iterating = self._iterating
        batch_start, batch_end = hooks.callers["on_train_batch_start"], hooks.callers["on_train_batch_end"]
        training_step = self._training_step_caller()
        step_optimizer = hooks.bind_step("optimizer_step", self._step_optimizer)
        backward = self._backward_caller()
        # on a GPU, batches may come prefetched, already on the device (`_prefetches`); not to a step that fetches
        # its own (`dataloader_iter`)
        prefetch = not iterating and self._prefetches()
        prepare = hooks.prepare_batch if hooks.prepares_batches and not prefetch else None
        # resumed right after the batch that ended this epoch early (max_steps, a stop): only the epoch end is left
        batches = () if s.batch_idx and self._stops_in_epoch() else self._epoch_batches(prefetch)
        if iterating:
            batches = self._iterator_steps(batches)
        is_last = False
        for batch, is_last in batches:
            self._unit_running = True
            batch_idx = s.batch_idx
            if iterating:  # `dataloader_iter`: the step gets the iterator, the hooks the batch it fetched last
                step_input, batch, hook_idx = batch, batch.batch, batch.batch_idx
            else:
                if prepare is not None:
                    batch = prepare(batch, 0)
                step_input, hook_idx = batch, batch_idx
            trainer._results.on_batch_start(batch)
            if batch is None and not iterating:  # as Lightning: only on_train_batch_end runs for it (warned once)
                outputs, stepped = self._skip_none_batch(), False
            elif batch_start is not None and batch_start(batch, hook_idx) == -1:
                self._step_schedulers("epoch", plateau=False)
                break
            else:
                try:
                    if automatic:
                        outputs, stepped = self._automatic_batch(step_input, batch_idx, is_last, training_step,
                                                                 step_optimizer, backward)
                    else:
                        outputs, stepped = self._manual_batch(step_input, batch_idx, training_step), True
                except StopIteration:
                    if not iterating:
                        raise
                    break  # the step found the epoch's batches used up: as in Lightning, the epoch ends here
            if iterating:
                batch, hook_idx, is_last = step_input.batch, step_input.batch_idx, step_input.done
                self._count_fetched(step_input)
            self.grads_pending = not stepped
            s.batch_idx += 1
            s.total_batch_idx += 1
            if stepped:
                s.batches_stepped += 1
            if schedulers and stepped:
                self._step_schedulers("step", plateau=False)
            if schedulers and is_last:
                self._step_schedulers("epoch", plateau=False)
            if batch_end is not None:
                batch_end(outputs, batch, hook_idx)
            if stepped:
                self._log_step_metrics(outputs, hook_idx, is_last)
            if validates and self._should_validate(is_last):
                self.run_validation()
            if schedulers and stepped:
                self._step_schedulers("step", plateau=True)
            self._checkpoint_point()
            # `_stops_in_epoch` only when a stop was asked or steps are limited (else it is False: no call)
            if is_last or s.batch_idx >= n or (
                    (trainer.should_stop or trainer.max_steps != -1) and self._stops_in_epoch()):
                break
        self._end_epoch(ran_out=is_last or s.batch_idx >= n)

    def _iterator_steps(self, batches: Iterator[Tuple[Any, bool]]) -> Iterator[Tuple[DataLoaderIter, bool]]:
        """For `training_step(self, dataloader_iter)`: the epoch's batches in one iterator, handed to each step
        until its last batch is fetched; with it, whether the step starts the epoch's last batch."""
        s = self.state
        start = s.batch_idx
        fetcher = DataLoaderIter((batch, start + i, 0, is_last) for i, (batch, is_last) in enumerate(batches))
        while not fetcher.done:
            yield fetcher, s.batch_idx + 1 >= self.num_training_batches

    def _count_fetched(self, fetcher: DataLoaderIter) -> None:
        """Count the batches a `dataloader_iter` step fetched as consumed (the loop adds the step's one)."""
        s = self.state
        extra = fetcher.batch_idx - s.batch_idx
        if fetcher.fetched == 0 or extra < 0:
            raise MisconfigurationException(
                "`training_step(self, dataloader_iter)` returned without fetching a batch. Call "
                "`batch, batch_idx, dataloader_idx = next(dataloader_iter)` in every step."
            )
        s.batch_idx += extra
        s.total_batch_idx += extra

    def _stops_in_epoch(self) -> bool:
        trainer = self.trainer
        if trainer.max_steps != -1 and self.state.global_step >= trainer.max_steps:
            return True
        return trainer.should_stop and self.can_stop_early

    def at_checkpoint_point(self, fn: Callable[[], None]) -> None:
        """Run `fn` (a checkpoint write, or file work that follows one) at the next checkpoint point, in the order
        asked; at once when no batch or epoch end is running (see `Trainer.schedule_checkpoint`)."""
        if self._unit_running:
            self._at_point.append(fn)
        else:
            fn()

    def _checkpoint_point(self) -> None:
        """The running batch or epoch end is complete: write the checkpoints scheduled during it, act on a stop
        signal. A checkpoint written here holds a loop state with nothing half done (the module docstring)."""
        self._unit_running = False
        if self._at_point:
            work, self._at_point = self._at_point, []
            for fn in work:
                fn()
        signals = self.trainer._signals
        if signals.pending():
            signals.check(self.trainer, self.state.total_batch_idx)

    # ------------------------------------------------------------------ resume
    def resume(self, state: Dict[str, Any]) -> None:
        """Continue from a volt checkpoint's loop state (volt/trainer/checkpointing.py): the cursor now, the RNG
        streams and `self.log` accumulators where the resumed run reaches the point they were saved at."""
        s = self.state
        self._resumed_rng = state.pop("rng", None)
        self._resumed_results = state.pop("results", None)
        self._resumed_stream = state.pop("stream", None)
        s.load_state_dict({"cut_short_after": 0, **state})  # (checkpoints written before the field had none)
        self.restarting = bool(s.cut_short_after or (s.batch_idx and not s.epoch_done))
        if s.epoch_done:
            s.epoch += 1
            s.batch_idx, s.epoch_done, s.val_done_at_batch = 0, False, -1
            if not s.cut_short_after:
                s.epoch_rng = s.sampler_rng = None
        if s.cut_short_after:  # the checkpoint's RNG and stream position are those where the epoch stopped
            self._cut_rng, self._cut_stream = self._resumed_rng, self._resumed_stream

    def _reopen_cut_epoch(self) -> None:
        """The last epoch was cut short by the fit's stop, and this fit goes on: continue that epoch at its next
        batch, in its data order and from the RNG state at the stop, as a run that never stopped would. (Its
        epoch-end hooks ran at the stop and run again at its real end; its epoch means cover the batches after the
        stop.)"""
        s = self.state
        s.epoch -= 1
        s.batch_idx, s.cut_short_after = s.cut_short_after, 0
        self._resumed_rng, self._resumed_stream = self._cut_rng, self._cut_stream

    def resume_from_lightning(self, checkpoint: Dict[str, Any]) -> None:
        """Continue from a checkpoint another writer (Lightning) made: its batch progress says whether it stopped
        mid-epoch; as Lightning does, the rest of an unfinished epoch is drawn afresh from the loader's start."""
        s = self.state
        loop_state = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        batches = loop_state.get("epoch_loop.batch_progress") or {}
        consumed = int((batches.get("current") or {}).get("processed", 0))
        mid_epoch = consumed > 0 and not batches.get("is_last_batch", True)
        s.epoch = int(checkpoint.get("epoch", 0)) + (0 if mid_epoch else 1)
        s.batch_idx = consumed if mid_epoch else 0
        s.total_batch_idx = int((batches.get("total") or {}).get("processed", 0))
        s.global_step = int(checkpoint.get("global_step", 0))
        s.batches_stepped = s.global_step

    def rng_state(self) -> dict:
        """The global RNG states, and the state of the training sampler's own generator if it has one (after an
        epoch cut short by the fit's stop: as they were at the stop, where a fit that goes on continues)."""
        if self.state.cut_short_after and self._cut_rng is not None:
            return self._cut_rng
        states = get_rng_states()
        generator = _sampler_generator(self.train_loader)
        if generator is not None:
            states["train_sampler_generator"] = generator.get_state()
        return states

    def _reach_resume_point(self) -> None:
        """The run is where the checkpoint was taken (or, not resumed, about to train): continue with the
        checkpoint's RNG state, and tell `on_resume_point` once."""
        if self._resumed_rng is not None:
            set_rng_states(self._resumed_rng)
            generator = _sampler_generator(self.train_loader)
            if generator is not None and "train_sampler_generator" in self._resumed_rng:
                generator.set_state(self._resumed_rng["train_sampler_generator"])
            self._resumed_rng = None
        if self.on_resume_point is not None:
            notify, self.on_resume_point = self.on_resume_point, None
            notify()

    def _end_epoch(self, ran_out: bool) -> None:
        """The epoch's end; `ran_out`: its data ended (else a batch hook ended it, or the fit's stop cut it short)."""
        trainer, hooks, s = self.trainer, self.trainer._hooks, self.state
        results = trainer._results
        self._reach_resume_point()  # resumed after the epoch's last batch: nothing drew from the RNG since
        # as Lightning, plateau schedulers step only after a whole epoch (not one cut short by max_steps or a stop)
        complete = ran_out or not self._stops_in_epoch()
        s.cut_short_after = 0
        if not complete:  # where a fit that goes on continues this epoch (a checkpoint from here on holds it)
            self._cut_rng, self._cut_stream = self.rng_state(), self.stream_state()
            s.cut_short_after = s.batch_idx
        self._unit_running = True
        s.epoch_done = True
        results.epoch_end(results.train)  # epoch values are visible to the epoch-end hooks
        if self._collect_outputs:
            hooks.call_module("training_epoch_end", self._epoch_outputs)
        self._epoch_outputs = []
        hooks.call("on_train_epoch_end")
        self._read_loss_checks(wait=True)  # the epoch's loss checks, landed or not (the loop pauses here anyway)
        if complete:
            self._step_schedulers("epoch", plateau=True)
        _, to_log = results.epoch_end(results.train)
        results.log_to_loggers(to_log, step=s.batches_stepped - 1)
        results.train.reset()
        self._checkpoint_point()  # with `epoch_done` set, a checkpoint written here resumes at the next epoch
        s.epoch += 1
        s.batch_idx = 0
        s.epoch_done = False
        s.val_done_at_batch = -1
        if not s.cut_short_after:  # (a cut-short epoch keeps its data order's RNG states)
            s.epoch_rng = s.sampler_rng = None
        self.restarting = False

    # ------------------------------------------------------------------ data
    def setup_train_data(self) -> None:
        trainer = self.trainer
        source = self.train_source
        if source is None:
            source = trainer._hooks.call_dataloader_hook("train_dataloader")
        else:
            check_iterable(source, "passed to `Trainer.fit(train_dataloaders=...)`")
        if isinstance(source, CombinedLoader) and source.mode == "sequential":
            # refused below, once sized: as in Lightning, `trainer.num_training_batches` shows the size
            self.num_training_batches = limit_batches(source.num_batches, trainer.limit_train_batches,
                                                      "limit_train_batches")
        given, source = source, training_loader(source)
        self._train_loaded_epoch = trainer.current_epoch
        sampler_fn = distributed_sampler_fn(trainer, train=True)
        check_loaders(given, "train_dataloader", bool(trainer.reload_dataloaders_every_n_epochs))
        if trainer.overfit_batches:
            warn_overfit_shuffling(source, "train")
        self.train_loader = wrap_loader(source, sequential=bool(trainer.overfit_batches), sampler_fn=sampler_fn,
                                        pin_memory=trainer.strategy.root_device.type == "cuda")
        # `trainer.train_dataloader`: the user's own loaders, unless other samplers were put in (as in Lightning)
        resampled = sampler_fn is not None or trainer.overfit_batches
        self.shown_loaders = as_given(self.train_loader if resampled else given)
        sampled = resumable_sampler(self.train_loader) is not None  # map-style: resumes by sampler-level skipping
        self.stream, self._no_stream_why = (None, "") if sampled else stateful_stream(self.train_loader)
        # `overfit_batches` and `fast_dev_run` set the limits (as in Lightning)
        self.num_training_batches = limit_batches(loader_length(self.train_loader), trainer.limit_train_batches,
                                                  "limit_train_batches")
        self.val_check_batch = self._val_check_batch()
        if trainer.loggers and 0 < self.num_training_batches < trainer.log_every_n_steps and not trainer.fast_dev_run:
            rank_zero_warn(
                f"The number of training batches ({self.num_training_batches}) is smaller than the logging interval "
                f"Trainer(log_every_n_steps={trainer.log_every_n_steps}), so an epoch can end without a step metric "
                "logged. Set a lower `log_every_n_steps` to see logs for each training epoch.",
                category=PossibleUserWarning)

    def _val_check_batch(self) -> float:
        trainer, n = self.trainer, self.num_training_batches
        interval = trainer.val_check_interval
        if trainer._val_check_seconds is not None:  # by wall-clock time (`_should_validate`)
            return math.inf
        if isinstance(interval, int) and not isinstance(interval, bool):
            if (trainer.check_val_every_n_epoch is not None and n != math.inf and interval > n
                    and trainer.limit_val_batches > 0):
                raise ValueError(
                    f"`val_check_interval` ({interval}) must be less than or equal to the number of the training "
                    f"batches ({n}). If you want to disable validation set `limit_val_batches` to 0.0 instead. "
                    "If you want to validate based on the total training batches, set `check_val_every_n_epoch=None`."
                )
            return interval
        if n == math.inf:
            if interval != 1.0:
                raise MisconfigurationException(
                    f"`val_check_interval={interval}` is a fraction, but the training dataloader has no length. "
                    "Use an int number of batches."
                )
            return math.inf
        return max(1, int(n * interval))

    def _prefetches(self) -> bool:
        """Whether the next batch is copied to the GPU while the current one trains (trainer/data.py's
        DevicePrefetcher): on CUDA, with volt's own batch transfer (transfer hooks a user overrides keep running in
        their place, batch by batch), from a loader with worker processes (`prefetchable`), unless a stateful stream's
        saved position must stay that of the batches consumed."""
        trainer = self.trainer
        return (trainer.strategy.root_device.type == "cuda" and not trainer._hooks.custom_transfer
                and prefetchable(self.train_loader) and self.stream is None)

    def _epoch_batches(self, prefetch: bool = False) -> Iterator[Tuple[Any, bool]]:
        """Yield (batch, is_last) for this epoch, resuming mid-epoch exactly when a checkpoint says so; with
        `prefetch`, on the GPU already, one batch fetched ahead."""
        s = self.state
        loader = self.train_loader
        set_data_epoch(loader, s.epoch)

        skip = s.batch_idx
        n = self.num_training_batches
        if skip >= n:  # resumed after the epoch's last batch
            self._reach_resume_point()
            return
        resumable = resumable_sampler(loader)
        if skip and self._resumed_rng is not None:
            iterator = self._resumed_iterator(skip, resumable)
        else:
            s.epoch_rng = get_rng_states()
            iterator = iter(loader)
        if self.trainer._profiling:
            iterator = profiled_fetches(iterator, self.trainer.profiler, "[_TrainingEpochLoop].train_dataloader_next")
        if prefetch:  # fetches the first batch now, before the RNG restore below (the interrupted run had fetched it)
            hooks = self.trainer._hooks
            iterator = DevicePrefetcher(iterator, lambda batch: hooks.prepare_batch(batch, 0),
                                        self.trainer.strategy.root_device)
        if n != math.inf:
            self._reach_resume_point()
            remaining = int(n) - skip
            batches = itertools.islice(iterator, remaining)  # never fetches past the last batch
            first = next(batches, _END)
            if first is _END:
                return
            if resumable is not None:  # the sampler drew the epoch's order for the first batch
                s.sampler_rng = resumable.order_rng
            yield first, remaining == 1
            for i, batch in enumerate(batches, 2):
                yield batch, i == remaining
            return
        # no length: look one batch ahead to know which batch is the last
        stream = self.stream
        current = next(iterator, _END)
        self._reach_resume_point()  # the interrupted run had fetched this batch, too, before its checkpoint
        while current is not _END:
            if stream is not None:  # a checkpoint after `current` resumes before the batch fetched next (one
                self._stream_state = stream.state_dict()  # state_dict() a batch: ~30 us for a `datasets` stream)
            upcoming = next(iterator, _END)
            yield current, upcoming is _END
            current = upcoming

    def _resumed_iterator(self, skip: int, resumable) -> Iterator[Any]:
        """The interrupted epoch's iterator, rebuilt from the RNG state the epoch started with and positioned after
        its first `skip` batches: by the sampler (map-style data), by the stream's saved state, or by replaying."""
        s = self.state
        if s.epoch_rng is not None:
            set_rng_states(s.epoch_rng)
        if resumable is not None:
            resumable.resume(skip, s.sampler_rng)
            return iter(self.train_loader)
        saved, self._resumed_stream = self._resumed_stream, None
        if self.stream is not None and saved is not None:
            self.stream.load_state_dict(saved)
            return iter(self.train_loader)
        why = self._no_stream_why or "the checkpoint holds no state of the training stream for this process"
        rank_zero_info(f"Resuming inside an epoch of iterable data: {why}; replaying {skip:,} batches to reach the "
                       "resume point.")
        iterator = iter(self.train_loader)
        for _ in range(skip):  # loading and dropping each batch
            next(iterator, None)
        return iterator

    def stream_state(self) -> Optional[Dict[str, Any]]:
        """Where the iterable training stream stands at this checkpoint point (None at an epoch boundary, or when
        the stream cannot say): after the batches consumed so far, not counting one fetched ahead."""
        s = self.state
        if self.stream is None:
            return None
        if s.cut_short_after:  # where the epoch cut short by the fit's stop continues
            return self._cut_stream
        if s.batch_idx == 0 or s.epoch_done:
            return None
        return self._stream_state if self.num_training_batches == math.inf else self.stream.state_dict()

    def forward_batches(self) -> None:
        """Run `training_step` once more on every training batch of this epoch, under `no_grad`: no backward, no
        optimizer step, and what it logs is dropped. StochasticWeightAveraging recomputes BatchNorm statistics for
        the averaged weights this way."""
        from volt.trainer.results import Results

        trainer, hooks = self.trainer, self.trainer._hooks
        results, trainer._results = trainer._results, Results(trainer)  # a throwaway sink for what training_step logs
        training_step = self._training_step_caller()
        set_data_epoch(self.train_loader, self.state.epoch)
        limit = None if self.num_training_batches == math.inf else int(self.num_training_batches)
        batches = itertools.islice(enumerate(self.train_loader), limit)
        if self._iterating:  # each step fetches from one iterator, until it is used up
            fetcher = DataLoaderIter((batch, i, 0, i + 1 == limit) for i, batch in batches)
            batches = ((0, fetcher) for _ in iter(lambda: fetcher.done, True))
        try:
            with torch.no_grad():
                for batch_idx, batch in batches:
                    if not self._iterating:
                        batch = hooks.prepare_batch(batch, 0)
                    trainer._results.on_batch_start(batch)
                    try:
                        training_step(batch, batch_idx)
                    except StopIteration:
                        if not self._iterating:
                            raise
        finally:
            trainer._results = results

    # ------------------------------------------------------------------ one batch
    def _training_step_caller(self) -> Callable[..., Any]:
        """training_step bound for the batches of an epoch: through the strategy (so a DDP/FSDP wrapper sees the
        call), adapted to the step's signature, under the precision plugin's forward context when it has one."""
        trainer = self.trainer
        module_step = step_caller(trainer.lightning_module, "training_step",
                                  trainer.strategy.step_function("training_step"))
        step = trainer._hooks.bind_step("training_step", module_step)
        precision = trainer.precision_plugin
        if not precision.wraps_forward:
            return step

        def in_forward_context(*args: Any) -> Any:
            with precision.forward_context():
                return step(*args)

        return in_forward_context

    def _automatic_batch(self, batch: Any, batch_idx: int, is_last: bool, training_step: Callable[..., Any],
                         step_optimizer: Callable[..., Any], backward: Callable[[torch.Tensor], None]
                         ) -> Tuple[Any, bool]:
        """One batch of automatic optimization; `training_step`, `step_optimizer` and `backward` are bound for the
        epoch (`Hooks.bind_step`, `_backward_caller`)."""
        trainer = self.trainer
        accumulate = trainer.accumulate_grad_batches
        window_pos = batch_idx % accumulate
        accumulating = accumulate > 1 and not (window_pos == accumulate - 1 or is_last)
        divisor = 1 if accumulate == 1 else self._accumulation_divisor(batch_idx)
        optimizers = trainer.strategy.optimizers  # the Trainer's (its property is a call more per batch)
        optimizer = optimizers[0] if optimizers else None
        zero_grad = optimizer is not None and window_pos == 0
        hooks = trainer._hooks
        before_zero_grad = hooks.callers["on_before_zero_grad"]
        user_zero_grad = "optimizer_zero_grad" in hooks.module_overrides
        result: List[Any] = []

        def closure():
            if not torch.is_grad_enabled():  # an optimizer whose `step` runs under no_grad (Hugging Face's AdamW)
                with torch.enable_grad():
                    return closure()
            output = training_step(batch, batch_idx)
            # the common case, a loss tensor, without a call
            loss = output if isinstance(output, torch.Tensor) and output.requires_grad else _loss_from(output)
            if zero_grad:  # on_before_zero_grad -> optimizer_zero_grad
                if before_zero_grad is not None:
                    before_zero_grad(optimizer)
                if user_zero_grad:
                    hooks.call_module("optimizer_zero_grad", trainer.current_epoch, batch_idx, optimizer)
                else:
                    optimizer.zero_grad()
            if loss is None:
                self._no_loss(batch_idx)
            else:
                if divisor != 1:
                    loss = loss / divisor
                backward(loss)  # under `detect_anomaly`, torch raises first, naming the op that made a NaN
                if trainer.detect_anomaly:
                    _check_finite(loss, trainer)
            result.append((output, loss))
            return loss

        if optimizer is None or accumulating:
            with trainer.strategy.no_backward_sync(accumulating):
                closure()
            stepped = False
        else:
            if self._user_optimizer_step:
                hooks.call_module("optimizer_step", trainer.current_epoch, batch_idx,
                                  trainer.strategy._lightning_optimizers[0], closure)
            else:  # what LightningOptimizer.step does, two calls shorter
                step_optimizer(optimizer, closure, _NO_KWARGS, True)
            if not result:
                raise MisconfigurationException(
                    "The closure hasn't been executed: `optimizer_step` (or the optimizer's `step`) did not run the "
                    "optimizer closure. Call `optimizer.step(closure=optimizer_closure)` in your override, so that "
                    "training_step and backward run."
                )
            stepped = True
        # the closure names itself (the grad-mode retry): break that reference cycle, so that the batch's tensors and
        # graph are freed when the batch ends rather than by the garbage collector (a collection every few steps)
        closure = None
        output, loss = result[-1]
        if loss is not None and output is loss:
            outputs = {"loss": trainer._results.detach(loss)}
        else:
            outputs = _batch_outputs(output, loss)
        if self._collect_outputs and outputs is not None:
            self._epoch_outputs.append(outputs)
        return outputs, stepped

    def _skip_none_batch(self) -> None:
        """A training batch that is None (a collate_fn that drops a batch) trains nothing; warned once per fit."""
        if not self._warned_none_batch:
            self._warned_none_batch = True
            rank_zero_warn("train_dataloader yielded None. If this was on purpose, ignore this warning: the batch is "
                           "skipped (no training_step), only on_train_batch_end runs for it.")
        return None

    def _no_loss(self, batch_idx: int) -> None:
        """A `training_step` that returned None: with several ranks an error (the other ranks would wait in their
        gradient all-reduce for this one's), otherwise a warning once per fit, as Lightning."""
        if self.trainer.world_size > 1:
            raise RuntimeError(
                f"`training_step` returned None on rank {self.trainer.global_rank} (epoch {self.trainer.current_epoch}, "
                f"batch {batch_idx}). Skipping the `training_step` by returning None in distributed training is not "
                "supported: the other ranks would wait for this rank's gradients. Return a loss on every rank (e.g. "
                "`loss * 0` for a batch to ignore), or filter such batches out of the data."
            )
        if self._warned_no_loss:
            return
        self._warned_no_loss = True
        rank_zero_warn(
            f"`training_step` returned None (epoch {self.trainer.current_epoch}, batch {batch_idx}), so this batch "
            "trained nothing: no backward, and the optimizer step had no gradients. Return the loss (a Tensor or "
            "{'loss': ...}); if skipping batches is on purpose, ignore this warning (it is shown once per fit)."
        )

    def _accumulation_divisor(self, batch_idx: int) -> int:
        """The loss divisor: the window size, or the size of the final partial window (volt differs from
        Lightning here: it divides a partial window of k batches by k, not by accumulate_grad_batches)."""
        accumulate, n = self.trainer.accumulate_grad_batches, self.num_training_batches
        if n != math.inf:
            full_windows_end = (int(n) // accumulate) * accumulate
            if batch_idx >= full_windows_end:
                return int(n) - full_windows_end
        return accumulate

    def _manual_batch(self, batch: Any, batch_idx: int, training_step: Callable[..., Any]) -> Any:
        output = training_step(batch, batch_idx)
        if isinstance(output, torch.Tensor):
            outputs = {"loss": output.detach()}
        elif isinstance(output, Mapping):
            outputs = {k: (v.detach() if isinstance(v, torch.Tensor) and k == "loss" else v) for k, v in output.items()}
        elif output is None:
            outputs = None
        else:
            raise MisconfigurationException(
                "In manual optimization, `training_step` must either return a Tensor or have no return (a dict of "
                f"values for `on_train_batch_end` works too); it returned {type(output).__name__}."
            )
        if self._collect_outputs and outputs is not None:
            self._epoch_outputs.append(outputs)
        return outputs

    # ------------------------------------------------------------------ the parts of a step (manual optimization too)
    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """on_before_backward -> backward (the module's hook, under the precision plugin's loss scaling) ->
        on_after_backward; `manual_backward` comes here too."""
        hooks = self.trainer._hooks
        before, after = hooks.callers["on_before_backward"], hooks.callers["on_after_backward"]
        if before is not None:
            before(loss)
        backward_fn = self._module_backward if "backward" in hooks.module_overrides else torch.Tensor.backward
        self.trainer.precision_plugin.backward(loss, backward_fn, *args, **kwargs)
        if after is not None:
            after()

    def _backward_caller(self) -> Callable[[torch.Tensor], None]:
        """The automatic step's backward, bound for an epoch: the loss's own `backward` when no hook runs around it
        and the precision plugin does not scale the loss (two calls less per batch), else `backward` above."""
        hooks = self.trainer._hooks
        plain = (hooks.callers["on_before_backward"] is None and hooks.callers["on_after_backward"] is None
                 and "backward" not in hooks.module_overrides and self.trainer.precision_plugin.plain_backward)
        return torch.Tensor.backward if plain else self.backward

    def _module_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        self.trainer._hooks.call_module("backward", loss, *args, **kwargs)

    def optimizer_step(self, optimizer, closure: Optional[Callable[[], Any]] = None, **kwargs: Any) -> Any:
        """An optimizer step through `LightningOptimizer.step` (manual optimization, a module's `optimizer_step`)."""
        automatic = self.trainer.lightning_module.automatic_optimization
        return self.trainer._hooks.call_step("optimizer_step", self._step_optimizer, optimizer, closure, kwargs,
                                             automatic)

    def _step_optimizer(self, optimizer, closure: Optional[Callable[[], Any]], kwargs: Dict[str, Any],
                        automatic: bool) -> Any:
        """Every optimizer step, automatic and manual: the closure, then on_before_optimizer_step and clipping,
        then the precision plugin's step."""
        trainer = self.trainer
        hooks = trainer._hooks
        before = hooks.callers["on_before_optimizer_step"]
        clips = automatic and (trainer.gradient_clip_val or "configure_gradient_clipping" in hooks.module_overrides)
        # None when nothing runs between the closure and the step: the plugin steps with the closure as it is
        after_closure = functools.partial(self._after_closure, optimizer, before, clips) if before or clips else None
        closure = closure or _no_closure
        if after_closure is None and self._plain_optimizer_step:  # what the plugin would do, one call shorter
            out = optimizer.step(closure=closure, **kwargs) if kwargs else optimizer.step(closure=closure)
        elif kwargs:
            out = trainer.precision_plugin.optimizer_step(optimizer, closure, after_closure, automatic, **kwargs)
        else:  # the automatic step: a plain call is cheaper than unpacking an empty dict
            out = trainer.precision_plugin.optimizer_step(optimizer, closure, after_closure, automatic)
        self.state.global_step += 1
        return out

    def _after_closure(self, optimizer, before: Optional[Callable[[Any], None]], clips: bool) -> None:
        """What runs once the closure has: on_before_optimizer_step, then gradient clipping."""
        if before is not None:
            before(optimizer)
        if clips:
            trainer = self.trainer
            trainer._hooks.call_module("configure_gradient_clipping", optimizer,
                                       gradient_clip_val=trainer.gradient_clip_val,
                                       gradient_clip_algorithm=trainer.gradient_clip_algorithm)

    # ------------------------------------------------------------------ validation, schedulers, logging
    def _should_sanity_check(self) -> bool:
        trainer = self.trainer
        return (trainer.num_sanity_val_steps != 0 and trainer.limit_val_batches != 0
                and "validation_step" in trainer._hooks.module_overrides)

    def _sanity_check(self) -> None:
        trainer, hooks = self.trainer, self.trainer._hooks
        rng = get_rng_states()  # the sanity check must not shift the training run's randomness
        trainer.state.stage = "sanity_check"
        hooks.call("on_sanity_check_start")
        steps = trainer.num_sanity_val_steps
        self.val_loop.run(max_batches=None if steps == math.inf else steps)
        hooks.call("on_sanity_check_end")
        trainer.state.stage = "train"
        trainer._results.reset_metric_dicts()
        set_rng_states(rng)

    def validates_in_epoch(self, epoch: int) -> bool:
        """Whether validation runs in `epoch`: one the `check_val_every_n_epoch` period ends, with
        `limit_val_batches` above 0 and a `validation_step`."""
        trainer = self.trainer
        every = trainer.check_val_every_n_epoch
        if every is not None and (epoch + 1) % every != 0:
            return False
        return trainer.limit_val_batches != 0 and "validation_step" in trainer._hooks.module_overrides

    def _should_validate(self, is_last: bool) -> bool:
        """Whether validation runs after this batch, in an epoch that validates (`validates_in_epoch`)."""
        trainer, s = self.trainer, self.state
        every = trainer.check_val_every_n_epoch
        seconds = trainer._val_check_seconds
        if s.val_done_at_batch == s.batch_idx:
            return False
        if is_last and (self._iterating or (self.val_check_batch == math.inf and seconds is None)):
            return True
        if trainer.should_stop and self.can_stop_early:
            return True
        if seconds is not None:  # as Lightning 2.6: once the interval has passed since the last validation ended
            return time.monotonic() - self._last_validation >= seconds
        if self.val_check_batch == math.inf:
            return is_last
        count = s.total_batch_idx if every is None else s.batch_idx
        return count % self.val_check_batch == 0

    def run_validation(self) -> None:
        trainer, s = self.trainer, self.state
        s.val_done_at_batch = s.batch_idx
        if loaders_stale(trainer, self.val_loop.loaded_epoch):
            self.val_loop.loaders = None
        if not self.val_loop.enabled_or_setup():
            return
        trainer.state.stage = "validate"
        self.val_loop.run()
        trainer.state.stage = "train"
        self._last_validation = time.monotonic()

    def _step_schedulers(self, interval: str, plateau: bool) -> None:
        trainer = self.trainer
        configs = trainer.lr_scheduler_configs
        if not configs or not trainer.lightning_module.automatic_optimization:
            return
        index = (self.state.batch_idx if interval == "step" else trainer.current_epoch + 1)
        for config in configs:
            if config.reduce_on_plateau != plateau or config.interval != interval or index % config.frequency:
                continue
            metric = None
            if config.reduce_on_plateau:
                metric = trainer.callback_metrics.get(config.monitor)
                if metric is None:
                    available = list(trainer.callback_metrics)
                    if config.strict:
                        raise MisconfigurationException(
                            f"ReduceLROnPlateau conditioned on metric {config.monitor} which is not available. "
                            f"Available metrics are: {available}. Condition can be set using `monitor` key in lr "
                            "scheduler dict"
                        )
                    rank_zero_warn(
                        f"ReduceLROnPlateau conditioned on metric {config.monitor} which is not available but strict "
                        "is set to `False`. Skipping learning rate update.", category=RuntimeWarning)
                    continue
            trainer._hooks.call_module("lr_scheduler_step", config.scheduler, metric)

    def _log_step_metrics(self, outputs: Any, batch_idx: int, is_last: bool) -> None:
        trainer = self.trainer
        every = trainer.log_every_n_steps
        results = trainer._results
        stepped = self.state.batches_stepped  # this batch's step metrics go at x = stepped - 1
        writes = trainer.fast_dev_run or (every > 0 and stepped % every == 0) or trainer.should_stop
        if writes:
            results.log_to_loggers(results.take_step_logs(), step=stepped - 1)
        else:  # not written this step (`logged_metrics` already shows the latest values, as in Lightning)
            results.train.pending.clear()
        if (writes or is_last) and not self._warned_non_finite:
            self._check_loss(outputs, batch_idx)

    def _check_loss(self, outputs: Any, batch_idx: int) -> None:
        """Warn once per fit about a NaN or infinite loss. Checked only where step metrics are written and at each
        epoch's end, never per step, and without waiting for the device: the check's result comes to the host by a
        non-blocking copy (HostCopy) and is read once it has landed (on the CPU: at once), at the latest after the
        epoch-end hooks (`_read_loss_checks`)."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else None
        if isinstance(loss, torch.Tensor):
            trainer = self.trainer
            check = HostCopy({"finite": torch.isfinite(loss).all(), "loss": loss.detach().float().mean()})
            self._loss_checks.append((check, trainer.current_epoch, batch_idx, trainer.global_step))
        self._read_loss_checks(wait=False)

    def _read_loss_checks(self, wait: bool) -> None:
        checks = self._loss_checks
        while checks and (wait or checks[0][0].ready()):
            check, epoch, batch_idx, global_step = checks.popleft()
            values = check.numbers()
            if values["finite"] or self._warned_non_finite:
                continue
            self._warned_non_finite = True
            every = self.trainer.log_every_n_steps
            every = f"every {every} steps (`log_every_n_steps`) and " if every else ""
            rank_zero_warn(
                f"The training loss is {values['loss']} at epoch {epoch}, batch {batch_idx} (global step "
                f"{global_step}). The loss is checked {every}at each epoch end, so it may have become non-finite a "
                "few steps earlier; weights updated from it are likely non-finite too. Check the data, lower the "
                "learning rate or clip gradients (`gradient_clip_val`); `Trainer(detect_anomaly=True)` stops at the "
                "first such step. ModelCheckpoint ranks a NaN monitored value worst."
            )


def _warn_eval_modules(module: torch.nn.Module) -> None:
    """As Lightning: submodules left in eval mode when training starts (e.g. a frozen backbone) are usually a
    mistake, since the Trainer does not switch them to train mode."""
    in_eval = sum(not submodule.training for submodule in module.modules())
    if in_eval:
        rank_zero_warn(f"Found {in_eval} module(s) in eval mode at the start of training. This may lead to unexpected "
                       "behavior during training (dropout and batch norm act as in evaluation); if it is intentional, "
                       "you can ignore this warning.", category=PossibleUserWarning)


def _sampler_generator(loader: Any) -> Optional[torch.Generator]:
    resumable = resumable_sampler(loader)
    return resumable.own_generator() if resumable is not None else None


def _no_closure() -> None:
    return None


def _loss_from(output: Any) -> Optional[torch.Tensor]:
    if output is None:
        return None
    if isinstance(output, torch.Tensor):
        loss = output
    elif isinstance(output, Mapping):
        if "loss" not in output:
            raise MisconfigurationException(
                "In automatic optimization, when `training_step` returns a dict, the 'loss' key needs to be present "
                f"(keys: {sorted(output)}). Put the loss under 'loss', or return None to skip the batch."
            )
        loss = output["loss"]
        if loss is None:
            return None
    else:
        raise MisconfigurationException(
            "In automatic optimization, `training_step` must return a Tensor, a dict, or None (to skip the batch; "
            f"a dict holds the loss under 'loss'); it returned {type(output).__name__}."
        )
    if not isinstance(loss, torch.Tensor):
        raise MisconfigurationException(
            f"The loss returned by `training_step` must be a Tensor, not {type(loss).__name__}."
        )
    if not loss.requires_grad:
        raise MisconfigurationException(
            "The loss returned by `training_step` does not require grad, so there is nothing to backpropagate. "
            "Make sure it is computed from the model's parameters, without `.detach()`, `.item()` or `torch.no_grad`."
        )
    return loss


def _batch_outputs(output: Any, loss: Optional[torch.Tensor]) -> Any:
    """What on_train_batch_end receives: a dict with the (detached, accumulation-scaled) loss."""
    if output is None:
        return None
    if isinstance(output, Mapping):
        return {**output, "loss": loss.detach() if loss is not None else None}
    return {"loss": loss.detach()}


def _check_finite(loss: torch.Tensor, trainer) -> None:
    if not torch.isfinite(loss).all():
        raise ValueError(
            f"The loss is {loss.item()} at epoch {trainer.current_epoch}, batch {trainer.fit_loop.state.batch_idx} "
            f"(global step {trainer.global_step}); `detect_anomaly=True` stops training here. Check the inputs of "
            "this batch, lower the learning rate, or enable gradient clipping."
        )
