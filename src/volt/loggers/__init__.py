"""Experiment loggers. TensorBoard's writer and the trackers' client libraries (mlflow, wandb, comet_ml) are
imported only when a logger first uses them."""
import importlib

from volt.loggers.logger import Logger, rank_zero_experiment

_LAZY = {
    "CometLogger": "volt.loggers.comet",
    "CSVLogger": "volt.loggers.csv_logs",
    "MLFlowLogger": "volt.loggers.mlflow",
    "NeptuneLogger": "volt.loggers.neptune",
    "TensorBoardLogger": "volt.loggers.tensorboard",
    "WandbLogger": "volt.loggers.wandb",
}

__all__ = ["Logger", "rank_zero_experiment", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'volt.loggers' has no attribute {name!r}")
