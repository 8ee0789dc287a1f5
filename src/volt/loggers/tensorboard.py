"""TensorBoardLogger: TensorBoard event files (written with tensorboardX) in `<save_dir>/<name>/version_N/`.

tensorboardX takes about a quarter of a second to import, so nothing here imports it until the first real write (the
first metrics, or hyperparameters with their `hp_metric`, written at once as in Lightning): `fit()` of a module
without hyperparameters reaches its first training step without waiting for it. That import may happen mid-run, so
it goes through `import_isolated`: it must not move the seeded run's random numbers.

Scalars and hyperparameters go to an event file the logger writes itself, synchronously, and hands to the OS after
every write (no fsync: these are logs, not checkpoints). tensorboardX's SummaryWriter instead queues events for a
background thread that its `flush()` does not wait for, and fsyncs on every flush. `experiment` is still a
SummaryWriter, for everything else (images, histograms, the graph).
"""
import importlib.util
import itertools
import os
import socket
import struct
import time
from argparse import Namespace
from typing import Any, Dict, Mapping, Optional, Union

import torch

from volt.loggers.logger import Logger, rank_zero_experiment
from volt.loggers.utils import (
    NAME_HPARAMS_FILE,
    LogFiles,
    RewritableLog,
    VersionedLogDir,
    _add_prefix,
    _convert_params,
    _flatten_dict,
    _sanitize_params,
    _save_hparams_to_yaml,
    _version_dir,
)
from volt.utilities.apply_func import move_data_to_device
from volt.utilities.imports import import_isolated
from volt.utilities.rank_zero import rank_zero_only, rank_zero_warn
from volt.utilities.tracing import tracing_module

_writer_ids = itertools.count()


def _unique_suffix() -> str:
    """An event-file name suffix unique to this writer, sorting in creation order.

    Event file names carry the time in whole seconds, and tensorboardX opens them with "wb": two writers started
    in the same second in one folder (fit, then test) would overwrite each other. TensorBoard reads a folder's files
    in name order, which the purge marker written on resume relies on.
    """
    return f".{time.time_ns()}.{os.getpid()}.{next(_writer_ids)}"


class _EventFile:
    """A TensorBoard event file (TFRecord framing: length, masked CRC, event, masked CRC), written synchronously."""

    def __init__(self, log_dir: str) -> None:
        event_pb2 = import_isolated("tensorboardX.proto.event_pb2")

        files = LogFiles(log_dir)  # a local folder or an fsspec URL (memory://, s3://), as Lightning's
        files.makedirs(log_dir)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}{_unique_suffix()}"
        self._file = files.open(os.path.join(log_dir, name), "wb")
        self.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def write(self, event) -> None:
        masked_crc32c = import_isolated("tensorboardX.record_writer").masked_crc32c

        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._file.write(b"".join((header, struct.pack("<I", masked_crc32c(header)), data,
                                   struct.pack("<I", masked_crc32c(data)))))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class _FsspecRecordWriters:
    """tensorboardX's writer factory for a URL scheme it does not know (memory://, ...): its files go through fsspec,
    where tensorboardX alone would make a local folder named after the scheme."""

    def directory_check(self, path: str) -> None:
        LogFiles(path).makedirs(path)

    def open(self, path: str) -> "_FsspecRecordFile":
        return _FsspecRecordFile(LogFiles(path).open(path, "wb"))


class _FsspecRecordFile:
    """An fsspec file as tensorboardX's writer uses it: without `fileno`, which tensorboardX would fsync."""

    def __init__(self, file) -> None:
        self._file = file

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _tensorboardx_available() -> bool:
    """Whether tensorboardX is installed, found without importing it."""
    return importlib.util.find_spec("tensorboardX") is not None


class TensorBoardLogger(RewritableLog, VersionedLogDir, Logger):
    """Log to TensorBoard event files in `<save_dir>/<name>/version_N[/<sub_dir>]`, hyperparameters also to YAML.

    Args:
        save_dir: directory under which the experiment folders go.
        name: experiment folder name; "" or None puts the versions directly in `save_dir`.
        version: an int gives `version_N`, a str names the folder as is; None takes the next free `version_N`.
        log_graph: write the model graph (traced from `example_input_array`) when the Trainer calls `log_graph`.
        default_hp_metric: log the placeholder `hp_metric = -1` with hyperparameters given without metrics, so
            TensorBoard's HPARAMS tab shows the run.
        prefix: put in front of every metric key, joined with "-".
        sub_dir: an extra folder level inside the version folder.
        **kwargs: passed to `tensorboardX.SummaryWriter` (e.g. `max_queue`, `flush_secs`).
    """

    NAME_HPARAMS_FILE = NAME_HPARAMS_FILE
    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        save_dir: Union[str, os.PathLike],
        name: Optional[str] = "lightning_logs",
        version: Optional[Union[int, str]] = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: Optional[Union[str, os.PathLike]] = None,
        **kwargs: Any,
    ):
        super().__init__()
        if not _tensorboardx_available():
            raise ModuleNotFoundError(
                "TensorBoardLogger writes with tensorboardX, which is not installed. "
                "Run `pip install tensorboardX`, or use `CSVLogger` instead."
            )
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._log_graph = log_graph
        self._default_hp_metric = default_hp_metric
        self._prefix = prefix
        self._sub_dir = None if sub_dir is None else os.fspath(sub_dir)
        self._filename_suffix = kwargs.pop("filename_suffix", "")
        self._kwargs = kwargs
        self._experiment = None  # SummaryWriter, created when `experiment` is first used
        self._events: Optional[_EventFile] = None  # the logger's own event file, for scalars and hparams
        self.hparams: Dict[str, Any] = {}
        self._hparams_saved = False  # hparams.yaml matches self.hparams
        self._purge_step: Optional[int] = None
        self._continues_at = 0  # the step a resumed fit continues this log at (`drop_from`)

    @property
    def sub_dir(self) -> Optional[str]:
        return self._sub_dir

    @property
    def log_dir(self) -> str:
        """`<root_dir>/version_N[/<sub_dir>]`, with `~` and environment variables expanded."""
        log_dir = os.path.join(self.root_dir, _version_dir(self.version))
        if self.sub_dir is not None:
            log_dir = os.path.join(log_dir, self.sub_dir)
        return os.path.expanduser(os.path.expandvars(log_dir))

    @property
    @rank_zero_experiment
    def experiment(self):
        """A `tensorboardX.SummaryWriter` on `log_dir`, created on first use, for images, histograms and the like."""
        if self._experiment is None:
            import_isolated("tensorboardX")
            # imported just above; named here so that LightningCLI (jsonargparse) offers SummaryWriter's arguments
            from tensorboardX import SummaryWriter

            self._open_events()  # first, so that a resume's purge marker sorts before the writer's file
            self._route_url_scheme_through_fsspec()
            suffix = _unique_suffix() + self._filename_suffix
            self._experiment = SummaryWriter(log_dir=self.log_dir, filename_suffix=suffix, **self._kwargs)
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        """Write scalars (numbers or one-element tensors, read now); a dict value goes to `add_scalars`."""
        summary_pb2 = import_isolated("tensorboardX.proto.summary_pb2")

        self.remember_logged(metrics, step)
        values = []
        for key, value in _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR).items():
            if isinstance(value, dict):
                self.experiment.add_scalars(key, {k: _to_float(f"{key}/{k}", v) for k, v in value.items()}, step)
            else:
                values.append(summary_pb2.Summary.Value(tag=key, simple_value=_to_float(key, value)))
        if values:  # one event for the whole dict: what add_scalar would write, for a fraction of the cost
            self._write(step, summary=summary_pb2.Summary(value=values))
            self._events.flush()

    @rank_zero_only
    def log_hyperparams(
        self,
        params: Optional[Union[Dict[str, Any], Namespace]],
        metrics: Optional[Union[Dict[str, Any], float]] = None,
        step: Optional[int] = None,
    ) -> None:
        """Record hyperparameters for hparams.yaml (written by `save`) and write them, with `metrics` to compare runs
        by, to TensorBoard's HPARAMS tab now; without metrics, hparams.yaml only."""
        params = _convert_params(params)
        self.hparams.update(params)
        self._hparams_saved = False
        if metrics is None:  # the placeholder; a resumed log already has it at step 0
            metrics = {"hp_metric": -1} if self._default_hp_metric and not self._continues_at else None
        elif not isinstance(metrics, dict):
            metrics = {"hp_metric": metrics}
        if metrics:
            self.log_metrics(metrics, step)
            hparams = import_isolated("tensorboardX.summary").hparams
            for summary in hparams(_sanitize_params(_flatten_dict(params)), metrics):
                self._write(step, summary=summary)

    @rank_zero_only
    def log_graph(self, model: torch.nn.Module, input_array: Any = None) -> None:
        """Trace `model` on `input_array` (default: `model.example_input_array`) into `experiment`'s event file."""
        if not self._log_graph:
            return
        if input_array is None:
            input_array = getattr(model, "example_input_array", None)
        if input_array is None:
            rank_zero_warn(
                "Could not log computational graph to TensorBoard: The `model.example_input_array` attribute is not"
                " set or `input_array` was not given. Set one of them."
            )
        elif not isinstance(input_array, (torch.Tensor, tuple)):
            rank_zero_warn(
                f"Could not log computational graph to TensorBoard: the input has type {type(input_array)}, which"
                " can't be traced by TensorBoard. Use a tensor, or a tuple of the positional arguments of `forward()`."
            )
        else:
            device = getattr(model, "device", None)
            if device is not None:
                input_array = move_data_to_device(input_array, device)
            with tracing_module():  # the model may have no Trainer yet: its `trainer` reads None while traced
                self.experiment.add_graph(model, input_array)

    @rank_zero_only
    def save(self) -> None:
        """Flush event files and write hparams.yaml. Before the first metrics there are no event files yet (nor is
        tensorboardX imported), but recorded hyperparameters are saved, as Lightning does."""
        if self._events is not None:
            self._events.flush()
        if self._experiment is not None:
            self._experiment.flush()
        if not self._hparams_saved and (self.hparams or self._events is not None):
            LogFiles(self.log_dir).makedirs(self.log_dir)
            _save_hparams_to_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)
            self._hparams_saved = True

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Write what is buffered and close the event files; a later write starts new ones."""
        if self._events is None and status != "success":
            return  # nothing was logged: leave no empty event file behind
        self._open_events()
        self.save()
        self._events.close()
        self._events = None
        if self._experiment is not None:
            self._experiment.close()
            self._experiment = None

    @rank_zero_only
    def drop_from(self, step: int) -> None:
        """Hide points at or after `step` in TensorBoard: a run resumed from a checkpoint at `step` logs them again.

        TensorBoard drops every earlier-read event with a step >= `step` when it reads a session-start marker at
        `step` (what tensorboardX's `purge_step` writes). The marker goes first into the next event file opened, or
        into the open one.
        """
        self._purge_step = self._continues_at = step
        if self._events is not None:
            self._write_purge_marker()

    def _route_url_scheme_through_fsspec(self) -> None:
        """Before tensorboardX's writer opens `log_dir`: register fsspec for its URL scheme, unless tensorboardX has
        a writer of its own for it (s3, gs) or `log_dir` is local."""
        from volt.checkpoint import is_remote

        if not is_remote(self.log_dir):
            return
        record_writer = import_isolated("tensorboardX.record_writer")
        scheme = self.log_dir.split(":", 1)[0]
        if scheme not in record_writer.REGISTERED_FACTORIES:
            record_writer.register_writer_factory(scheme, _FsspecRecordWriters())

    def _open_events(self) -> None:
        """Open the logger's event file if needed, then write a pending purge marker."""
        if self._events is not None:
            return
        self._events = _EventFile(self.log_dir)
        if self._purge_step is not None:
            self._write_purge_marker()

    def _write(self, step: Optional[int], **fields: Any) -> None:
        event_pb2 = import_isolated("tensorboardX.proto.event_pb2")

        self._open_events()
        event = event_pb2.Event(wall_time=time.time(), **fields)
        if step is not None:
            event.step = int(step)
        self._events.write(event)

    def _write_purge_marker(self) -> None:
        session_log = import_isolated("tensorboardX.proto.event_pb2").SessionLog

        step, self._purge_step = self._purge_step, None
        self._write(step, session_log=session_log(status=session_log.START))
        self._events.flush()

    def __getstate__(self) -> Dict[str, Any]:
        """Pickle without open writers (e.g. to start worker processes); they are reopened on first use."""
        state = self.__dict__.copy()
        state["_experiment"] = state["_events"] = None
        return state


def _to_float(key: str, value: Any) -> float:
    try:
        return float(value.item() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"TensorBoardLogger cannot log {key!r}={value!r}: log a number, a one-element tensor, or a dict of them."
        ) from err
