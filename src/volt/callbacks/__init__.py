"""Built-in callbacks. Each loads on first use, so `import volt` stays cheap."""
import importlib

from volt.callbacks.callback import Callback

_LAZY = {
    "ModelCheckpoint": "volt.callbacks.model_checkpoint",
    "EarlyStopping": "volt.callbacks.early_stopping",
    "ProgressBar": "volt.callbacks.progress",
    "TQDMProgressBar": "volt.callbacks.progress",
    "RichProgressBar": "volt.callbacks.progress",
    "ModelSummary": "volt.callbacks.model_summary",
    "RichModelSummary": "volt.callbacks.model_summary",
    "LearningRateMonitor": "volt.callbacks.lr_monitor",
    "Timer": "volt.callbacks.timer",
}

__all__ = ["Callback", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'volt.callbacks' has no attribute {name!r}")
