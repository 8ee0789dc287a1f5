"""WandbLogger: metrics, config and checkpoints to a Weights & Biases run (online, or offline files to sync later).

wandb takes about a second to import, so nothing here imports it until the run is first used. The run id is chosen
when first asked for (`version`), without starting the run, so the checkpoint folder
`<save_dir>/<project>/<run id>/checkpoints` is the same as Lightning's, which starts the run before `setup`.
Hyperparameters logged before the run starts wait for it, so that a resumed fit, which logs them before it reads
its checkpoint, never opens a run of its own.

Resume: a checkpoint records the run id and the position in the run's history (W&B's `_step`, one per logged row)
when it was written (`state_dict`). A run resumed from it continues the same run through W&B's rewind
(`wandb.init(resume_from="<id>?_step=<last row kept>")`): rows the interrupted run logged after the checkpoint
are truncated and the resumed run's rows take their place, so every trainer step appears once. Offline, the rewind
is written into the run files and applied by `wandb sync`. Rewind is a W&B preview feature that the server enables per
account; where it refuses, the run is continued without it and a warning says that the interrupted run's later rows
stay.
"""
import json
import os
import secrets
import string
import sys
from argparse import Namespace
from typing import Any, Dict, List, Literal, Mapping, Optional, Union

from volt.loggers.logger import Logger, rank_zero_experiment
from volt.loggers.tracking import checkpoint_metadata, checkpoints_to_upload, require
from volt.loggers.utils import _add_prefix, _convert_params
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.imports import import_isolated
from volt.utilities.rank_zero import rank_zero_only, rank_zero_warn

_STEP_KEY = "trainer/global_step"


class WandbLogger(Logger):
    """Log to Weights & Biases: metrics against `trainer/global_step`, hyperparameters as the run's config (nested
    dicts stay nested), checkpoints as "model" artifacts.

    Args:
        name: the run's display name.
        save_dir: folder for W&B's local files (`<save_dir>/wandb/`); also the root of the checkpoint folder.
        version: the run id, to continue an existing run (same as `id`).
        offline: write run files locally only (`wandb sync` uploads them later).
        dir: used as `save_dir` when `save_dir` is None.
        id: the run id (same as `version`).
        anonymous: allow anonymous logging.
        project: the W&B project (default: the WANDB_PROJECT environment variable, else "lightning_logs").
        log_model: upload the ModelCheckpoint's files as artifacts: "all" after every save, True at the end of a
            successful fit (after every save when save_top_k == -1), False never.
        experiment: an existing `wandb` run to log into.
        prefix: put in front of every metric key, joined with "-".
        checkpoint_name: name of the checkpoint artifact (default `model-<run id>`).
        add_file_policy: "mutable" copies a checkpoint into W&B's staging folder before upload, "immutable" does not.
        **kwargs: passed to `wandb.init` (e.g. `entity`, `group`, `tags`, `config`, `mode`).
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        name: Optional[str] = None,
        save_dir: Union[str, os.PathLike] = ".",
        version: Optional[str] = None,
        offline: bool = False,
        dir: Optional[Union[str, os.PathLike]] = None,
        id: Optional[str] = None,
        anonymous: Optional[bool] = None,
        project: Optional[str] = None,
        log_model: Union[Literal["all"], bool] = False,
        experiment: Any = None,
        prefix: str = "",
        checkpoint_name: Optional[str] = None,
        add_file_policy: Literal["mutable", "immutable"] = "mutable",
        **kwargs: Any,
    ) -> None:
        require("wandb", "wandb", "wandb", "WandbLogger")
        if offline and log_model:
            raise MisconfigurationException(
                f"Providing log_model={log_model} and offline={offline} is an invalid configuration since model "
                "checkpoints cannot be uploaded in offline mode.\nHint: Set `offline=False` to log your model."
            )
        if log_model not in (True, False, "all"):
            raise ValueError(f"WandbLogger(log_model={log_model!r}): expected True, False or 'all'.")
        super().__init__()
        self._offline = offline
        self._log_model = log_model
        self._prefix = prefix
        self._experiment = experiment
        self._checkpoint_name = checkpoint_name
        self.add_file_policy = add_file_policy
        self._uploaded: Dict[str, float] = {}  # checkpoint path -> modification time when uploaded
        self._checkpoint_callbacks: Dict[int, Any] = {}  # uploaded at the end of a successful fit (log_model=True)
        save_dir = os.fspath(save_dir) if save_dir is not None else None
        dir = os.fspath(dir) if dir is not None else None
        self._wandb_init: Dict[str, Any] = {
            "name": name,
            "project": project or os.environ.get("WANDB_PROJECT", "lightning_logs"),
            "dir": save_dir or dir,
            "id": version or id,
            "resume": "allow",
        }
        if anonymous:  # passed only when set: recent wandb warns about the argument itself
            self._wandb_init["anonymous"] = "allow"
        if offline:
            self._wandb_init["mode"] = "offline"
        self._wandb_init.update(kwargs)
        self._project = self._wandb_init["project"]
        self._save_dir = self._wandb_init["dir"]
        self._name = self._wandb_init["name"]
        self._id: Optional[str] = experiment.id if experiment is not None else self._wandb_init["id"]
        self._id_given = self._id is not None  # a run chosen by the user is never swapped for a checkpoint's
        self._resume_row: Optional[int] = None  # the `_step` a rewound history continues at (see module doc)
        self._history_start = 0  # where a rewound history goes on (offline, `run.step` reads 0 until a row is logged)
        self._pending_config: Dict[str, Any] = {}  # hyperparameters logged before the run started

    @property
    @rank_zero_experiment
    def experiment(self):
        """The `wandb` Run, started on first use (a run already started in this process is reused, as Lightning)."""
        if self._experiment is None:
            wandb = import_isolated("wandb")

            if wandb.run is not None and self._resume_row is None:
                rank_zero_warn(
                    "There is a wandb run already in progress and newly created instances of `WandbLogger` will reuse"
                    " this run. If this is not desired, call `wandb.finish()` before instantiating `WandbLogger`."
                )
                self._experiment = wandb.run
            else:
                self._experiment = self._start_run(wandb)
            if self._pending_config:
                self._experiment.config.update(self._pending_config, allow_val_change=True)
                self._pending_config = {}
            if self._wandb_init.get("sync_tensorboard"):
                self._experiment.define_metric("*", step_metric="global_step")
            else:
                self._experiment.define_metric(_STEP_KEY)
                self._experiment.define_metric("*", step_metric=_STEP_KEY, step_sync=True)
        return self._experiment

    def _start_run(self, wandb):
        init = dict(self._wandb_init, id=self.version)
        if self._resume_row is None:
            return wandb.init(**init)
        if wandb.run is not None and wandb.run.id == init["id"]:  # the interrupted run, still open here
            wandb.run.finish()
        rewind = {key: value for key, value in init.items() if key not in ("id", "resume")}
        row, self._resume_row = self._resume_row, None
        try:  # the rewind keeps the rows up to `_step` and continues after it
            run = wandb.init(**rewind, resume_from=f"{init['id']}?_step={row - 1}")
        except Exception as error:  # wandb raises several types here, e.g. when the server has rewind turned off
            rank_zero_warn(
                f"WandbLogger: W&B refused to rewind run {init['id']} to step {row} ({error}). The run is continued "
                "without a rewind: rows the interrupted run logged after the checkpoint stay in its history, beside "
                "the resumed run's."
            )
            return wandb.init(**init)
        self._history_start = row
        return run

    def watch(self, model, log: Optional[str] = "gradients", log_freq: int = 100, log_graph: bool = True) -> None:
        """Log the model's gradients and/or parameters (`wandb.watch`)."""
        self.experiment.watch(model, log=log, log_freq=log_freq, log_graph=log_graph)

    @rank_zero_only
    def log_hyperparams(self, params: Union[Dict[str, Any], Namespace]) -> None:
        """Put hyperparameters into the run's config (when the run starts, if it has not yet); classes and functions
        by name, other values W&B cannot store as JSON by their str()."""
        params = {key: _json_value(_name_callable(value)) for key, value in _convert_params(params).items()}
        if self._experiment is None:
            self._pending_config.update(params)
        else:
            self._experiment.config.update(params, allow_val_change=True)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        """Log one row; `step` goes in as `trainer/global_step`, the x-axis of every metric."""
        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        if step is not None and not self._wandb_init.get("sync_tensorboard"):
            metrics = dict(metrics, **{_STEP_KEY: step})
        self.experiment.log(metrics)

    @rank_zero_only
    def log_table(self, key: str, columns: Optional[List[str]] = None, data: Optional[List[List[Any]]] = None,
                  dataframe: Any = None, step: Optional[int] = None) -> None:
        """Log a `wandb.Table` from columns and rows, or from a pandas DataFrame."""
        wandb = import_isolated("wandb")

        self.log_metrics({key: wandb.Table(columns=columns, data=data, dataframe=dataframe)}, step)

    @rank_zero_only
    def log_text(self, key: str, columns: Optional[List[str]] = None, data: Optional[List[List[str]]] = None,
                 dataframe: Any = None, step: Optional[int] = None) -> None:
        """Log text samples as a table."""
        self.log_table(key, columns, data, dataframe, step)

    @rank_zero_only
    def log_image(self, key: str, images: List[Any], step: Optional[int] = None, **kwargs: Any) -> None:
        """Log images; each keyword holds one value per image (e.g. `caption=[...]`)."""
        wandb = import_isolated("wandb")

        self.log_metrics({key: _media(wandb.Image, "images", images, kwargs)}, step)

    @rank_zero_only
    def log_audio(self, key: str, audios: List[Any], step: Optional[int] = None, **kwargs: Any) -> None:
        """Log audio clips; each keyword holds one value per clip (e.g. `sample_rate=[...]`)."""
        wandb = import_isolated("wandb")

        self.log_metrics({key: _media(wandb.Audio, "audios", audios, kwargs)}, step)

    @rank_zero_only
    def log_video(self, key: str, videos: List[Any], step: Optional[int] = None, **kwargs: Any) -> None:
        """Log videos; each keyword holds one value per video (e.g. `fps=[...]`)."""
        wandb = import_isolated("wandb")

        self.log_metrics({key: _media(wandb.Video, "videos", videos, kwargs)}, step)

    @property
    def save_dir(self) -> Optional[str]:
        return self._save_dir

    @property
    def name(self) -> Optional[str]:
        """The project."""
        return self._project

    @property
    def version(self) -> str:
        """The run id: the running run's, the one given, or else a new W&B-style id (fixed at first use)."""
        if self._experiment is not None:
            return self._experiment.id
        if self._id is None:
            wandb = sys.modules.get("wandb")  # a run started in this process is the one `experiment` reuses
            running = wandb.run if wandb is not None and self._resume_row is None else None
            self._id = running.id if running is not None else _new_run_id()
        return self._id

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        if self._log_model == "all" or (self._log_model is True and checkpoint_callback.save_top_k == -1):
            self._upload_checkpoints(checkpoint_callback)
        elif self._log_model is True:
            self._checkpoint_callbacks[id(checkpoint_callback)] = checkpoint_callback

    @staticmethod
    @rank_zero_only
    def download_artifact(artifact: str, save_dir: Optional[Union[str, os.PathLike]] = None,
                          artifact_type: Optional[str] = None, use_artifact: Optional[bool] = True) -> str:
        """Download an artifact (e.g. "entity/project/model-abc:best") and return its folder."""
        wandb = import_isolated("wandb")

        if wandb.run is not None and use_artifact:
            found = wandb.run.use_artifact(artifact)
        else:
            found = wandb.Api().artifact(artifact, type=artifact_type)
        return found.download(root=None if save_dir is None else os.fspath(save_dir))

    def use_artifact(self, artifact: str, artifact_type: Optional[str] = None):
        """Declare an artifact as an input of this run (`Run.use_artifact`)."""
        return self.experiment.use_artifact(artifact, type=artifact_type)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """After a successful fit, upload the checkpoints kept for the end (log_model=True). The run stays open,
        as in Lightning, so that a later `test()` logs into it; `wandb.finish()` ends it."""
        if self._pending_config:  # a fit that logged nothing else: its run still records the hyperparameters
            _ = self.experiment
        if status != "success" or self._experiment is None:
            return
        for checkpoint_callback in self._checkpoint_callbacks.values():
            self._upload_checkpoints(checkpoint_callback)

    def _upload_checkpoints(self, checkpoint_callback) -> None:
        """Each new or changed checkpoint file (or sharded checkpoint folder) becomes a version of the "model"
        artifact (file or folder `model.ckpt`), aliased "latest", and "best" for the best model."""
        wandb = import_isolated("wandb")

        for mtime, path, score in checkpoints_to_upload(checkpoint_callback, self._uploaded):
            if not self._checkpoint_name:
                self._checkpoint_name = f"model-{self.experiment.id}"
            artifact = wandb.Artifact(name=self._checkpoint_name, type="model",
                                      metadata=checkpoint_metadata(checkpoint_callback, path, score))
            if os.path.isdir(path):  # a sharded checkpoint folder
                artifact.add_dir(path, name="model.ckpt", policy=self.add_file_policy)
            else:
                artifact.add_file(path, name="model.ckpt", policy=self.add_file_policy)
            aliases = ["latest", "best"] if path == checkpoint_callback.best_model_path else ["latest"]
            self.experiment.log_artifact(artifact, aliases=aliases)
            self._uploaded[path] = mtime

    # ------------------------------------------------------------------------------------------------------ resume

    def state_dict(self) -> Dict[str, Any]:
        """The run to continue on resume, where its history stands (W&B's `_step`), and the checkpoints uploaded."""
        if rank_zero_only.rank != 0:
            return {}
        if self._resume_row is not None:  # resumed, the run not started again yet
            row = self._resume_row
        elif self._experiment is not None:
            row = max(self._experiment.step, self._history_start)
        else:
            return {}
        return {"run_id": self.version, "row": int(row), "uploaded": dict(self._uploaded)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue the checkpoint's run from where its history stood (see the module docstring). A run chosen by
        the user (`id`/`version`/`experiment`) that is another run wins: that run is continued as it is."""
        if rank_zero_only.rank != 0 or not state.get("run_id"):
            return
        if self._id_given and self._id != state["run_id"]:
            return
        if self._experiment is not None:
            if self._experiment.id != state["run_id"]:
                rank_zero_warn(f"WandbLogger: run {self._experiment.id} was started before the checkpoint was read; "
                               f"it is finished and the checkpoint's run {state['run_id']} continues.")
            self._experiment.finish()
            self._experiment = None
        self._id, self._resume_row, self._history_start = state["run_id"], state["row"], 0
        self._uploaded.update(state.get("uploaded") or {})

    def __getstate__(self) -> Dict[str, Any]:
        """Pickle without the run (e.g. to start worker processes): a copy continues the same run id."""
        state = self.__dict__.copy()
        if self._experiment is not None:
            state["_id"] = self._experiment.id
        state["_experiment"] = None
        return state


def _new_run_id() -> str:
    """An id of the form W&B gives new runs (8 lowercase letters and digits), without importing wandb."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _name_callable(value: Any) -> Any:
    """A class or function as its name (W&B's config holds data); other values as given."""
    if isinstance(value, type) or callable(value):
        return getattr(value, "__name__", str(value))
    return value


def _json_value(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError, OverflowError):
        return str(value)
    return value


def _media(wandb_type, what: str, items: List[Any], kwargs: Dict[str, List[Any]]) -> List[Any]:
    """One wandb media object per item, the i-th of each keyword's list going to the i-th item."""
    if not isinstance(items, list):
        raise TypeError(f'Expected a list as "{what}", found {type(items)}')
    for key, values in kwargs.items():
        if len(values) != len(items):
            raise ValueError(f"Expected {len(items)} items but only found {len(values)} for {key}")
    return [wandb_type(item, **{key: values[i] for key, values in kwargs.items()}) for i, item in enumerate(items)]
