"""Checkpoints of a run: what goes in, when it is written, what `ckpt_path` names, and how each part comes back.

This module answers "where is X saved and restored" (the file format itself, atomic writes and safe loads, is
`volt/checkpoint.py`):

    key                           saved from                                restored by, in this order
    state_dict                    the module's weights, via the strategy    restore_module       (after setup)
    <DataModule>                  datamodule.state_dict()                   restore_datamodule
    callbacks[state_key]          each callback's state_dict()              restore_callbacks    (fit only)
    optimizer_states, lr_schedulers  via the strategy (FSDP gathers)        restore_optimizers_and_schedulers
                                                                                                 (after on_fit_start)
    MixedPrecision                the GradScaler                            restore_precision
    loops.fit_loop                loop cursor, RNG streams, should_stop,    restore_loops
                                  self.log accumulators, pending gradients,
                                  an iterable stream's state_dict()
    loops.fit_loop.loggers        each logger's state_dict()                restore_loggers      (first of all)
    loops.*  (Lightning's layout) progress counters for Lightning's resume  (read by Lightning; volt reads its own)
    epoch, global_step, pytorch-lightning_version, hyper_parameters, hparams_name, datamodule_hyper_parameters:
                                  Lightning's keys; hparams are read by `load_from_checkpoint` (volt/module.py)

Where a checkpoint is written (`schedule`): at the fit loop's checkpoint point, once the running batch or epoch end
is complete (volt/trainer/fit_loop.py), so that a run resumed from it continues with the next batch and ends
bit-identical to an uninterrupted one. A checkpoint has a user part (weights, callbacks' and datamodule's state, the
`on_save_checkpoint` hooks, which may edit anything) and a loop part (loop position and RNG, optimizer, scheduler
and precision state, logger positions). At a validation end or an epoch end, where Lightning runs the save hooks
and only the loop part can still change before the point, the checkpoint is assembled at the request and its loop
part taken again at the point; inside a training batch, where validation may follow and change callback state, it
is assembled at the point. The point writes it by calling the public `trainer.save_checkpoint(filepath, weights_only)`,
as Lightning's ModelCheckpoint does, so that an override or a patch of it sees every save (and a patch that writes
nothing leaves nothing written). Called anywhere else, `Trainer.save_checkpoint` writes at once.

A process restarted after a failure (torch's elastic agent, a SLURM requeue) resumes from "last" when `fit` gets no
`ckpt_path`, and logs what the failure cost (volt/trainer/recovery.py).

Where a checkpoint is stored: the strategy's `state_dict_type` picks the form. "full" (one device, DDP by default):
one file, written by rank 0 (`SingleFile`, volt/checkpoint.py). "sharded" (FSDP by default): a folder that every rank
writes its part of with torch.distributed.checkpoint (`ShardedFolder`, volt/sharded_checkpoint.py): the model's and
optimizers' tensors as each rank holds them, each rank's own loop state by that rank. Both forms hold the keys above
and load into any strategy on any number of ranks; `resolve` and ModelCheckpoint treat a folder as a file.

Written in the background (`ModelCheckpoint(async_save=True)`, `schedule(..., background=True)`, or every save with
`Trainer(plugins=[AsyncCheckpointIO()])`): the checkpoint is assembled at the point as always, staged (its tensors
copied to CPU memory: the only stall) and written by a thread (a file: AsyncCheckpointIO around the strategy's
CheckpointIO plugin; a folder: DCP's async_save, on a gloo group of its own). At most one write is in flight: the
next save waits for it, as do the end of fit and a failed run's teardown, and a write that failed raises there (it
is logged at once).
File work that must follow the writes (`after_writes`, the Trainer's `at_checkpoint_point`: a `last` link, deleting
checkpoints that left the top k) runs once they are durable, in the writer's thread. Exact resume is unchanged.

Several processes: every rank assembles the checkpoint. Each rank's own RNG streams and epoch accumulators go into
`loops.fit_loop.per_rank` (gathered to rank 0 for a file, written by each rank in a folder); gradients pending in an
accumulation window are averaged over the ranks first (in place, so the run continues from what it saved) and stored
once. On the same number of ranks each rank takes back its own state; on another number, rank 0's
(volt/distributed/parallel.py says what stays exact).
"""
import glob
import math
import os
import re
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import torch

from volt.distributed.environments import SLURMEnvironment
from volt.distributed.parallel import sharded_storage_options_error
from volt.loggers.utils import LogFiles, VersionedLogDir
from volt.trainer import recovery
from volt.trainer.data import CombinedStream
from volt.trainer.hooks import Hooks
from volt.trainer.progress import lightning_loops
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_info, rank_zero_warn

VOLT_VERSION = "0.1.0"
LIGHTNING_COMPAT_VERSION = "2.6.6"  # written as `pytorch-lightning_version`, so Lightning loads volt checkpoints
# The loop state that differs between processes: a multi-process checkpoint keeps every rank's.
_HPC_NAME = re.compile(r"hpc_ckpt_(\d+)\.ckpt")  # Lightning's SLURM checkpoints, numbered
_PER_RANK_STATE = ("rng", "results", "epoch_rng", "sampler_rng", "stream")


class SingleFile:
    """A checkpoint file that rank 0 writes through the strategy's CheckpointIO plugin (default: volt's own files,
    volt/checkpoint.py): whole tensors, each rank's own loop state gathered into it."""

    sharded = False

    def model_state(self, strategy) -> Dict[str, Any]:
        return strategy.lightning_module_state_dict()

    def optimizer_state(self, strategy, optimizer) -> Dict[str, Any]:
        return strategy.optimizer_state(optimizer)

    def write(self, trainer, checkpoint: Dict[str, Any], filepath, background: bool, storage_options: Any = None):
        """In the background: through an AsyncCheckpointIO around the plugin (unless the plugin is one)."""
        from volt.plugins.io import AsyncCheckpointIO

        strategy = trainer.strategy
        if background and not isinstance(strategy.checkpoint_io, AsyncCheckpointIO):
            if not trainer.is_global_zero:
                return None
            return AsyncCheckpointIO(strategy.checkpoint_io).save_checkpoint(checkpoint, filepath, storage_options)
        return strategy.save_checkpoint(checkpoint, filepath, storage_options)


class ShardedFolder:
    """A checkpoint folder that every rank writes its part of (volt/sharded_checkpoint.py): the tensors as this rank
    holds them (FSDP: its shards), and its own loop state."""

    sharded = True

    def model_state(self, strategy) -> Dict[str, Any]:
        return strategy.sharded_model_state()

    def optimizer_state(self, strategy, optimizer) -> Dict[str, Any]:
        return strategy.sharded_optimizer_state(optimizer)

    def write(self, trainer, checkpoint: Dict[str, Any], filepath, background: bool, storage_options: Any = None):
        from volt.sharded_checkpoint import save_sharded

        strategy = trainer.strategy
        if storage_options is not None:
            raise TypeError(sharded_storage_options_error(strategy))
        fit_loop = (checkpoint.get("loops") or {}).get("fit_loop")
        own = {key: fit_loop[key] for key in _PER_RANK_STATE} if fit_loop else None
        group = strategy.background_process_group() if background else None
        return save_sharded(checkpoint, filepath, own=own, rank=strategy.global_rank,
                            world_size=strategy.world_size, process_group=group, background=background)


class _Scheduled(NamedTuple):
    """A checkpoint `Checkpoints.schedule` asked for: where, and what the request assembled (None: assemble it at
    the point)."""
    path: str
    weights_only: bool
    background: bool
    checkpoint: Optional[Dict[str, Any]]


class Checkpoints:
    """The Trainer's checkpoints. One per Trainer; every method runs on every rank."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.restart: Optional[recovery.Restart] = None  # this fit is a restarted job's (`resolve`)
        self._writing = None  # the background write in flight (volt.checkpoint.PendingWrite): at most one
        self._wrote_in_background = False  # since the stage began: its end waits for the writes, on every rank
        self._sharded_source = None  # a checkpoint folder being restored: its tensors are read in the restore steps
        self._grads_averaged_at: Optional[tuple] = None
        self._due: Optional[_Scheduled] = None  # the scheduled checkpoint the checkpoint point is writing now

    @property
    def storage(self):
        """How this run's checkpoints are stored: a file (`SingleFile`) or a folder (`ShardedFolder`)."""
        return _SHARDED if self.trainer.strategy.state_dict_type == "sharded" else _SINGLE_FILE

    # ================================================================== what goes in
    def dump(self, weights_only: bool = False) -> Dict[str, Any]:
        """The whole checkpoint, Lightning's keys and volt's loop state; runs the `state_dict` and
        `on_save_checkpoint` hooks in Lightning's order."""
        from volt.checkpoint import encode_hparams

        trainer = self.trainer
        model, datamodule, hooks = trainer.lightning_module, trainer.datamodule, trainer._hooks
        if hooks is None:  # a module attached with `trainer.strategy.connect(model)`, outside any call
            hooks = Hooks(trainer, trainer.callbacks, model, datamodule)
        checkpoint: Dict[str, Any] = {
            "pytorch-lightning_version": LIGHTNING_COMPAT_VERSION,
            "volt_version": VOLT_VERSION,
            "state_dict": self.storage.model_state(trainer.strategy),
        }
        self._add_loop_part(checkpoint, weights_only)
        if not weights_only:
            checkpoint["callbacks"] = {cb.state_key: state for cb in trainer.callbacks if (state := cb.state_dict())}
            if datamodule is not None and (dm_state := hooks.call_datamodule("state_dict")):
                checkpoint[type(datamodule).__qualname__] = dm_state
        for owner, prefix in ((model, ""), (datamodule, "datamodule_")):
            if owner is not None and owner.hparams:
                checkpoint[f"{prefix}hparams_name"] = owner._hparams_name or "kwargs"
                checkpoint[f"{prefix}hyper_parameters"] = encode_hparams(_saved_hparams(owner.hparams))
                if _is_omegaconf(owner.hparams):  # plain data above; the type name brings the container back
                    checkpoint[f"{prefix}hparams_type"] = type(owner.hparams).__name__
        if not weights_only:
            hooks.call("on_save_checkpoint", checkpoint)
        elif "on_save_checkpoint" in hooks.module_overrides:
            hooks.call_module("on_save_checkpoint", checkpoint)
        return checkpoint

    def _add_loop_part(self, checkpoint: Dict[str, Any], weights_only: bool) -> None:
        """The entries the loop owns: taken where the checkpoint is written (see the module docstring)."""
        trainer = self.trainer
        checkpoint["epoch"] = trainer.current_epoch
        checkpoint["global_step"] = trainer.global_step
        fit_loop = trainer.fit_loop
        state = fit_loop.state
        val_batches = sum(fit_loop.val_loop.num_batches) if state.val_done_at_batch == state.batch_idx else 0
        loops = lightning_loops(state, last_batch=state.batch_idx >= fit_loop.num_training_batches,
                                manual=not trainer.lightning_module.automatic_optimization,
                                val_batches=int(val_batches) if val_batches != math.inf else 0)
        loops["fit_loop"].update(self.loop_state())  # volt's exact cursor, beside Lightning's counters
        stream = loops["fit_loop"]["stream"]
        if stream is not None:  # Lightning's place for it: a resume by Lightning continues the stream too
            combined = isinstance(fit_loop.stream, CombinedStream)  # its position: already one state per loader
            loops["fit_loop"]["state_dict"]["combined_loader"] = stream if combined else [stream]
        checkpoint["loops"] = loops
        if not weights_only:
            storage, strategy = self.storage, trainer.strategy
            checkpoint["optimizer_states"] = [storage.optimizer_state(strategy, opt) for opt in trainer.optimizers]
            checkpoint["lr_schedulers"] = [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs]
            precision_state = trainer.precision_plugin.state_dict()
            if precision_state:
                checkpoint["MixedPrecision"] = precision_state

    def loop_state(self) -> Dict[str, Any]:
        """The loop's position and everything needed to continue from it exactly (see `restore_loops`).

        With several ranks, each rank's own RNG streams and epoch accumulators are gathered into `per_rank` for a
        file (a folder has each rank write its own); the top-level entries are rank 0's, for a resume on another
        number of processes. Pending gradients are the ranks' average (`_pending_grads`).
        """
        trainer = self.trainer
        fit_loop = trainer.fit_loop
        trainer._results.flush_logger_writes()  # rows logged before this checkpoint are on disk before it is
        for logger in trainer.loggers:
            logger.save()
        state = {
            **fit_loop.state.state_dict(),
            "rng": fit_loop.rng_state(),
            # a stop not acted on yet (the fit still runs): a fit resumed from here stops as this one does
            "should_stop": trainer.should_stop and trainer.state.fn == "fit" and trainer.state.stage is not None,
            "results": trainer._results.state_dict() if trainer.state.fn == "fit" else None,
            "eval_log_steps": list(fit_loop.val_loop.log_steps),
            "loggers": [_logger_state(logger) for logger in trainer.loggers],
            # inside an accumulation window: the gradients summed so far
            "grads": self._pending_grads() if fit_loop.grads_pending else None,
            "stream": fit_loop.stream_state(),  # where an iterable training stream stands, if it can say
        }
        if trainer._signals.stopping:  # a graceful stop writes this checkpoint: resuming from it loses nothing
            state["stopped_by"] = trainer._signals.stopping
        if trainer.world_size > 1 and not self.storage.sharded:
            per_rank = trainer.strategy.gather_object({key: state[key] for key in _PER_RANK_STATE})
            if per_rank is not None and len(per_rank) > 1:  # a single entry: the main process after a spawn
                state["per_rank"] = per_rank
        return state

    def _pending_grads(self) -> Dict[str, torch.Tensor]:
        """The accumulation window's gradients so far. With several ranks, averaged over them in place first (each
        rank summed its own batches; the window's end would average them), so that the checkpoint holds one copy and
        the run continues from what it saved. Once per batch: two checkpoints at one point hold the same values."""
        trainer = self.trainer
        grads = trainer.strategy.accumulated_grads()
        position = (trainer.fit_loop.state.total_batch_idx, trainer.global_step)
        if trainer.world_size > 1 and self._grads_averaged_at != position:
            grads = _average_over_ranks(trainer.strategy, grads, dict(trainer.lightning_module.named_parameters()))
            self._grads_averaged_at = position
        return grads

    # ================================================================== writing
    def save(self, filepath, weights_only: bool = False, background: bool = False,
             storage_options: Any = None) -> None:
        """Assemble and write a checkpoint now (every rank calls it). Called by the checkpoint point for a scheduled
        checkpoint (through `trainer.save_checkpoint`, see `schedule`), it writes that one: what the request
        assembled, in the background if asked."""
        due, checkpoint = self._due, None
        if due is not None and due.path == os.fspath(filepath) and due.weights_only == weights_only:
            self._due, background, checkpoint = None, background or due.background, due.checkpoint
            if checkpoint is not None:
                self._add_loop_part(checkpoint, weights_only)
        if checkpoint is None:
            checkpoint = self.dump(weights_only)
        self._write(checkpoint, filepath, background, storage_options)

    def schedule(self, filepath, weights_only: bool = False, background: bool = False) -> None:
        """Write a checkpoint at the fit loop's next checkpoint point (see the module docstring). The point calls the
        public `trainer.save_checkpoint(filepath, weights_only)`, as Lightning's ModelCheckpoint does when it saves,
        so that a Trainer subclass overriding it, or a test patching it, sees every save."""
        trainer = self.trainer
        at_request = trainer.validating or trainer.fit_loop.state.epoch_done
        due = _Scheduled(os.fspath(filepath), weights_only, background,
                         self.dump(weights_only) if at_request else None)

        def write() -> None:
            self._due = due
            try:
                trainer.save_checkpoint(due.path, weights_only)
            finally:
                self._due = None

        trainer.fit_loop.at_checkpoint_point(write)

    def _write(self, checkpoint: Dict[str, Any], filepath, background: bool, storage_options: Any = None) -> None:
        from volt.plugins.io import AsyncCheckpointIO

        self.wait()  # at most one write in flight
        strategy = self.trainer.strategy
        background = background or isinstance(strategy.checkpoint_io, AsyncCheckpointIO)  # the plugin: every save
        pending = self.storage.write(self.trainer, checkpoint, filepath, background, storage_options)
        if background:
            self._writing, self._wrote_in_background = pending, True
        else:
            self.trainer.strategy.barrier("save_checkpoint")

    def after_writes(self, fn: Callable[[], None]) -> None:
        """Run `fn` once the checkpoints written so far are durable: now, or after the background write in flight
        (in its thread: file work only, no collectives)."""
        if self._writing is not None:
            self._writing.then(fn)
        else:
            fn()

    def wait(self) -> None:
        """Block until the background write in flight, if any, is durable; raise its error if it failed."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.wait()

    def finish_writes(self, failure: Optional[BaseException] = None) -> None:
        """The end of a stage: wait for the background write. After a success every rank then passes a barrier,
        so that what follows finds every checkpoint in place. After a failure (`failure`, the run's error) a failed
        write is noted on that error, not raised over it."""
        wrote_in_background, self._wrote_in_background = self._wrote_in_background, False
        if failure is None:
            self.wait()
            if wrote_in_background:
                self.trainer.strategy.barrier("checkpoint_writes")
            return
        try:
            self.wait()
        except Exception as error:
            failure.add_note(f"[volt] {error}")

    # ================================================================== what ckpt_path names
    def resolve(self, fn: str, ckpt_path) -> Optional[str]:
        """`ckpt_path` as a file path: "last" (newest `last*.ckpt`, continuing that run's log version), "best",
        "hpc" (Lightning's SLURM checkpoints), a path, or None (a restarted job resumes from "hpc" or "last":
        volt/trainer/recovery.py; under SLURM, an existing "hpc" checkpoint is used)."""
        self.restart = recovery.detect() if ckpt_path is None and fn == "fit" else None
        if self.restart is not None:
            ckpt_path = "hpc" if self._hpc_checkpoint() else "last"
            self.restart.announce(ckpt_path)
        elif ckpt_path is None and SLURMEnvironment.detect() and self._hpc_checkpoint():
            ckpt_path = "hpc"  # as Lightning: under SLURM every call without ckpt_path restores its HPC checkpoint
        if ckpt_path is None and fn == "fit" and self._on_exception_checkpoints():
            rank_zero_warn("`.fit(ckpt_path=None)` with an `OnExceptionCheckpoint` whose file exists: the last model "
                           "of the previous `fit` call will be used (the newest of it and any `last.ckpt`). Pass "
                           "`fit(ckpt_path=...)` to choose, which silences this warning.")
            ckpt_path = "last"
        if ckpt_path is None:
            return None
        if ckpt_path == "best":
            return self._best(fn)
        if ckpt_path == "last":
            last = self._find_last()
            if last is None and self.restart is None:  # a restart says so itself
                rank_zero_warn(f'`.{fn}(ckpt_path="last")` is set, but there is no last checkpoint available. No '
                               "checkpoint will be loaded: the run starts from scratch. Set "
                               "`ModelCheckpoint(save_last=True)` to have one.")
            return last
        if ckpt_path == "hpc":
            hpc = self._hpc_checkpoint()
            if hpc is None:
                raise ValueError(f'`.{fn}(ckpt_path="hpc")` is set but no HPC checkpoint (hpc_ckpt_<N>.ckpt) was found'
                                 f" in {self.trainer.default_root_dir}. Pass an exact checkpoint path instead.")
            return hpc
        return os.fspath(ckpt_path)

    def _best(self, fn: str) -> str:
        trainer = self.trainer
        if trainer.checkpoint_callback is None:
            raise ValueError(f'`.{fn}(ckpt_path="best")` is set but `ModelCheckpoint` is not configured.')
        if len(trainer.checkpoint_callbacks) > 1:
            rank_zero_warn(f'`.{fn}(ckpt_path="best")` with several `ModelCheckpoint` callbacks: it uses the best '
                           "checkpoint path from first checkpoint callback.")
        best = trainer.checkpoint_callback.best_model_path
        if best:
            return best
        if trainer.fast_dev_run:
            raise ValueError(f'You cannot execute `.{fn}(ckpt_path="best")` with `fast_dev_run=True`. Please pass an '
                             f"exact checkpoint path to `.{fn}(ckpt_path=...)`")
        raise ValueError(f'`.{fn}(ckpt_path="best")` is set but `ModelCheckpoint` is not configured to save the best '
                         "model (save_top_k=0), or has not saved one yet: run `fit` first, or pass an exact checkpoint "
                         "path.")

    def _hpc_checkpoint(self) -> Optional[str]:
        """The highest-numbered `hpc_ckpt_<N>.ckpt` in `default_root_dir` (what Lightning writes on SLURM)."""
        root = self.trainer.default_root_dir  # a local folder or an fsspec URL
        numbers = [int(match.group(1)) for match in map(_HPC_NAME.fullmatch, LogFiles(root).files(root)) if match]
        return os.path.join(root, f"hpc_ckpt_{max(numbers)}.ckpt") if numbers else None

    def _on_exception_checkpoints(self) -> List[str]:
        """The files of the `OnExceptionCheckpoint` callbacks that exist: a failed run's last state, which a
        `fit` resumes from as Lightning does."""
        from volt.callbacks.on_exception_checkpoint import OnExceptionCheckpoint

        return [callback.ckpt_path for callback in self.trainer.callbacks
                if isinstance(callback, OnExceptionCheckpoint) and os.path.isfile(callback.ckpt_path)]

    def _find_last(self) -> Optional[str]:
        """The newest `last*.ckpt` (a file or a complete checkpoint folder) in the checkpoint callbacks' folders.

        A callback without a `dirpath` writes into the logger's version folder. A new process (a requeued job, a
        rerun script) has a logger that would start a new version, so every version's `checkpoints` folder is
        searched, and the logger then continues the version the checkpoint came from rather than opening a new one.
        With no checkpoint callback, `<default_root_dir>/checkpoints` (where a graceful stop saves) is searched.
        """
        trainer = self.trainer
        logger = trainer.loggers[0] if trainer.loggers else None
        versions_unknown = isinstance(logger, VersionedLogDir) and not logger.version_chosen
        folders: List[str] = []
        for callback in trainer.checkpoint_callbacks or [None]:
            if callback is None:
                folders.append(os.path.join(trainer.default_root_dir, "checkpoints"))
            elif not callback.dirpath and versions_unknown:
                folders += glob.glob(os.path.join(glob.escape(logger.root_dir), "*", "checkpoints"))
            else:
                folders.append(callback.resolve_dirpath(trainer))
        candidates = [os.path.join(folder, name) for folder in folders if os.path.isdir(folder)
                      for name in os.listdir(folder) if name.startswith("last") and name.endswith(".ckpt")]
        from volt.checkpoint import checkpoint_exists

        candidates = [path for path in candidates if checkpoint_exists(path)]  # not a link to a deleted file
        candidates += self._on_exception_checkpoints()
        if not candidates:
            return None
        newest = max(candidates, key=os.path.getmtime)
        version = os.path.basename(os.path.dirname(os.path.dirname(newest)))
        for other in trainer.loggers:
            if isinstance(other, VersionedLogDir) and not other.version_chosen and os.path.isdir(
                    os.path.join(other.root_dir, version)):
                other.continue_version(version)
        return newest

    def load(self, path: Optional[str], weights_only: Optional[bool]) -> Optional[Dict[str, Any]]:
        """Load the checkpoint at `path` (already resolved); None when there is none. Safe unless
        `weights_only=False` was passed explicitly (a folder is always read safely)."""
        self.trainer.ckpt_path = path
        self._sharded_source = None
        checkpoint = None
        if path is not None:
            from volt.checkpoint import is_sharded_checkpoint

            rank_zero_info(f"Restoring states from the checkpoint path at {path}")
            if is_sharded_checkpoint(path):
                checkpoint = self._read_sharded(path)
            else:
                checkpoint = self.trainer.strategy.load_checkpoint(path, weights_only=weights_only)
        if self.restart is not None:
            self.restart.loaded(path, checkpoint)
            self.trainer.fit_loop.on_resume_point = self.restart.recovered
        return checkpoint

    def _read_sharded(self, path: str) -> Dict[str, Any]:
        """A checkpoint folder, read by each rank for itself: now its plain data, with this rank's own loop state if
        the world size is the same; the weights and the optimizer states once the module and the optimizers exist,
        into this strategy's shapes (FSDP: this rank's shards), in `restore_module` and
        `restore_optimizers_and_schedulers`."""
        from volt.sharded_checkpoint import ShardedCheckpoint

        strategy = self.trainer.strategy
        source = ShardedCheckpoint(path)
        ranks = [strategy.global_rank] if source.world_size == strategy.world_size else []
        checkpoint = source.read(ranks, map_location=strategy.root_device)
        self._sharded_source = source
        return checkpoint

    # ================================================================== restoring, in named steps
    def restore_before_optimizers(self, checkpoint: Dict[str, Any]) -> None:
        """What comes back once the module is set up and before `configure_optimizers`: module, datamodule and,
        when fitting, callbacks (Lightning's order)."""
        self.restore_module(checkpoint)
        self.restore_datamodule(checkpoint)
        if self.trainer.state.fn == "fit":
            self.restore_callbacks(checkpoint)

    def restore_training_state(self, checkpoint: Dict[str, Any]) -> None:
        """What comes back after `configure_optimizers` and `on_fit_start`: optimizers and schedulers, precision,
        the loops (with the loggers' positions)."""
        self.restore_optimizers_and_schedulers(checkpoint)
        self.restore_precision(checkpoint)
        trainer, epoch = self.trainer, checkpoint.get("epoch", 0)
        if trainer.max_epochs not in (None, -1) and epoch > trainer.max_epochs:  # Lightning's rule, on the saved epoch
            raise MisconfigurationException(
                f"You restored a checkpoint with current_epoch={epoch}, but you have set Trainer(max_epochs="
                f"{trainer.max_epochs}): the checkpoint is past the last epoch. Raise max_epochs, or resume from an"
                " earlier checkpoint.")
        self.restore_loops(checkpoint)
        rank_zero_info(f"Restored all states from the checkpoint at {trainer.ckpt_path}")

    def restore_module(self, checkpoint: Dict[str, Any]) -> None:
        trainer = self.trainer
        if self._sharded_source is not None:  # a folder's weights, read into this strategy's own shapes
            strategy = trainer.strategy
            self._sharded_source.read_model(checkpoint, strategy.sharded_model_state(), strategy.root_device)
        if "on_load_checkpoint" in trainer._hooks.module_overrides:
            trainer._hooks.call_module("on_load_checkpoint", checkpoint)
        if "state_dict" not in checkpoint:
            raise KeyError(f"The checkpoint {trainer.ckpt_path} has no 'state_dict'; it is not a model checkpoint.")
        strict = trainer.lightning_module.strict_loading
        if self._sharded_source is not None:
            trainer.strategy.load_sharded_model_state(checkpoint["state_dict"], strict=strict)
        else:
            trainer.strategy.load_model_state_dict(checkpoint, strict=strict)

    def restore_datamodule(self, checkpoint: Dict[str, Any]) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is not None and type(datamodule).__qualname__ in checkpoint:
            self.trainer._hooks.call_datamodule("load_state_dict", checkpoint[type(datamodule).__qualname__])

    def restore_callbacks(self, checkpoint: Dict[str, Any]) -> None:
        """`on_load_checkpoint`, then `load_state_dict` with the state saved under the callback's `state_key`
        (or, for a checkpoint from an older writer, its class name)."""
        trainer = self.trainer
        trainer._hooks.call_callbacks("on_load_checkpoint", checkpoint)
        states = checkpoint.get("callbacks") or {}
        present = {key for callback in trainer.callbacks for key in (callback.state_key, type(callback).__qualname__)}
        missing = [key for key in states if key not in present]
        if missing:
            rank_zero_warn(
                "Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided"
                f" during `Trainer` instantiation: their state is not restored. Please add the following callbacks:"
                f" {missing}.")
        for callback in trainer.callbacks:
            state = states.get(callback.state_key, states.get(type(callback).__qualname__))
            if state is not None:
                callback.load_state_dict(state)

    def restore_optimizers_and_schedulers(self, checkpoint: Dict[str, Any]) -> None:
        """Optimizer states by parameter name (a folder's) go through torch.distributed.checkpoint's API, numbered
        ones (a file's) through the strategy's own loading. Not at all when the strategy restores them itself."""
        trainer, strategy = self.trainer, self.trainer.strategy
        if not strategy.lightning_restore_optimizer:
            return
        optimizers = trainer.optimizers
        if self._sharded_source is not None:  # a folder's: read into the optimizers' own shapes
            self._sharded_source.read_optimizer_states(
                checkpoint, lambda i: strategy.sharded_optimizer_state(optimizers[i], initialize=True)
                if i < len(optimizers) else None, map_location=strategy.root_device)
        strategy.load_optimizer_state_dict(checkpoint)
        for config, state in zip(trainer.lr_scheduler_configs, checkpoint.get("lr_schedulers", [])):
            config.scheduler.load_state_dict(state)

    def restore_precision(self, checkpoint: Dict[str, Any]) -> None:
        if "MixedPrecision" in checkpoint:
            self.trainer.precision_plugin.load_state_dict(checkpoint["MixedPrecision"])

    def restore_loops(self, checkpoint: Dict[str, Any]) -> None:
        """The loop position: volt's exact cursor, or for another writer (Lightning) the epoch and batch counts
        its progress records give. On the same number of ranks each rank takes its own per-rank state."""
        trainer = self.trainer
        state = dict((checkpoint.get("loops") or {}).get("fit_loop") or {})
        if "epoch_done" not in state:
            trainer.fit_loop.resume_from_lightning(checkpoint)
            return
        per_rank = state.pop("per_rank", None)
        saved_world = len(per_rank) if per_rank is not None else 1
        if saved_world == trainer.world_size:
            if per_rank is not None:  # this rank's RNG and accumulators (and, from older files, pending gradients)
                state.update(per_rank[trainer.global_rank])
        else:
            _note_world_size_change(saved_world, trainer.world_size, mid_epoch=not state.get("epoch_done"))
            state["stream"] = None  # rank 0's position in its own shard of a stream: no use to another rank
        state.pop("stopped_by", None)  # read by recovery.Restart.loaded
        # a stop asked already in this fit (`on_fit_start`: a Timer whose budget the checkpoint spent) stays
        trainer.should_stop = trainer.should_stop or bool(state.pop("should_stop", False))
        trainer.fit_loop.val_loop.resume_log_steps(state.pop("eval_log_steps", None))
        grads = state.pop("grads", None)
        if grads:
            trainer.strategy.load_accumulated_grads(grads)
        state.pop("loggers", None)  # restored first of all (`restore_loggers`)
        trainer.fit_loop.resume(state)

    def restore_loggers(self, checkpoint: Dict[str, Any]) -> None:
        """Each logger continues its log where the checkpoint was taken (`Logger.load_state_dict`). Runs before
        anything else of a resumed fit: before the callbacks' setup reads the loggers' folders (a tracker's run id
        names its folder) and before the hyperparameters are logged."""
        states = ((checkpoint.get("loops") or {}).get("fit_loop") or {}).get("loggers") or []
        for logger, state in zip(self.trainer.loggers, states):
            if state:
                logger.load_state_dict(state)


_SINGLE_FILE, _SHARDED = SingleFile(), ShardedFolder()


def _is_omegaconf(value: Any) -> bool:
    return type(value).__module__.partition(".")[0] == "omegaconf"


def _saved_hparams(hparams):
    """What a checkpoint keeps of the hyperparameters: an OmegaConf container as plain dicts and lists; no
    `nn.Module` (its weights are in the state dict, and code is never saved)."""
    if _is_omegaconf(hparams):
        from volt.checkpoint import _omegaconf_container

        return _omegaconf_container(hparams)
    return {name: value for name, value in hparams.items() if not isinstance(value, torch.nn.Module)}


def _logger_state(logger) -> dict:
    """A logger's `state_dict()`; nothing for one that gives no dict (a stand-in such as a mock, or a logger written
    for Lightning, which has no such pair)."""
    state = logger.state_dict() if callable(getattr(logger, "state_dict", None)) else None
    return state if isinstance(state, dict) else {}


def _average_over_ranks(strategy, grads: Dict[str, torch.Tensor],
                        params: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Average the pending gradients over the ranks, in place: one all-reduce per dtype and device. A parameter
    without a gradient on this rank but with one on another counts as zeros here (and gets the average)."""
    present = torch.tensor([name in grads for name in params], dtype=torch.int32, device=strategy.root_device)
    present = strategy.reduce(present, reduce_op="max").tolist()
    missing = {name: torch.zeros(param.shape, dtype=param.dtype, device=strategy.root_device)
               for (name, param), flag in zip(params.items(), present) if flag and name not in grads}
    ordered = [(name, grads.get(name, missing.get(name))) for name in params if name in grads or name in missing]
    groups: Dict[tuple, list] = {}
    for name, grad in ordered:
        groups.setdefault((grad.dtype, grad.device), []).append(grad)
    for tensors in groups.values():
        flat = strategy.reduce(torch.cat([t.reshape(-1) for t in tensors]), reduce_op="mean")
        for tensor, part in zip(tensors, flat.split([t.numel() for t in tensors])):
            tensor.copy_(part.view_as(tensor))
    if missing:
        strategy.load_accumulated_grads(missing)
    return dict(ordered)


def _note_world_size_change(saved: int, now: int, mid_epoch: bool) -> None:
    """Say what a resume on another number of processes keeps exactly (volt/distributed/parallel.py has the
    details)."""
    rest = (" The interrupted epoch continues after the number of batches each rank had run, so its remaining "
            "samples are not exactly the ones no rank had seen; from the next epoch on, the order is exact again."
            if mid_epoch else "")
    rank_zero_warn(
        f"Resuming a checkpoint written by {saved} process(es) on {now}: weights, optimizer, scheduler and precision "
        "state, the epoch and step counters, the callbacks' state and pending accumulation gradients (the ranks' "
        f"average) are restored exactly; RNG streams and epoch metric accumulators are rank 0's.{rest}"
    )

