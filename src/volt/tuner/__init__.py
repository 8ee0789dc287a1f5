"""Learning-rate and batch-size search (Lightning's `lightning.pytorch.tuner`): `Tuner(trainer).lr_find(model)`,
`Tuner(trainer).scale_batch_size(model)`; the callbacks are `volt.callbacks.LearningRateFinder` and
`BatchSizeFinder`. `Tuner` loads on first use: the callbacks import the searches in this package, and the Tuner
imports the callbacks."""
import importlib

__all__ = ["Tuner"]


def __getattr__(name):
    if name == "Tuner":
        return importlib.import_module("volt.tuner.tuning").Tuner
    raise AttributeError(f"module 'volt.tuner' has no attribute {name!r}")
