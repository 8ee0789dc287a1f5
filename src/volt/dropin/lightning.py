"""What `import lightning` gives under `volt run`: `L.Trainer`, `L.LightningModule`, ... are volt's, and
`lightning.pytorch` / `lightning.fabric` are volt's stand-ins for them (`volt/dropin/pytorch.py`, `fabric.py`)."""
from volt import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from volt.dropin import fabric, not_provided_attribute, pytorch
from volt.trainer.checkpointing import LIGHTNING_COMPAT_VERSION as __version__

__path__: list = []  # a package: volt.dropin's finder answers for `lightning.pytorch`, `lightning.fabric`, ...

__all__ = ["Callback", "LightningDataModule", "LightningModule", "Trainer", "seed_everything"]


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(f"module 'lightning' has no attribute {name!r}")
    raise not_provided_attribute("lightning", name)
