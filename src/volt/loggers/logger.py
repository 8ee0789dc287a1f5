"""The Logger base class, as in Lightning: loggers receive plain floats on rank 0 only."""
import functools
from abc import ABC, abstractmethod
from typing import Any, Dict, Optional, Union


def rank_zero_experiment(fn):
    """Decorator for a logger's `experiment` property: other ranks get a do-nothing object."""

    @functools.wraps(fn)
    def experiment(self):
        from volt.utilities.rank_zero import rank_zero_only

        if rank_zero_only.rank > 0:
            return _DummyExperiment()
        return fn(self)

    return experiment


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) or (hasattr(value, "numel") and value.numel() == 1)


class _DummyExperiment:
    def nop(self, *args, **kwargs):
        return None

    def __getattr__(self, _):
        return self.nop

    def __getitem__(self, idx):
        return self


class Logger(ABC):
    """Base class for experiment loggers."""

    @property
    @abstractmethod
    def name(self) -> Optional[str]: ...

    @property
    @abstractmethod
    def version(self) -> Optional[Union[int, str]]: ...

    @property
    def root_dir(self) -> Optional[str]:
        return None

    @property
    def log_dir(self) -> Optional[str]:
        return None

    @property
    def save_dir(self) -> Optional[str]:
        return None

    @property
    def group_separator(self) -> str:
        return "/"

    @abstractmethod
    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None: ...

    @abstractmethod
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None: ...

    def log_graph(self, model, input_array=None) -> None:
        pass

    def save(self) -> None:
        pass

    def finalize(self, status: str) -> None:
        self.save()

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        pass

    # ---- exact resume. A checkpoint records the last step this logger wrote and the rows written at it; a run
    # resumed from that checkpoint drops everything from that step on (`_truncate_after`, where a logger has it)
    # and writes those rows again, so each step shows once and the points logged after the checkpoint by the
    # interrupted run are replaced by the resumed run's.

    def _remember_logged(self, metrics: Dict[str, Any], step: Optional[int]) -> None:
        """Called by `log_metrics`: keep the rows of the latest step (values as given, converted when saved)."""
        if step is None:
            return
        if step != getattr(self, "_last_logged_step", None):
            self._last_logged_step, self._rows_at_last_step = step, []
        self._rows_at_last_step.append(dict(metrics))

    def _resume_marker(self) -> Optional[Dict[str, Any]]:
        """What a checkpoint stores for this logger: the last step written and its rows, as plain numbers."""
        step = getattr(self, "_last_logged_step", None)
        if step is None:
            return None
        rows = [{key: value.item() if hasattr(value, "item") else value for key, value in row.items()
                 if _is_number(value)} for row in self._rows_at_last_step]
        return {"step": int(step), "rows": rows}

    def _resume_from(self, marker: Dict[str, Any]) -> None:
        """Continue the log from a checkpoint's marker: cut it at the marker's step, then rewrite that step's rows."""
        truncate = getattr(self, "_truncate_after", None)
        if truncate is None:  # a logger that cannot rewrite its history keeps the interrupted run's points
            return
        truncate(marker["step"])
        for row in marker["rows"]:
            self.log_metrics(row, step=marker["step"])
        self.save()
