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
is assembled at the point. `Trainer.save_checkpoint` writes at once.

A process restarted after a failure (torch's elastic agent, a SLURM requeue) resumes from "last" when `fit` gets no
`ckpt_path`, and logs what the failure cost (volt/trainer/recovery.py).

Several processes: every rank assembles the checkpoint (the per-rank loop state is gathered to rank 0, which writes).
On the same number of ranks each rank takes back its own RNG streams, epoch accumulators and pending gradients; on
another number, rank 0's (volt/distributed/ddp.py says what stays exact).
"""
import glob
import math
import os
from typing import Any, Dict, List, Optional

from volt.loggers.utils import VersionedLogDir
from volt.trainer import recovery
from volt.trainer.progress import lightning_loops
from volt.utilities.rank_zero import rank_zero_info, rank_zero_warn

VOLT_VERSION = "0.1.0"
LIGHTNING_COMPAT_VERSION = "2.6.6"  # written as `pytorch-lightning_version`, so Lightning loads volt checkpoints
# The loop state that differs between processes: a multi-process checkpoint keeps every rank's.
_PER_RANK_STATE = ("rng", "results", "grads", "epoch_rng", "sampler_rng", "stream")


class Checkpoints:
    """The Trainer's checkpoints. One per Trainer; every method runs on every rank."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.restart: Optional[recovery.Restart] = None  # this fit is a restarted job's (`resolve`)

    # ================================================================== what goes in
    def dump(self, weights_only: bool = False) -> Dict[str, Any]:
        """The whole checkpoint, Lightning's keys and volt's loop state; runs the `state_dict` and
        `on_save_checkpoint` hooks in Lightning's order."""
        from volt.checkpoint import encode_hparams

        trainer = self.trainer
        model, datamodule, hooks = trainer.lightning_module, trainer.datamodule, trainer._hooks
        checkpoint: Dict[str, Any] = {
            "pytorch-lightning_version": LIGHTNING_COMPAT_VERSION,
            "volt_version": VOLT_VERSION,
            "state_dict": trainer.strategy.lightning_module_state_dict(),
        }
        self._add_loop_part(checkpoint, weights_only)
        if not weights_only:
            checkpoint["callbacks"] = {cb.state_key: state for cb in trainer.callbacks if (state := cb.state_dict())}
            if datamodule is not None and (dm_state := datamodule.state_dict()):
                checkpoint[type(datamodule).__qualname__] = dm_state
        for owner, prefix in ((model, ""), (datamodule, "datamodule_")):
            if owner is not None and owner.hparams:
                checkpoint[f"{prefix}hparams_name"] = owner._hparams_name or "kwargs"
                checkpoint[f"{prefix}hyper_parameters"] = encode_hparams(dict(owner.hparams))
        if not weights_only:
            hooks.call("on_save_checkpoint", checkpoint)
        elif hooks.module_overrides("on_save_checkpoint"):
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
        checkpoint["loops"] = loops
        if not weights_only:
            checkpoint["optimizer_states"] = [trainer.strategy.optimizer_state(opt) for opt in trainer.optimizers]
            checkpoint["lr_schedulers"] = [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs]
            precision_state = trainer.precision_plugin.state_dict()
            if precision_state:
                checkpoint["MixedPrecision"] = precision_state

    def loop_state(self) -> Dict[str, Any]:
        """The loop's position and everything needed to continue from it exactly (see `restore_loops`).

        With several ranks, each rank's own RNG streams, epoch accumulators and pending gradients are gathered
        into `per_rank` (rank 0 writes the file); the top-level entries are rank 0's, for a resume on another
        number of processes.
        """
        trainer = self.trainer
        fit_loop = trainer.fit_loop
        for logger in trainer.loggers:  # rows logged before this checkpoint are on disk before it is
            logger.save()
        state = {
            **fit_loop.state.state_dict(),
            "rng": fit_loop.rng_state(),
            "should_stop": trainer.should_stop,
            "results": trainer._results.state_dict() if trainer.state.fn == "fit" else None,
            "eval_log_steps": list(fit_loop.val_loop.log_steps),
            "loggers": [logger.state_dict() for logger in trainer.loggers],
            # inside an accumulation window: the gradients summed so far
            "grads": trainer.strategy.accumulated_grads() if fit_loop.grads_pending else None,
            "stream": fit_loop.stream_state(),  # where an iterable training stream stands, if it can say
        }
        if trainer._signals.stopping:  # a graceful stop writes this checkpoint: resuming from it loses nothing
            state["stopped_by"] = trainer._signals.stopping
        if trainer.world_size > 1:
            per_rank = trainer.strategy.gather_object({key: state[key] for key in _PER_RANK_STATE})
            if per_rank is not None and len(per_rank) > 1:  # a single entry: the main process after a spawn
                state["per_rank"] = per_rank
        return state

    # ================================================================== writing
    def save(self, filepath, weights_only: bool = False) -> None:
        """Assemble and write a checkpoint now (every rank calls it; rank 0 writes)."""
        self._write(self.dump(weights_only), filepath)

    def schedule(self, filepath, weights_only: bool = False) -> None:
        """Write a checkpoint at the fit loop's next checkpoint point (see the module docstring)."""
        trainer = self.trainer
        at_request = trainer.validating or trainer.fit_loop.state.epoch_done
        checkpoint = self.dump(weights_only) if at_request else None

        def write() -> None:
            if checkpoint is None:
                self.save(filepath, weights_only)
            else:
                self._add_loop_part(checkpoint, weights_only)
                self._write(checkpoint, filepath)

        trainer.fit_loop.at_checkpoint_point(write)

    def _write(self, checkpoint: Dict[str, Any], filepath) -> None:
        trainer = self.trainer
        if trainer.is_global_zero:
            from volt.checkpoint import save_checkpoint

            save_checkpoint(checkpoint, filepath)
        trainer.strategy.barrier("save_checkpoint")

    # ================================================================== what ckpt_path names
    def resolve(self, fn: str, ckpt_path) -> Optional[str]:
        """`ckpt_path` as a file path: "last" (newest `last*.ckpt`, continuing that run's log version), "best",
        "hpc" (Lightning's SLURM checkpoints), a path, or None (a restarted job resumes from "hpc" or "last":
        volt/trainer/recovery.py)."""
        self.restart = recovery.detect() if ckpt_path is None and fn == "fit" else None
        if self.restart is not None:
            ckpt_path = "hpc" if self._hpc_checkpoint() else "last"
            self.restart.announce(ckpt_path)
        if ckpt_path is None:
            return None
        if ckpt_path == "best":
            return self._best(fn)
        if ckpt_path == "last":
            last = self._find_last()
            if last is None and self.restart is None:  # a restart says so itself
                rank_zero_warn(f'`.{fn}(ckpt_path="last")` found no last checkpoint; starting from scratch.')
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
        best = trainer.checkpoint_callback.best_model_path
        if best:
            return best
        if trainer.fast_dev_run:
            raise ValueError(f'You cannot execute `.{fn}(ckpt_path="best")` with `fast_dev_run=True`. Please pass an '
                             f"exact checkpoint path to `.{fn}(ckpt_path=...)`")
        raise ValueError(f'`.{fn}(ckpt_path="best")` is set but `ModelCheckpoint` has not saved a best model yet: run '
                         "`fit` first, or pass an exact checkpoint path.")

    def _hpc_checkpoint(self) -> Optional[str]:
        """The highest-numbered `hpc_ckpt_<N>.ckpt` in `default_root_dir` (what Lightning writes on SLURM)."""
        root = self.trainer.default_root_dir
        numbers = [int(name[len("hpc_ckpt_"):-len(".ckpt")]) for name in (os.listdir(root) if os.path.isdir(root)
                   else []) if name.startswith("hpc_ckpt_") and name.endswith(".ckpt")
                   and name[len("hpc_ckpt_"):-len(".ckpt")].isdigit()]
        return os.path.join(root, f"hpc_ckpt_{max(numbers)}.ckpt") if numbers else None

    def _find_last(self) -> Optional[str]:
        """The newest `last*.ckpt` in the checkpoint callbacks' folders.

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
        candidates = [path for path in candidates if os.path.isfile(path)]  # not a link to a deleted file
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
        `weights_only=False` was passed explicitly."""
        self.trainer.ckpt_path = path
        checkpoint = None
        if path is not None:
            from volt.checkpoint import load_checkpoint

            rank_zero_info(f"Restoring states from the checkpoint path at {path}")
            checkpoint = load_checkpoint(path, map_location=self.trainer.strategy.root_device,
                                         weights_only=weights_only is not False)
        if self.restart is not None:
            self.restart.loaded(path, checkpoint)
            self.trainer.fit_loop.on_resume_point = self.restart.recovered
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
        self.restore_loops(checkpoint)
        rank_zero_info(f"Restored all states from the checkpoint at {self.trainer.ckpt_path}")

    def restore_module(self, checkpoint: Dict[str, Any]) -> None:
        trainer = self.trainer
        if trainer._hooks.module_overrides("on_load_checkpoint"):
            trainer._hooks.call_module("on_load_checkpoint", checkpoint)
        if "state_dict" not in checkpoint:
            raise KeyError(f"The checkpoint {trainer.ckpt_path} has no 'state_dict'; it is not a model checkpoint.")
        trainer.strategy.load_model_state_dict(checkpoint["state_dict"],
                                               strict=trainer.lightning_module.strict_loading)

    def restore_datamodule(self, checkpoint: Dict[str, Any]) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is not None and type(datamodule).__qualname__ in checkpoint:
            datamodule.load_state_dict(checkpoint[type(datamodule).__qualname__])

    def restore_callbacks(self, checkpoint: Dict[str, Any]) -> None:
        """`on_load_checkpoint`, then `load_state_dict` with the state saved under the callback's `state_key`
        (or, for a checkpoint from an older writer, its class name)."""
        trainer = self.trainer
        trainer._hooks.call_callbacks("on_load_checkpoint", checkpoint)
        states = checkpoint.get("callbacks") or {}
        for callback in trainer.callbacks:
            state = states.get(callback.state_key, states.get(type(callback).__qualname__))
            if state is not None:
                callback.load_state_dict(state)

    def restore_optimizers_and_schedulers(self, checkpoint: Dict[str, Any]) -> None:
        trainer = self.trainer
        for optimizer, state in zip(trainer.optimizers, checkpoint.get("optimizer_states", [])):
            trainer.strategy.load_optimizer_state_dict(optimizer, state)
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
            if per_rank is not None:  # this rank's RNG, accumulators, pending gradients
                state.update(per_rank[trainer.global_rank])
        else:
            _note_world_size_change(saved_world, trainer.world_size, mid_epoch=not state.get("epoch_done"))
            state["stream"] = None  # rank 0's position in its own shard of a stream: no use to another rank
        state.pop("stopped_by", None)  # read by recovery.Restart.loaded
        trainer.should_stop = bool(state.pop("should_stop", False))
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

