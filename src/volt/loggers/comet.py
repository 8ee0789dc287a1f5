"""CometLogger: metrics, parameters and the model graph to a Comet experiment (online, or an offline archive to
upload later with `comet upload`).

comet_ml takes seconds to import and, unless told not to, patches the libraries imported after it; it is imported
only when the experiment is first used, with its automatic logging turned off (as Lightning does). The experiment
key is chosen when first asked for, without starting the experiment, so the checkpoint folder
`<offline_directory>/<project>/<key>/checkpoints` is Lightning's, which starts the experiment in the constructor.
Hyperparameters logged before the experiment starts wait for it, so that a resumed fit, which logs them before it
reads its checkpoint, never opens an experiment of its own.

Resume: a checkpoint records the experiment key (`state_dict`), and a run resumed from it continues that experiment
(`mode="get"`). Comet has no way to delete or rewind logged metric points: those the interrupted run logged after
the checkpoint stay in the experiment beside the resumed run's, and a warning names the step they start at.
"""
import os
import uuid
from argparse import Namespace
from typing import Any, Dict, Literal, Mapping, Optional, Union

from volt.loggers.logger import Logger, rank_zero_experiment
from volt.loggers.tracking import require, to_number
from volt.loggers.utils import _convert_params
from volt.utilities.imports import import_isolated
from volt.utilities.rank_zero import rank_zero_only, rank_zero_warn

FRAMEWORK_NAME = "pytorch-lightning"  # what Lightning's logger tells Comet; Comet's UI groups runs by it
_RENAMED = {"experiment_name": "name", "project_name": "project", "save_dir": "offline_directory"}


class CometLogger(Logger):
    """Log to Comet: metrics with their step and epoch, hyperparameters (nested ones joined with "|"), the graph.

    Args:
        api_key: Comet API key (default: Comet's configuration, e.g. `comet login`).
        workspace: Comet workspace.
        project: Comet project (Comet's default when None).
        experiment_key: the experiment's key: continue it, or name a new one (32-50 letters and digits).
        mode: "get_or_create" (default), "get" (the experiment must exist) or "create".
        online: False writes an offline archive (to `offline_directory`) instead of sending to the server.
        prefix: put in front of every metric name.
        **kwargs: options of `comet_ml.ExperimentConfig` (e.g. `name`, `offline_directory`, `log_code`). The 1.x
            names `experiment_name`, `project_name`, `save_dir` and `offline` are accepted, as in Lightning.
    """

    def __init__(
        self,
        *,
        api_key: Optional[str] = None,
        workspace: Optional[str] = None,
        project: Optional[str] = None,
        experiment_key: Optional[str] = None,
        mode: Optional[Literal["get_or_create", "get", "create"]] = None,
        online: Optional[bool] = None,
        prefix: Optional[str] = None,
        **kwargs: Any,
    ):
        require("comet_ml", "comet-ml", "comet", "CometLogger")
        super().__init__()
        for old, new in _RENAMED.items():
            if old in kwargs:
                rank_zero_warn(f"CometLogger: `{old}` is deprecated, use `{new}`.", DeprecationWarning)
                value = kwargs.pop(old)
                if new == "project":
                    project = project if project is not None else value
                else:
                    kwargs.setdefault(new, value)
        if "offline" in kwargs:
            rank_zero_warn("CometLogger: `offline` is deprecated, use `online`.", DeprecationWarning)
            offline = kwargs.pop("offline")
            online = online if online is not None else not offline
        self._api_key = api_key
        self._workspace = workspace
        self._project_name = project
        self._experiment_key = experiment_key
        self._key_given = experiment_key is not None
        self._mode = mode
        self._online = online
        self._prefix = prefix
        self._kwargs = kwargs
        self._experiment = None
        self._latest_step: Optional[int] = None
        self._resumed_from: Optional[int] = None  # the checkpoint step of a resumed run, for the warning
        self._pending_params: Dict[str, Any] = {}  # hyperparameters logged before the experiment started

    @property
    @rank_zero_experiment
    def experiment(self):
        """The Comet experiment (`comet_ml.Experiment` or `OfflineExperiment`), started on first use."""
        if self._experiment is None:
            comet_ml = _import_comet()
            # Lightning 2.6 also passes `disabled=True` when online=False, so that its offline experiments write
            # nothing at all; here they write their archive, as its documentation says
            self._experiment = comet_ml.start(
                api_key=self._api_key, workspace=self._workspace, project=self._project_name,
                experiment_key=self.version, mode=self._mode, online=self._online,
                experiment_config=comet_ml.ExperimentConfig(**self._kwargs),
            )
            self._project_name = self._experiment.project_name
            self._experiment.log_other("Created from", FRAMEWORK_NAME)
            if self._pending_params:
                self._experiment.log_parameters(self._pending_params, nested_support=True)
                self._pending_params = {}
            if self._resumed_from is not None:
                rank_zero_warn(
                    f"CometLogger: continuing experiment {self.version} from step {self._resumed_from}. Comet cannot "
                    "delete logged metric points: those the interrupted run logged from that step on stay in the "
                    "experiment, beside the resumed run's."
                )
        return self._experiment

    @rank_zero_only
    def log_hyperparams(self, params: Union[Dict[str, Any], Namespace]) -> None:
        """Log hyperparameters (when the experiment starts, if it has not yet); nested ones joined with "|"."""
        if self._experiment is None:
            self._pending_params.update(_convert_params(params))
        else:
            self._experiment.log_parameters(_convert_params(params), nested_support=True)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        """Log numbers at `step`; an `epoch` entry becomes the points' epoch."""
        values = {key: to_number(value) for key, value in metrics.items()}
        epoch = values.pop("epoch", None)
        self.experiment.log_metrics(values, step=step, epoch=epoch, prefix=self._prefix)
        if step is not None:
            self._latest_step = step

    @rank_zero_only
    def log_graph(self, model, input_array=None) -> None:
        if self._experiment is not None:
            self._experiment.set_model_graph(model)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Send (or write) what is buffered; the experiment stays open for later stages, as in Lightning. `end()` on
        `experiment` closes it (offline: writes the archive)."""
        if self._pending_params:  # a fit that logged nothing else: its experiment still records the hyperparameters
            _ = self.experiment
        if self._experiment is not None:
            self._experiment.flush()

    @property
    def save_dir(self) -> Optional[str]:
        """Comet's offline folder (`offline_directory`), also the root of the checkpoint folder, as in Lightning.

        Unless given, it comes from Comet's configuration, read on rank 0 only (other ranks never import comet_ml;
        they get their checkpoint folder from rank 0)."""
        if "offline_directory" in self._kwargs:
            return self._kwargs["offline_directory"]
        if rank_zero_only.rank != 0:
            return None
        return _import_comet().ExperimentConfig(**self._kwargs).offline_directory

    @property
    def name(self) -> Optional[str]:
        """The project."""
        return self._project_name

    @property
    def version(self) -> str:
        """The experiment key: the one given, or a new one (fixed at first use)."""
        if self._experiment_key is None:
            self._experiment_key = uuid.uuid4().hex
        return self._experiment_key

    # ------------------------------------------------------------------------------------------------------ resume

    def state_dict(self) -> Dict[str, Any]:
        """The experiment to continue on resume, and the step of the latest metrics."""
        if self._experiment is None:
            return {}
        return {"experiment_key": self.version, "step": self._latest_step}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue the checkpoint's experiment (see the module docstring); a key given to this logger that names
        another experiment wins."""
        if rank_zero_only.rank != 0 or not state.get("experiment_key"):
            return
        if self._key_given and self._experiment_key != state["experiment_key"]:
            return
        if self._experiment is not None:
            rank_zero_warn(f"CometLogger: experiment {self.version} was started before the checkpoint was read; it is "
                           f"ended and the checkpoint's experiment {state['experiment_key']} continues.")
            self._experiment.end()
            self._experiment = None
        self._experiment_key = state["experiment_key"]
        self._mode = "get"
        self._resumed_from = state.get("step")

    def __getstate__(self) -> Dict[str, Any]:
        """Pickle without the experiment (e.g. to start worker processes): a copy continues the same key."""
        state = self.__dict__.copy()
        state["_experiment"] = None
        return state


def _import_comet():
    os.environ["COMET_DISABLE_AUTO_LOGGING"] = "1"  # before the first import: no patching of torch and others
    return import_isolated("comet_ml")  # it draws from `random` when imported
