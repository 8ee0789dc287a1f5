"""Experiment loggers. TensorBoard's writer is imported only when a logger first writes."""
import importlib

from volt.loggers.logger import Logger, rank_zero_experiment

_LAZY = {
    "CSVLogger": "volt.loggers.csv_logs",
    "TensorBoardLogger": "volt.loggers.tensorboard",
}

__all__ = ["Logger", "rank_zero_experiment", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'volt.loggers' has no attribute {name!r}")
