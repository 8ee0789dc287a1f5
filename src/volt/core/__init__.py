"""Lightning's `core` import path: `from volt.core import LightningModule, LightningDataModule`."""
from volt.datamodule import LightningDataModule
from volt.module import LightningModule

__all__ = ["LightningDataModule", "LightningModule"]
