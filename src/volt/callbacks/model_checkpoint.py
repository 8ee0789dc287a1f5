"""ModelCheckpoint: save checkpoints during `fit`, keep the best `k`, and optionally a `last.ckpt`.

Arguments, file names, trigger rules and saved state follow PyTorch Lightning 2.x, so existing code and existing
checkpoint folders keep working. volt differs in four ways, all about safety:
- files are written atomically: a crash mid-save never damages an older file;
- a save triggered inside a batch or an epoch end (the hooks below) is decided and named there, as in Lightning,
  but written at the loop's checkpoint point (`trainer.schedule_checkpoint`), once that batch or epoch end is
  complete (its step logging, validation and scheduler steps done), so every checkpoint resumes exactly, with
  nothing of the batch left to redo;
- a file that drops out of the top k (or an old `last.ckpt`) is removed only after every file of the current save,
  including the `last` link, is in place, so the folder always holds a complete, linked set;
- nothing is written under `fast_dev_run`, not even the final `last.ckpt` (Lightning writes that one).
Under a strategy with `state_dict_type="sharded"` (FSDP's default) each checkpoint is a folder with the same name;
top-k, `-vN` versions, `last` (also as a link) and removal treat it as a file. With `async_save=True` (volt's) the
checkpoint is copied at the point and written in the background; the files it makes obsolete are removed, and the
`last` link moved, only once it is durable.
"""
import os
import re
import time
import warnings
from datetime import timedelta
from typing import Any, Dict, List, Optional, Union

import torch

from volt.callbacks.callback import Callback
from volt.checkpoint import atomic_symlink, check_writable_folder, checkpoint_exists, is_remote
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.rank_zero import rank_zero_info, rank_zero_warn

# A `{name}` or `{name:spec}` field of a filename template; the name runs up to the first ':' or '}'.
_FIELD = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")


def _filesystem(path):
    import fsspec

    return fsspec.core.url_to_fs(str(path))[0]


class ModelCheckpoint(Callback):
    """Save the model periodically while fitting, by a monitored metric or simply the newest.

    Args:
        dirpath: folder for the files. Default: `<save_dir>/<name>/<version>/checkpoints` of the first logger, or
            `<default_root_dir>/checkpoints` without a logger. May be a remote URL (fsspec).
        filename: template such as `"{epoch}-{val_loss:.2f}"`; default `"{epoch}-{step}"`. Unknown names format as 0.
        monitor: metric (a key of `trainer.callback_metrics`) that ranks checkpoints; None keeps the newest.
        verbose: report each top-k decision.
        save_last: True also writes `last.ckpt` whenever a checkpoint is saved; `"link"` makes it a symlink to the
            newest checkpoint (local folders only).
        save_top_k: how many checkpoints to keep: -1 all, 0 none, k the best k (NaN ranks worst).
        save_on_exception: also save when fitting raises.
        save_weights_only: save only the model weights (no optimizer or loop state).
        mode: "min" or "max": which direction of `monitor` is better.
        auto_insert_metric_name: `{epoch}` becomes `epoch=3` rather than `3`.
        every_n_train_steps / train_time_interval / every_n_epochs: when to save; at most one may be set. With none
            set, saves once per epoch.
        save_on_train_epoch_end: save at the end of the training epoch (True) or after validation (False). Default:
            at the training epoch end when validation runs exactly once per epoch at its end (or never).
        enable_version_counter: a name already taken gets `-v1`, `-v2`, ... instead of being overwritten.
        async_save: (volt) write each checkpoint in the background: training stalls only while the checkpoint is
            copied to CPU memory, at most one write is in flight (the next save and the end of fit wait for it),
            and a failed write raises there. Resume from such a checkpoint is exact as from any other.
    """

    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: Optional[Union[str, os.PathLike]] = None,
        filename: Optional[str] = None,
        monitor: Optional[str] = None,
        verbose: bool = False,
        save_last: Optional[Union[bool, str]] = None,
        save_top_k: int = 1,
        save_on_exception: bool = False,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: Optional[int] = None,
        train_time_interval: Optional[timedelta] = None,
        every_n_epochs: Optional[int] = None,
        save_on_train_epoch_end: Optional[bool] = None,
        enable_version_counter: bool = True,
        async_save: bool = False,
    ):
        _check_arguments(mode, save_last, save_top_k, monitor, every_n_train_steps, every_n_epochs,
                         train_time_interval)
        if every_n_train_steps is None and every_n_epochs is None and train_time_interval is None:
            every_n_epochs = 1

        self.monitor = monitor
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_on_exception = save_on_exception
        self.save_weights_only = save_weights_only
        self.mode = mode
        self.auto_insert_metric_name = auto_insert_metric_name
        self.filename = filename
        if dirpath is not None and not is_remote(dirpath):
            dirpath = os.path.realpath(os.path.expanduser(dirpath))
        self.dirpath = None if dirpath is None else str(dirpath)
        self._every_n_train_steps: int = every_n_train_steps or 0
        self._every_n_epochs: int = every_n_epochs or 0
        self._train_time_interval: Optional[timedelta] = train_time_interval
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self._enable_version_counter = enable_version_counter
        self.async_save = bool(async_save)
        self._being_written: set = set()  # paths scheduled but not yet durable: taken names all the same

        # Public results, as in Lightning.
        self.current_score: Optional[torch.Tensor] = None
        self.best_k_models: Dict[str, torch.Tensor] = {}
        self.kth_best_model_path = ""
        self.kth_value = torch.tensor(float("inf") if mode == "min" else float("-inf"))
        self.best_model_score: Optional[torch.Tensor] = None
        self.best_model_path = ""
        self.last_model_path = ""

        self._last_global_step_saved = 0  # no steps taken yet: nothing worth saving
        self._last_checkpoint_saved = ""  # the newest real file; what a `last` link points to
        self._last_time_checked: Optional[float] = None
        # A step/time trigger fired while the monitored metric was missing or about to be refreshed by validation.
        self._defer_save_until_validation = False
        self._validation_has_run = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.monitor,
            mode=self.mode,
            every_n_train_steps=self._every_n_train_steps,
            every_n_epochs=self._every_n_epochs,
            train_time_interval=self._train_time_interval,
        )

    @property
    def every_n_epochs(self) -> int:
        return self._every_n_epochs

    # ----------------------------------------------------------------------------------------------------- hooks

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.dirpath = trainer.strategy.broadcast(self.resolve_dirpath(trainer))
        if self.save_last == "link" and is_remote(self.dirpath):
            raise ValueError(
                f"`ModelCheckpoint(save_last='link')` is only supported for local file paths (it makes a symlink), got"
                f" dirpath={self.dirpath!r}. Use save_last=True for remote storage."
            )
        if is_remote(self.dirpath) and trainer.strategy.state_dict_type == "sharded":
            raise ValueError(
                f"Sharded checkpoints are folders written by every rank, in a local or mounted shared folder; got "
                f"dirpath={self.dirpath!r}. Use a mounted path, or the strategy's state_dict_type='full' (one file)."
            )
        if trainer.is_global_zero and stage == "fit" and self.save_top_k != 0 and self._dir_has_files(self.dirpath):
            rank_zero_warn(f"Checkpoint directory {self.dirpath} exists and is not empty.")
        if trainer.is_global_zero and stage == "fit" and not trainer.fast_dev_run and (self.save_top_k or self.save_last):
            check_writable_folder(self.dirpath, "The checkpoint folder (ModelCheckpoint's dirpath)")

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_time_checked = time.monotonic()
        self._validation_has_run = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """Step and time triggers."""
        if self._every_n_train_steps < 1 and self._train_time_interval is None:
            return
        due = self._every_n_train_steps >= 1 and trainer.global_step % self._every_n_train_steps == 0
        if self._train_time_interval is not None:
            now = time.monotonic()
            elapsed = now - self._last_time_checked if self._last_time_checked is not None else -1.0
            # Clocks differ across ranks: rank 0 decides, so that every rank saves (and syncs) together.
            time_due = trainer.strategy.broadcast(elapsed >= self._train_time_interval.total_seconds())
            if time_due:
                self._last_time_checked = now
            due = due or time_due
        if not due:
            return
        candidates = self._monitor_candidates(trainer)
        if self.monitor is not None and (
            self.monitor not in candidates or self._validation_follows(trainer, batch_idx)
        ):
            self._defer_save_until_validation = True
            return
        if self._should_skip_saving_checkpoint(trainer):
            return
        self._save_topk_and_last(trainer, candidates)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            self._save_for_epoch(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._validation_has_run = True
        if self._should_skip_saving_checkpoint(trainer) or self._should_save_on_train_epoch_end(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        if self._defer_save_until_validation:
            self._defer_save_until_validation = False
            self._save_topk_and_last(trainer, candidates)
        else:
            self._save_for_epoch(trainer, candidates)

    def on_train_end(self, trainer, pl_module) -> None:
        """With `save_last`, make sure a `last` checkpoint exists even if no other checkpoint was saved."""
        if self.save_last and not self._last_checkpoint_saved and not trainer.fast_dev_run:
            self._remove_all(trainer, self._save_last_checkpoint(trainer, self._monitor_candidates(trainer)))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not (
            self.save_on_exception
            and trainer.state.fn == "fit"
            and not trainer.fast_dev_run
            and not trainer.sanity_checking
            and self._last_global_step_saved != trainer.global_step
        ):
            return
        candidates = self._monitor_candidates(trainer)
        filepath = self.format_checkpoint_name(candidates)
        self._save_checkpoint(trainer, filepath)
        self._remove_all(trainer, self._save_last_checkpoint(trainer, candidates))
        rank_zero_info(
            f"{type(exception).__name__} raised during fit ({exception}); saved a checkpoint to {filepath!r}."
        )

    # ------------------------------------------------------------------------------------------------ state

    def state_dict(self) -> Dict[str, Any]:
        """Lightning's keys, and what decides the next saves (so a resumed run saves exactly where an uninterrupted
        one does: not twice at one step, no deferred save lost)."""
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "current_score": self.current_score,
            "dirpath": self.dirpath,
            "best_k_models": self.best_k_models,
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self.last_model_path,
            "last_global_step_saved": self._last_global_step_saved,
            "last_checkpoint_saved": self._last_checkpoint_saved,
            "defer_save_until_validation": self._defer_save_until_validation,
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore the rankings. If the folder changed since the checkpoint was written, the old rankings would
        point at files this run does not manage, so only `best_model_path` is restored. (A callback whose folder
        is not resolved yet, in the process that launched spawned ranks, takes the saved one.)"""
        saved_dirpath = state_dict.get("dirpath", self.dirpath)
        if self.dirpath is None:
            self.dirpath = saved_dirpath
        if saved_dirpath == self.dirpath:
            self.best_model_score = state_dict["best_model_score"]
            self.kth_best_model_path = state_dict.get("kth_best_model_path", self.kth_best_model_path)
            self.kth_value = state_dict.get("kth_value", self.kth_value)
            self.best_k_models = state_dict.get("best_k_models", self.best_k_models)
            self.last_model_path = state_dict.get("last_model_path", self.last_model_path)
        else:
            warnings.warn(
                f"The dirpath has changed from {saved_dirpath!r} to {self.dirpath!r}, therefore `best_model_score`,"
                " `kth_best_model_path`, `kth_value`, `last_model_path` and `best_k_models` won't be reloaded. Only"
                " `best_model_path` will be reloaded."
            )
        self.best_model_path = state_dict["best_model_path"]
        self._last_global_step_saved = state_dict.get("last_global_step_saved", self._last_global_step_saved)
        self._last_checkpoint_saved = state_dict.get("last_checkpoint_saved", self._last_checkpoint_saved)
        self._defer_save_until_validation = state_dict.get("defer_save_until_validation",
                                                           self._defer_save_until_validation)

    # ------------------------------------------------------------------------------------------- public helpers

    def format_checkpoint_name(
        self,
        metrics: Dict[str, Any],
        filename: Optional[str] = None,
        ver: Optional[int] = None,
        prefix: Optional[str] = None,
    ) -> str:
        """The path a checkpoint gets for these metrics, e.g. `dirpath/epoch=2-val_loss=0.12-v1.ckpt`.

        Each `{name}` / `{name:spec}` field is replaced by `metrics[name]` (0 when absent), preceded by `name=` when
        `auto_insert_metric_name` is set.
        """

        def fill(match: "re.Match") -> str:
            name, spec = match.group(1), match.group(2) or ""
            text = format(metrics.get(name, 0), spec)
            return f"{name}{self.CHECKPOINT_EQUALS_CHAR}{text}" if self.auto_insert_metric_name else text

        template = filename or self.filename or "{epoch}" + self.CHECKPOINT_JOIN_CHAR + "{step}"
        name = _FIELD.sub(fill, template)
        if prefix is not None:
            name = self.CHECKPOINT_JOIN_CHAR.join((prefix, name))
        if ver is not None:
            name = self.CHECKPOINT_JOIN_CHAR.join((name, f"v{ver}"))
        name += self.FILE_EXTENSION
        return os.path.join(self.dirpath, name) if self.dirpath else name

    def check_monitor_top_k(self, trainer, current: Optional[torch.Tensor] = None) -> bool:
        """Whether `current` earns a place among the best k. All ranks must agree, or none saves."""
        if current is None:
            return False
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        kth = self.best_k_models[self.kth_best_model_path]
        better = bool(current < kth) if self.mode == "min" else bool(current > kth)
        return trainer.strategy.reduce_boolean_decision(better)

    def file_exists(self, filepath: str, trainer) -> bool:
        """Whether `filepath` exists (or is being written in the background), as seen by rank 0."""
        exists = trainer.is_global_zero and (filepath in self._being_written or checkpoint_exists(filepath))
        return trainer.strategy.reduce_boolean_decision(exists, all=False)

    def to_yaml(self, filepath: Optional[str] = None) -> None:
        """Write `best_k_models` as `{path: score}` to `filepath` (default `dirpath/best_k_models.yaml`)."""
        import yaml

        best_k = {path: score.item() for path, score in self.best_k_models.items()}
        filepath = str(filepath) if filepath is not None else os.path.join(self.dirpath, "best_k_models.yaml")
        with _filesystem(filepath).open(filepath, "w") as f:
            yaml.dump(best_k, f)

    # ------------------------------------------------------------------------------------------- when to save

    def _should_skip_saving_checkpoint(self, trainer) -> bool:
        return (
            bool(trainer.fast_dev_run)
            or trainer.state.fn != "fit"
            or trainer.sanity_checking
            or self._last_global_step_saved == trainer.global_step
        )

    def _should_save_on_train_epoch_end(self, trainer) -> bool:
        """Save at the training epoch end only when that is where validation (if any) has just finished."""
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        if trainer.check_val_every_n_epoch != 1:
            return False
        if sum(trainer.num_val_batches) == 0:
            return True
        return trainer.val_check_interval == 1.0

    def _validation_follows(self, trainer, batch_idx: int) -> bool:
        """Whether validation runs right after this batch, so a monitored value would be stale until then."""
        every = trainer.check_val_every_n_epoch
        return (
            not self._should_save_on_train_epoch_end(trainer)
            and batch_idx + 1 == trainer.num_training_batches
            and sum(trainer.num_val_batches) > 0
            and (every is None or (trainer.current_epoch + 1) % every == 0)
        )

    def _monitor_candidates(self, trainer) -> Dict[str, torch.Tensor]:
        """`trainer.callback_metrics` plus integer `epoch` and `step` (a logged `epoch` would be a float)."""
        candidates = dict(trainer.callback_metrics)
        epoch, step = candidates.get("epoch"), candidates.get("step")
        candidates["epoch"] = epoch.int() if isinstance(epoch, torch.Tensor) else torch.tensor(trainer.current_epoch)
        candidates["step"] = step.int() if isinstance(step, torch.Tensor) else torch.tensor(trainer.global_step)
        return candidates

    # ------------------------------------------------------------------------------------------------ saving
    # Each `_save_*` method returns the paths it made obsolete; callers delete them once every file of the
    # current round (top-k and last) is written.

    def _save_topk_and_last(self, trainer, candidates: Dict[str, torch.Tensor]) -> None:
        """A step or time trigger: top-k, then `last` unconditionally."""
        stale = self._save_topk_checkpoint(trainer, candidates)
        stale += self._save_last_checkpoint(trainer, candidates)
        self._remove_all(trainer, stale)

    def _save_for_epoch(self, trainer, candidates: Dict[str, torch.Tensor]) -> None:
        """An epoch trigger: top-k on due epochs, then `last` if something was saved now (or to re-link it)."""
        stale = []
        if self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0:
            stale += self._save_topk_checkpoint(trainer, candidates)
        if self._last_global_step_saved == trainer.global_step or (
            self.save_last == "link" and self._last_checkpoint_saved
        ):
            stale += self._save_last_checkpoint(trainer, candidates)
        self._remove_all(trainer, stale)

    def _save_topk_checkpoint(self, trainer, candidates: Dict[str, torch.Tensor]) -> List[str]:
        if self.save_top_k == 0:
            return []
        if self.monitor is None:
            return self._save_none_monitor_checkpoint(trainer, candidates)
        if self.monitor not in candidates:
            message = (
                f"`ModelCheckpoint(monitor={self.monitor!r})` could not find the monitored key in the returned"
                f" metrics: {list(candidates)}. HINT: Did you call `log({self.monitor!r}, value)` in the"
                " `LightningModule`?"
            )
            if self._validation_has_run:
                raise MisconfigurationException(message)
            rank_zero_warn(message)  # the key may still come from a validation run that has not happened yet
            return []
        current = candidates[self.monitor]
        if self.check_monitor_top_k(trainer, current):
            return self._update_best_and_save(current, trainer, candidates)
        if self.verbose:
            rank_zero_info(
                f"Epoch {candidates['epoch']:d}, global step {candidates['step']:d}: {self.monitor!r} was not in"
                f" top {self.save_top_k}"
            )
        return []

    def _save_none_monitor_checkpoint(self, trainer, candidates: Dict[str, torch.Tensor]) -> List[str]:
        filepath = self._free_filepath(trainer, candidates, reusable=self.best_model_path)
        # Update before saving: the state written into the file must already name it.
        previous, self.best_model_path = self.best_model_path, filepath
        self._save_checkpoint(trainer, filepath)
        if self.save_top_k == 1 and previous and self._should_remove_checkpoint(trainer, previous, filepath):
            return [previous]
        return []

    def _update_best_and_save(self, current: torch.Tensor, trainer, candidates: Dict[str, torch.Tensor]) -> List[str]:
        k = len(self.best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k
        evicted = None
        if len(self.best_k_models) == k:
            evicted = self.kth_best_model_path
            del self.best_k_models[evicted]
        if torch.isnan(current):
            current = torch.tensor(float("inf") if self.mode == "min" else float("-inf"), device=current.device)
        filepath = self._free_filepath(trainer, candidates, reusable=evicted)

        self.current_score = current
        self.best_k_models[filepath] = current
        worst, best = (max, min) if self.mode == "min" else (min, max)
        if len(self.best_k_models) == k:
            self.kth_best_model_path = worst(self.best_k_models, key=self.best_k_models.get)
            self.kth_value = self.best_k_models[self.kth_best_model_path]
        self.best_model_path = best(self.best_k_models, key=self.best_k_models.get)
        self.best_model_score = self.best_k_models[self.best_model_path]
        if self.verbose:
            rank_zero_info(
                f"Epoch {candidates['epoch']:d}, global step {candidates['step']:d}: {self.monitor!r} reached"
                f" {current:0.5f} (best {self.best_model_score:0.5f}), saving model to {filepath!r} as top {k}"
            )
        self._save_checkpoint(trainer, filepath)
        if evicted and self._should_remove_checkpoint(trainer, evicted, filepath):
            return [evicted]
        return []

    def _save_last_checkpoint(self, trainer, candidates: Dict[str, torch.Tensor]) -> List[str]:
        if not self.save_last:
            return []
        filepath = self._free_filepath(
            trainer, candidates, reusable=self.last_model_path, filename=self.CHECKPOINT_NAME_LAST
        )
        previous, self.last_model_path = self.last_model_path, filepath
        if self.save_last == "link" and self._last_checkpoint_saved and self.save_top_k != 0:
            self._link_checkpoint(trainer, self._last_checkpoint_saved, filepath)
        elif self._last_global_step_saved == trainer.global_step and self._last_checkpoint_saved:
            # a copy of the file saved at this step: its callback state is that file's, which it names (as Lightning)
            self._save_checkpoint(trainer, filepath, newest=self._last_checkpoint_saved)
        else:
            self._save_checkpoint(trainer, filepath)
        if previous and self._should_remove_checkpoint(trainer, previous, filepath):
            return [previous]
        return []

    def _free_filepath(self, trainer, candidates, reusable: Optional[str], filename: Optional[str] = None) -> str:
        """The formatted path, with `-vN` appended while the name is taken (unless taken by `reusable`, a file
        this save replaces anyway)."""
        filepath = self.format_checkpoint_name(candidates, filename)
        if self._enable_version_counter:
            version = self.STARTING_VERSION
            while filepath != reusable and self.file_exists(filepath, trainer):
                filepath = self.format_checkpoint_name(candidates, filename, ver=version)
                version += 1
        return filepath

    def _save_checkpoint(self, trainer, filepath: str, newest: Optional[str] = None) -> None:
        """Save to `filepath`; `newest` is the file a `last` link would point to (default: this one)."""
        self._last_global_step_saved = trainer.global_step  # first, so that the checkpoint records this save
        self._last_checkpoint_saved = newest or filepath
        trainer.schedule_checkpoint(filepath, self.save_weights_only, background=self.async_save)
        self._being_written.add(filepath)  # until it is durable: at the checkpoint point, or after a background write

        def notify_loggers() -> None:  # runs once the checkpoint is durable (see `Trainer.at_checkpoint_point`)
            self._being_written.discard(filepath)
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.after_save_checkpoint(self)

        trainer.at_checkpoint_point(notify_loggers)

    def _link_checkpoint(self, trainer, target: str, linkpath: str) -> None:
        def link() -> None:
            if trainer.is_global_zero:
                atomic_symlink(target, linkpath)

        trainer.at_checkpoint_point(link)

    # --------------------------------------------------------------------------------------------- file system

    def resolve_dirpath(self, trainer) -> str:
        """The folder this callback writes to: `dirpath` if given, else `<save_dir>/<name>/<version>/checkpoints`
        of the first logger, or `<default_root_dir>/checkpoints` without a logger."""
        if self.dirpath is not None:
            return self.dirpath
        if trainer.loggers:
            logger = trainer.loggers[0]
            save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
            version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
            return os.path.join(save_dir, str(logger.name), version, "checkpoints")
        return os.path.join(trainer.default_root_dir, "checkpoints")

    def _should_remove_checkpoint(self, trainer, previous: str, current: str) -> bool:
        """Only remove files this callback manages: inside `dirpath`, and never the checkpoint being resumed."""
        if previous == current:
            return False
        if is_remote(previous):
            return True
        previous = os.path.abspath(previous)
        if trainer.ckpt_path is not None and os.path.abspath(trainer.ckpt_path) == previous:
            return False
        return previous.startswith(os.path.join(os.path.abspath(self.dirpath), ""))

    def _remove_all(self, trainer, paths: List[str]) -> None:
        def remove() -> None:
            for path in paths:
                trainer.strategy.remove_checkpoint(path)  # rank 0 removes, through the CheckpointIO plugin

        if paths:
            trainer.at_checkpoint_point(remove)

    def _dir_has_files(self, dirpath: str) -> bool:
        if is_remote(dirpath):
            fs = _filesystem(dirpath)
            return fs.isdir(dirpath) and len(fs.ls(dirpath)) > 0
        return os.path.isdir(dirpath) and len(os.listdir(dirpath)) > 0


def _check_arguments(mode, save_last, save_top_k, monitor, every_n_train_steps, every_n_epochs,
                     train_time_interval) -> None:
    """The argument rules of Lightning's ModelCheckpoint, each with a message that says what to change."""
    if mode not in ("min", "max"):
        raise MisconfigurationException(f"ModelCheckpoint: `mode` can be min, max but got {mode}; use 'min' or 'max'.")
    if save_last not in (None, False, True, "link"):
        raise MisconfigurationException(
            f"ModelCheckpoint(save_last={save_last!r}) is not supported: use None, True, False or 'link'."
        )
    if save_top_k < -1:
        raise MisconfigurationException(
            f"Invalid value for ModelCheckpoint(save_top_k={save_top_k}). Must be >= -1: -1 keeps all, 0 none, k >= 1"
            " the best k."
        )
    if monitor is None and save_top_k not in (-1, 0, 1):
        raise MisconfigurationException(
            f"ModelCheckpoint(save_top_k={save_top_k}, monitor=None) is not a valid configuration: without a"
            " monitored metric there is nothing to rank checkpoints by. Pass `monitor=` or use save_top_k"
            " -1, 0 or 1."
        )
    for name, value in (("every_n_train_steps", every_n_train_steps), ("every_n_epochs", every_n_epochs)):
        if value is not None and value < 0:
            raise MisconfigurationException(f"Invalid value for ModelCheckpoint({name}={value}). Must be >= 0.")
    if train_time_interval is not None and not isinstance(train_time_interval, timedelta):
        raise MisconfigurationException(
            f"ModelCheckpoint(train_time_interval={train_time_interval!r}) must be a datetime.timedelta."
        )
    if bool(every_n_train_steps) + bool(every_n_epochs) + (train_time_interval is not None) > 1:
        raise MisconfigurationException(
            f"ModelCheckpoint: Combination of parameters every_n_train_steps={every_n_train_steps}, every_n_epochs="
            f"{every_n_epochs} and train_time_interval={train_time_interval} should be mutually exclusive; set only one"
            " of them (or use several ModelCheckpoint callbacks)."
        )
