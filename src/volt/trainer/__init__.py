"""The Trainer and the loops it runs. `from volt.trainer import Trainer` (Lightning's path) works too."""
import importlib

_LAZY = {"Trainer": "volt.trainer.trainer", "seed_everything": "volt.utilities.seed"}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'volt.trainer' has no attribute {name!r}")
