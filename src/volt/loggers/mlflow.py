"""MLFlowLogger: metrics, parameters and checkpoints to an MLflow tracking store (file, database or server).

mlflow takes one to three seconds to import, so nothing here imports it until the run is first used.

Resume: a checkpoint records the run and the rows logged at its step (`state_dict`). A run resumed from it, in this
process or a new one, continues that MLflow run: the points the interrupted run logged from the checkpoint's step on
are deleted and that step's rows logged again, so every step appears once, with the resumed run's values. MLflow's
client has no call that deletes metric points, so volt deletes them in the store itself where this process reaches
it (a `file:` store, or a database: SQLite, PostgreSQL, MySQL, SQL Server); behind a tracking server the
interrupted run's later points stay, and a warning says so.
"""
import logging
import os
import re
import tempfile
import time
from argparse import Namespace
from typing import Any, Dict, List, Literal, Mapping, Optional, Union

from volt.loggers.logger import Logger, rank_zero_experiment
from volt.loggers.tracking import LatestRows, checkpoint_metadata, checkpoints_to_upload, require, to_number
from volt.loggers.utils import _add_prefix, _convert_params, _flatten_dict
from volt.utilities.imports import import_isolated
from volt.utilities.rank_zero import rank_zero_only, rank_zero_warn

log = logging.getLogger(__name__)

LOCAL_FILE_URI_PREFIX = "file:"
# Read once, as Lightning does: `mlflow.set_tracking_uri` (called when a run starts) exports the variable, which must
# not become the default of every logger created after the first one.
_ENV_TRACKING_URI = os.getenv("MLFLOW_TRACKING_URI")
_RUN_STATUS = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}


class MLFlowLogger(Logger):
    """Log to MLflow: metrics with their step, flattened hyperparameters as params, checkpoints as artifacts.

    Args:
        experiment_name: the MLflow experiment (created if missing).
        run_name: the run's display name (its `mlflow.runName` tag).
        tracking_uri: where runs go, e.g. "sqlite:///mlflow.db" or "http://host:5000"; default: the
            MLFLOW_TRACKING_URI environment variable (as it was when this module was imported), else
            `file:<save_dir>`.
        tags: tags for a new run.
        save_dir: folder of the `file:` store used when there is no tracking URI.
        log_model: upload the ModelCheckpoint's files as artifacts: "all" after every save, True at the end of
            training (after every save when save_top_k == -1), False never.
        prefix: put in front of every metric key, joined with "-".
        artifact_location: artifact root of a newly created experiment.
        run_id: log into this existing run instead of creating one.
        synchronous: wait for every logging call (True) or let MLflow log in the background (False).
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        experiment_name: str = "lightning_logs",
        run_name: Optional[str] = None,
        tracking_uri: Optional[str] = None,
        tags: Optional[Dict[str, Any]] = None,
        save_dir: Optional[str] = "./mlruns",
        log_model: Literal[True, False, "all"] = False,
        prefix: str = "",
        artifact_location: Optional[str] = None,
        run_id: Optional[str] = None,
        synchronous: Optional[bool] = None,
    ):
        require("mlflow", "mlflow", "mlflow", "MLFlowLogger")
        super().__init__()
        if log_model not in (True, False, "all"):
            raise ValueError(f"MLFlowLogger(log_model={log_model!r}): expected True, False or 'all'.")
        self._experiment_name = experiment_name
        self._experiment_id: Optional[str] = None
        self._tracking_uri = tracking_uri or _ENV_TRACKING_URI or f"{LOCAL_FILE_URI_PREFIX}{save_dir}"
        self._run_name = run_name
        self._run_id = run_id
        self._run_id_given = run_id is not None
        self.tags = tags
        self._log_model = log_model
        self._prefix = prefix
        self._artifact_location = artifact_location
        self._log_batch_kwargs = {} if synchronous is None else {"synchronous": synchronous}
        self._client = None  # MlflowClient, created with the run
        self._initialized = False
        self._logged_anything = False  # a run this logger created and never wrote to can be swapped on resume
        self._uploaded: Dict[str, float] = {}  # checkpoint path -> modification time when uploaded
        self._checkpoint_callback = None  # the callback whose files are uploaded at the end (log_model=True)
        self._latest = LatestRows()

    @property
    @rank_zero_experiment
    def experiment(self):
        """The `mlflow.tracking.MlflowClient`; the experiment and run are created (or found) on first use."""
        if self._initialized:
            return self._client
        mlflow = import_isolated("mlflow")  # imported mid-run: it must not move the seeded run's RNGs

        mlflow.set_tracking_uri(self._tracking_uri)
        self._client = client = import_isolated("mlflow.tracking").MlflowClient(self._tracking_uri)
        if self._run_id is not None:
            self._experiment_id = client.get_run(self._run_id).info.experiment_id
        else:
            self._experiment_id = self._find_or_create_experiment(client)
            self._run_id = self._create_run(client)
        self._initialized = True
        return client

    def _find_or_create_experiment(self, client) -> str:
        experiment = client.get_experiment_by_name(self._experiment_name)
        if experiment is not None and experiment.lifecycle_stage != "deleted":
            return experiment.experiment_id
        log.warning(f"Experiment with name {self._experiment_name} not found. Creating it.")
        return client.create_experiment(name=self._experiment_name, artifact_location=self._artifact_location)

    def _create_run(self, client) -> str:
        from mlflow.tracking.context.registry import resolve_tags
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        tags = dict(self.tags or {})
        if self._run_name is not None:
            if MLFLOW_RUN_NAME in tags:
                log.warning(f"The tag {MLFLOW_RUN_NAME} is found in tags. The value will be overridden by "
                            f"{self._run_name}.")
            tags[MLFLOW_RUN_NAME] = self._run_name
        self.tags = tags
        return client.create_run(experiment_id=self._experiment_id, tags=resolve_tags(tags)).info.run_id

    @property
    def run_id(self) -> Optional[str]:
        """The run's id (creating the run if needed)."""
        _ = self.experiment
        return self._run_id

    @property
    def experiment_id(self) -> Optional[str]:
        """The experiment's id (creating it if needed)."""
        _ = self.experiment
        return self._experiment_id

    @property
    def name(self) -> Optional[str]:
        """The experiment id: checkpoints go to `<save_dir>/<experiment id>/<run id>/checkpoints`, as in Lightning."""
        return self.experiment_id

    @property
    def version(self) -> Optional[str]:
        """The run id."""
        return self.run_id

    @property
    def save_dir(self) -> Optional[str]:
        """The folder of a `file:` tracking store; None for any other store."""
        if self._tracking_uri.startswith(LOCAL_FILE_URI_PREFIX):
            return self._tracking_uri[len(LOCAL_FILE_URI_PREFIX):]
        return None

    @rank_zero_only
    def log_hyperparams(self, params: Union[Dict[str, Any], Namespace]) -> None:
        """Log hyperparameters as params, nested keys joined with "/" (MLflow keeps one value per param)."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        params = _flatten_dict(_convert_params(params))
        entries = [Param(key=key, value=str(value)[:MAX_PARAM_VAL_LENGTH]) for key, value in params.items()]
        for start in range(0, len(entries), 100):  # MLflow takes at most 100 params per batch
            self.experiment.log_batch(run_id=self.run_id, params=entries[start:start + 100], **self._log_batch_kwargs)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        """Log numbers (or one-element tensors) at `step`; a string is skipped with a warning, and characters
        MLflow refuses in a key are removed with a warning."""
        from mlflow.entities import Metric

        self._latest.add(metrics, step)
        timestamp_ms = int(time.time() * 1000)
        entries: List[Metric] = []
        for key, value in _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR).items():
            if isinstance(value, str):
                log.warning(f"Discarding metric with string value {key}={value}.")
                continue
            clean = re.sub("[^a-zA-Z0-9_/. -]+", "", key)
            if clean != key:
                rank_zero_warn(f"MLFlow only allows '_', '/', '.' and ' ' special characters in metric name. "
                               f"Replacing {key} with {clean}.", category=RuntimeWarning)
            entries.append(Metric(key=clean, value=_to_float(key, value), timestamp=timestamp_ms, step=step or 0))
        self._logged_anything = True
        self.experiment.log_batch(run_id=self.run_id, metrics=entries, **self._log_batch_kwargs)

    @rank_zero_only
    def save(self) -> None:
        """With `synchronous=False`, wait until MLflow has stored what was logged (a checkpoint follows)."""
        if self._initialized and self._log_batch_kwargs.get("synchronous") is False:
            import mlflow

            mlflow.flush_async_logging()

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Upload the checkpoints kept for the end (log_model=True) and mark the run finished or failed."""
        if not self._initialized:
            return
        self.save()
        if self._checkpoint_callback is not None:
            self._upload_checkpoints(self._checkpoint_callback)
        if self.experiment.get_run(self.run_id):
            self.experiment.set_terminated(self.run_id, _RUN_STATUS.get(status, status.upper()))

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        if self._log_model == "all" or (self._log_model is True and checkpoint_callback.save_top_k == -1):
            self._upload_checkpoints(checkpoint_callback)
        elif self._log_model is True:
            self._checkpoint_callback = checkpoint_callback

    def _upload_checkpoints(self, checkpoint_callback) -> None:
        """Each new or changed checkpoint file (or folder) goes to the artifact folder named after it, with
        metadata.yaml and aliases.txt ("latest", and "best" for the best model) beside it."""
        import yaml

        for mtime, path, score in checkpoints_to_upload(checkpoint_callback, self._uploaded):
            artifact_path = os.path.splitext(os.path.basename(path))[0]
            if os.path.isdir(path):  # a sharded checkpoint folder: its files under <name>/<name>.ckpt/
                self.experiment.log_artifacts(self._run_id, path, f"{artifact_path}/{os.path.basename(path)}")
            else:
                self.experiment.log_artifact(self._run_id, path, artifact_path)
            aliases = ["latest", "best"] if path == checkpoint_callback.best_model_path else ["latest"]
            with tempfile.TemporaryDirectory() as tmp_dir:
                with open(os.path.join(tmp_dir, "metadata.yaml"), "w") as file:
                    yaml.dump(checkpoint_metadata(checkpoint_callback, path, score), file, default_flow_style=False)
                with open(os.path.join(tmp_dir, "aliases.txt"), "w") as file:
                    file.write(str(aliases))
                self.experiment.log_artifacts(self._run_id, tmp_dir, artifact_path)
            self._uploaded[path] = mtime

    # ------------------------------------------------------------------------------------------------------ resume

    def state_dict(self) -> Dict[str, Any]:
        """The run to continue on resume, the rows logged at the latest step, and the checkpoints already uploaded."""
        if not self._initialized:
            return {}
        return {"run_id": self._run_id, "experiment_id": self._experiment_id, "step": self._latest.step,
                "rows": self._latest.rows, "uploaded": dict(self._uploaded)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue the checkpoint's run: delete its points from the checkpoint's step on, log that step's rows
        again. A `run_id` given to this logger that names another run wins: that run is continued as it is."""
        if rank_zero_only.rank != 0 or not state.get("run_id"):
            return
        if self._run_id_given and self._run_id != state["run_id"]:
            return
        self._adopt_run(state["run_id"])
        self._uploaded.update(state.get("uploaded") or {})
        step = state.get("step")
        if step is None:
            return
        if not _delete_points_from(self._tracking_uri, self._experiment_id, self._run_id, step):
            rank_zero_warn(
                f"MLFlowLogger: resuming run {self._run_id} from step {step}, but MLflow's API cannot delete metric "
                f"points and the store at {self._tracking_uri!r} is not one volt can reach directly (a file store "
                "or a database): points the interrupted run logged from that step on stay in the run's history, "
                "beside the resumed run's."
            )
            return
        for row in state.get("rows") or []:
            self.log_metrics(row, step=step)

    def _adopt_run(self, run_id: str) -> None:
        """Log into `run_id` from now on (marked running again); a run this logger opened in this process and never
        wrote metrics to (opened when the checkpoint folder was chosen) is deleted."""
        if not self._initialized:
            self._run_id = run_id  # the run is looked up on first use
        client = self.experiment
        if self._run_id != run_id:
            if self._logged_anything:
                rank_zero_warn(f"MLFlowLogger: run {self._run_id} already has metrics from this process; resuming "
                               f"the checkpoint's run {run_id} from here on.")
            else:
                client.delete_run(self._run_id)
            self._run_id = run_id
            self._experiment_id = client.get_run(run_id).info.experiment_id
        client.update_run(run_id, status="RUNNING")


def _to_float(key: str, value: Any) -> float:
    try:
        return float(to_number(value))
    except (TypeError, ValueError) as error:
        raise ValueError(f"MLFlowLogger cannot log {key!r}={value!r}: log a number or a one-element tensor.") from error


def _delete_points_from(tracking_uri: str, experiment_id: str, run_id: str, step: int) -> bool:
    """Delete a run's metric points at `step` and after, in a file or database store; False for any other store."""
    from mlflow.store.db.db_types import DATABASE_ENGINES
    from mlflow.utils.uri import get_uri_scheme

    scheme = get_uri_scheme(tracking_uri)
    if scheme == "file" or (scheme == "" and os.path.isdir(tracking_uri)):  # a bare "databricks" has no scheme
        from mlflow.utils.file_utils import local_file_uri_to_path

        _delete_from_file_store(local_file_uri_to_path(tracking_uri), experiment_id, run_id, step)
        return True
    if scheme.split("+")[0] in DATABASE_ENGINES:
        _delete_from_database(tracking_uri, run_id, step)
        return True
    return False


def _delete_from_file_store(root: str, experiment_id: str, run_id: str, step: int) -> None:
    """A file store keeps one file per metric, one `timestamp value [step ...]` line per point."""
    run_dir = os.path.join(root, str(experiment_id), run_id)
    for folder, _, files in os.walk(os.path.join(run_dir, "metrics")):
        for name in files:
            path = os.path.join(folder, name)
            with open(path) as file:
                lines = file.readlines()
            kept = [line for line in lines if _line_step(line) < step]
            if len(kept) != len(lines):
                # written beside the metrics folder (a stray file inside it would read as a metric), then renamed
                handle, tmp_path = tempfile.mkstemp(dir=run_dir, prefix=".volt-")
                with os.fdopen(handle, "w") as file:
                    file.writelines(kept)
                os.replace(tmp_path, path)


def _line_step(line: str) -> int:
    fields = line.split()
    return int(fields[2]) if len(fields) >= 3 else 0


def _delete_from_database(db_uri: str, run_id: str, step: int) -> None:
    """Delete the points (MLflow's `metrics` table) and recompute each touched key's latest value (its
    `latest_metrics` row, which MLflow reads for a run's summary), in one transaction."""
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric
    from sqlalchemy.orm import Session

    engine = sqlalchemy.create_engine(db_uri)
    try:
        with Session(engine) as session, session.begin():
            later = session.query(SqlMetric).filter(SqlMetric.run_uuid == run_id, SqlMetric.step >= step)
            keys = {key for (key,) in later.with_entities(SqlMetric.key).distinct()}
            later.delete(synchronize_session=False)
            for key in keys:
                newest = (session.query(SqlMetric).filter(SqlMetric.run_uuid == run_id, SqlMetric.key == key)
                          .order_by(SqlMetric.step.desc(), SqlMetric.timestamp.desc(), SqlMetric.value.desc()).first())
                latest = session.query(SqlLatestMetric).filter(SqlLatestMetric.run_uuid == run_id,
                                                                SqlLatestMetric.key == key)
                if newest is None:
                    latest.delete(synchronize_session=False)
                else:
                    latest.update({"step": newest.step, "timestamp": newest.timestamp, "value": newest.value,
                                   "is_nan": newest.is_nan}, synchronize_session=False)
    finally:
        engine.dispose()
