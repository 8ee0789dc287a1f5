"""volt: PyTorch Lightning's API on a small, fast, crash-safe core. Use it as `import volt as pl`."""
import importlib
import logging

# Like Lightning, show volt's info messages (model summary, "fit stopped: ...") unless the user configured logging.
_logger = logging.getLogger("volt")
if not _logger.handlers:
    _logger.setLevel(logging.INFO)
    _logger.addHandler(logging.StreamHandler())
    _logger.propagate = False

from volt.callbacks.callback import Callback
from volt.datamodule import LightningDataModule
from volt.module import LightningModule
from volt.trainer.trainer import Trainer
from volt.utilities.seed import seed_everything

from volt.utilities.warnings import read_environment_switch

read_environment_switch()

__version__ = "0.1.0"

_SUBMODULES = ("callbacks", "loggers", "utilities", "cli", "strategies", "checkpoint", "profilers", "tuner")

__all__ = ["Callback", "LightningDataModule", "LightningModule", "Trainer", "seed_everything", *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"volt.{name}")
    raise AttributeError(f"module 'volt' has no attribute {name!r}")
