"""The Logger base class, as in Lightning (loggers receive plain floats on rank 0 only), with volt's resume pair."""
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


class _DummyExperiment:
    def nop(self, *args, **kwargs):
        return None

    def __getattr__(self, _):
        return self.nop

    def __getitem__(self, idx):
        return self

    def __setitem__(self, key, value):  # `experiment["key"] = value` (a Neptune-style call) does nothing either
        pass


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

    # ---- resume (volt): a fit resumed from a checkpoint continues each logger's log
    def state_dict(self) -> Dict[str, Any]:
        """Where this logger's log stands, as plain data. The Trainer keeps it in every checkpoint it writes (right
        after `save()`); a fit resumed from that checkpoint hands it to `load_state_dict` before logging anything
        new. Default: nothing to keep."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue the log from a checkpoint's `state_dict()`: the same run, and each step shown once (drop what the
        interrupted run logged after the checkpoint). Default: nothing (those later points stay)."""


DummyExperiment = _DummyExperiment


class DummyLogger(Logger):
    """A logger that records nothing, and accepts any call: `self.logger.experiment.add_image(...)` and
    `self.logger.log_table(...)` in user code run as no-ops where logging is switched off."""

    def __init__(self) -> None:
        self._experiment = _DummyExperiment()

    @property
    def experiment(self) -> _DummyExperiment:
        return self._experiment

    def log_metrics(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    def __getitem__(self, idx: int) -> "DummyLogger":
        return self

    def __getattr__(self, name: str):
        if name.startswith("_"):  # copy, pickle and friends must see the real protocol, not a no-op
            raise AttributeError(name)
        return self._experiment.nop
