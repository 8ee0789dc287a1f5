"""What `import lightning.pytorch` and `import pytorch_lightning` give under `volt run`: volt's top-level API with
Lightning's version number. Their submodules (`lightning.pytorch.callbacks`, ...) are volt's own modules."""
import importlib

import volt
from volt import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from volt.dropin import not_provided_attribute
from volt.trainer.checkpointing import LIGHTNING_COMPAT_VERSION as __version__
from volt.utilities.warnings import read_environment_switch

read_environment_switch()  # again on `importlib.reload(lightning.pytorch)`, as Lightning reads it

__path__: list = []  # a package: volt.dropin's finder answers for its submodules

# Lightning's subpackages, reachable as attributes once `lightning.pytorch` is imported
_SUBPACKAGES = ("accelerators", "callbacks", "cli", "core", "demos", "loggers", "loops", "overrides", "plugins",
                "profilers", "serve", "strategies", "trainer", "tuner", "utilities")

__all__ = ["Callback", "LightningDataModule", "LightningModule", "Trainer", "seed_everything"]


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"pytorch_lightning.{name}")
    if name in ("cli_lightning_logo", "LIGHTNING_LOGO"):
        return getattr(importlib.import_module("volt.cli"), name)
    if name in volt.__all__:
        return getattr(volt, name)
    if name.startswith("__"):
        raise AttributeError(f"module 'lightning.pytorch' has no attribute {name!r}")
    raise not_provided_attribute("lightning.pytorch", name)
