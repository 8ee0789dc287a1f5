"""Small models, data and an in-memory logger shared by the core API tests.

Everything here is tiny (a 4-feature linear model, a few batches of 2) so that a whole `fit` takes milliseconds.
"""
from argparse import Namespace

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import volt
from volt.loggers import Logger


def dataset(n: int = 8, dim: int = 4, seed: int = 0) -> TensorDataset:
    """`n` samples of (x: `dim` features, y: one target), the same for a given seed."""
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, dim, generator=generator), torch.randn(n, 1, generator=generator))


def loader(n: int = 8, dim: int = 4, batch_size: int = 2, seed: int = 0, **kwargs) -> DataLoader:
    return DataLoader(dataset(n, dim, seed), batch_size=batch_size, **kwargs)


class BoringModel(volt.LightningModule):
    """Linear regression on `dataset()`; logs train_loss, val_loss and test_loss with the default options."""

    def __init__(self, dim: int = 4, lr: float = 0.1):
        super().__init__()
        self.layer = torch.nn.Linear(dim, 1)
        self.lr = lr

    def forward(self, x):
        return self.layer(x)

    def loss(self, batch):
        x, y = batch
        return F.mse_loss(self(x), y)

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self.loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        return loader(seed=0)

    def val_dataloader(self):
        return loader(seed=1)

    def test_dataloader(self):
        return loader(seed=2)

    def predict_dataloader(self):
        return loader(seed=3)


def trainer(tmp_path, **kwargs) -> volt.Trainer:
    """A Trainer that writes nothing and prints nothing unless `kwargs` ask for it."""
    options = dict(default_root_dir=tmp_path, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, max_epochs=1)
    options.update(kwargs)
    return volt.Trainer(**options)


def memory_logger_class(base: type) -> type:
    """A Logger subclass of `base` (volt's or Lightning's Logger) that keeps every call in lists."""

    class MemoryLogger(base):
        def __init__(self):
            super().__init__()
            self.metrics = []  # (step, {name: float}) per log_metrics call
            self.hparams = {}
            self.finalized = []

        @property
        def name(self):
            return "memory"

        @property
        def version(self):
            return 0

        def log_metrics(self, metrics, step=None):
            self.metrics.append((step, dict(metrics)))

        def log_hyperparams(self, params, *args, **kwargs):
            self.hparams.update(vars(params) if isinstance(params, Namespace) else dict(params))

        def finalize(self, status):
            self.finalized.append(status)

    return MemoryLogger


MemoryLogger = memory_logger_class(Logger)


def boring_model_class(pl) -> type:
    """A linear regression module on `pl` (volt, or Lightning for the oracle) that trains on `loader()`."""

    class Boring(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return F.mse_loss(self.layer(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return loader()

    return Boring
