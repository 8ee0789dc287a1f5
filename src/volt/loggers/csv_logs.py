"""CSVLogger: metrics to `<save_dir>/<name>/version_N/metrics.csv`, hyperparameters to `hparams.yaml` beside it.
`save_dir` may be a local folder or an fsspec URL (`memory://logs`, `s3://bucket/logs`), as in Lightning."""
import csv
import os
from argparse import Namespace
from typing import Any, Dict, List, Mapping, Optional, Union

import torch

from volt.loggers.logger import Logger, rank_zero_experiment
from volt.loggers.utils import (
    NAME_HPARAMS_FILE,
    LogFiles,
    RewritableLog,
    VersionedLogDir,
    _add_prefix,
    _convert_params,
    _save_hparams_to_yaml,
    _version_dir,
    local_path,
)
from volt.utilities.rank_zero import rank_zero_only, rank_zero_warn


class ExperimentWriter:
    """Buffers metric rows and writes them to metrics.csv, whose header is the sorted union of every key seen.

    Values are kept as given (tensors included, so callers must not modify them in place) and converted to numbers
    only when written, so logging a row costs no device sync.
    """

    NAME_METRICS_FILE = "metrics.csv"
    NAME_HPARAMS_FILE = NAME_HPARAMS_FILE

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        self.hparams: Dict[str, Any] = {}
        self.metrics: List[Dict[str, Any]] = []  # rows not yet on disk
        self.metrics_keys: List[str] = []  # header of the file this writer started; empty until it starts one
        self._rows_logged = 0
        self._files = LogFiles(log_dir)
        self._files.makedirs(log_dir)

    def log_hparams(self, params: Mapping[str, Any]) -> None:
        """Record hyperparameters and write hparams.yaml (all of them so far), as Lightning does."""
        self.hparams.update(params)
        _save_hparams_to_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)

    def log_metrics(self, metrics_dict: Mapping[str, Any], step: Optional[int] = None) -> None:
        """Record one row; without a step, rows are numbered in the order they were logged."""
        row = dict(metrics_dict)
        row["step"] = self._rows_logged if step is None else step
        self.metrics.append(row)
        self._rows_logged += 1

    def save(self) -> None:
        """Write the recorded rows. The file is rewritten only when a new column appears."""
        if not self.metrics:
            return
        rows = [{key: _to_number(value) for key, value in row.items()} for row in self.metrics]
        keys = set().union(*rows)
        if self.metrics_keys and keys.issubset(self.metrics_keys):
            with self._files.open(self.metrics_file_path, "a") as file:
                csv.DictWriter(file, fieldnames=self.metrics_keys).writerows(rows)
        else:
            self._rewrite(sorted(keys.union(self.metrics_keys)), self._rows_on_disk() + rows)
        self.metrics = []

    def drop_from(self, step: int) -> None:
        """Keep only rows with a step before `step`, on disk and in the buffer, whoever started the file."""
        self.metrics = [row for row in self.metrics if row["step"] < step]
        if not self._files.isfile(self.metrics_file_path):
            return
        with self._files.open(self.metrics_file_path) as file:
            reader = csv.DictReader(file)
            kept = [row for row in reader if float(row["step"]) < step]
            header = list(reader.fieldnames or [])
        self._rewrite(header, kept)

    def _rows_on_disk(self) -> List[Dict[str, str]]:
        """Rows this writer already wrote (an older file that it did not start is overwritten, as Lightning does)."""
        if not self.metrics_keys:
            return []
        with self._files.open(self.metrics_file_path) as file:
            return list(csv.DictReader(file))

    def _rewrite(self, keys: List[str], rows: List[Dict[str, Any]]) -> None:
        tmp_path = f"{self.metrics_file_path}.tmp"
        with self._files.open(tmp_path, "w") as file:
            writer = csv.DictWriter(file, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self._files.replace(tmp_path, self.metrics_file_path)  # a crash mid-rewrite leaves the previous file intact
        self.metrics_keys = keys


def _to_number(value: Any) -> Any:
    return value.item() if isinstance(value, torch.Tensor) else value


class CSVLogger(RewritableLog, VersionedLogDir, Logger):
    """Log metrics to a CSV file and hyperparameters to YAML, in `<save_dir>/<name>/version_N/`.

    Args:
        save_dir: directory under which the experiment folders go.
        name: experiment folder name; "" or None puts the versions directly in `save_dir`.
        version: an int gives `version_N`, a str names the folder as is; None takes the next free `version_N`.
        prefix: put in front of every metric key, joined with "-".
        flush_logs_every_n_steps: write buffered rows when `(step + 1)` is a multiple of this (and on `save()`).
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        save_dir: Union[str, os.PathLike],
        name: Optional[str] = "lightning_logs",
        version: Optional[Union[int, str]] = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ):
        super().__init__()
        if not isinstance(flush_logs_every_n_steps, int) or flush_logs_every_n_steps < 1:
            raise ValueError(
                f"CSVLogger(flush_logs_every_n_steps={flush_logs_every_n_steps!r}): expected a positive integer, "
                "the number of steps between writes to metrics.csv."
            )
        self._save_dir = local_path(save_dir)
        self._name = name or ""
        self._version = version
        self._prefix = prefix
        self._flush_logs_every_n_steps = flush_logs_every_n_steps
        self._experiment: Optional[ExperimentWriter] = None

    @property
    def log_dir(self) -> str:
        """`<root_dir>/version_N`, or `<root_dir>/<version>` for a string version."""
        return os.path.join(self.root_dir, _version_dir(self.version))

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The ExperimentWriter, created (with its folder) on first use."""
        if self._experiment is None:
            log_dir = self.log_dir
            files = LogFiles(log_dir)
            if files.has_files(log_dir):
                rank_zero_warn(
                    f"Experiment logs directory {log_dir} exists and is not empty. Its metrics.csv is deleted now, as"
                    " in Lightning, and hparams.yaml is overwritten when new hyperparameters are saved: pass another"
                    " `version` (or none, for the next free one) to keep them."
                )
                metrics_file = os.path.join(log_dir, ExperimentWriter.NAME_METRICS_FILE)
                if files.isfile(metrics_file):
                    files.remove(metrics_file)
            self._experiment = ExperimentWriter(log_dir)
        return self._experiment

    @rank_zero_only
    def log_hyperparams(self, params: Optional[Union[Dict[str, Any], Namespace]] = None) -> None:
        self.experiment.log_hparams(_convert_params(params))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        experiment = self.experiment
        self.remember_logged(metrics, step)
        experiment.log_metrics(_add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR), step)
        if (experiment.metrics[-1]["step"] + 1) % self._flush_logs_every_n_steps == 0:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        self.experiment.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:  # nothing was logged in this process: leave the files alone
            self.save()

    @rank_zero_only
    def drop_from(self, step: int) -> None:
        """Drop rows at or after `step`: a run resumed from a checkpoint at `step` logs them again."""
        if self._experiment is None:
            self._experiment = ExperimentWriter(self.log_dir)  # resuming into a used folder is expected: no warning
        self._experiment.drop_from(step)
