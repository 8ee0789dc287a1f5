"""Classify 8x8 handwritten digits: the example `volt fit` trains, and a template for your own code.

The data is the UCI ML hand-written digits set (1,797 images, 10 classes), bundled with volt so the example runs
offline in a few seconds on a CPU. Everything below is ordinary Lightning-style code: import the two base classes from
`lightning.pytorch` instead of `volt` and it runs there too.

    volt fit                                   # train with the defaults
    volt fit --model.hidden_size 256 --trainer.max_epochs 30
    volt test --ckpt_path <path printed by fit>
"""
from importlib import resources

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from volt import LightningDataModule, LightningModule

NUM_CLASSES = 10
IMAGE_PIXELS = 8 * 8
MAX_PIXEL_VALUE = 16.0


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled images (uint8, 0..16, shape (1797, 8, 8)) and labels (uint8, shape (1797,))."""
    with resources.files("volt.examples").joinpath("data", "digits.npz").open("rb") as file:
        arrays = np.load(file)
        return torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"])


class DigitsDataModule(LightningDataModule):
    """Splits the digits into train, validation and test sets, the same way for a given `seed`.

    Args:
        batch_size: images per batch.
        val_fraction: share of all images held out for validation.
        test_fraction: share of all images held out for testing (and prediction).
        seed: seeds the split only; training randomness comes from `seed_everything`.
        num_workers: DataLoader worker processes; 0 loads in the main process, fastest for data this small.
    """

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 42,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
            raise ValueError(
                f"val_fraction={val_fraction} and test_fraction={test_fraction} must be positive and sum to less"
                " than 1, so that images are left to train on."
            )
        self.save_hyperparameters()
        self.train_set = self.val_set = self.test_set = None

    def setup(self, stage: str) -> None:
        if self.train_set is not None:  # setup runs once per stage; the split is the same for all of them
            return
        images, labels = load_digits()
        # Scale pixels to [0, 1] and flatten each image into a vector for the MLP.
        images = images.reshape(len(images), IMAGE_PIXELS).float() / MAX_PIXEL_VALUE
        labels = labels.long()

        generator = torch.Generator().manual_seed(self.hparams.seed)
        order = torch.randperm(len(images), generator=generator)
        num_val = round(len(images) * self.hparams.val_fraction)
        num_test = round(len(images) * self.hparams.test_fraction)
        val_idx, test_idx, train_idx = order.split([num_val, num_test, len(images) - num_val - num_test])

        # Standardise with statistics of the training images only, so nothing leaks from validation or test.
        mean, std = images[train_idx].mean(), images[train_idx].std()
        images = (images - mean) / std

        self.train_set = TensorDataset(images[train_idx], labels[train_idx])
        self.val_set = TensorDataset(images[val_idx], labels[val_idx])
        self.test_set = TensorDataset(images[test_idx], labels[test_idx])

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        """The test images without their labels: predictions for data whose answers are unknown."""
        images, _ = self.test_set.tensors
        return self._loader(TensorDataset(images))

    def _loader(self, dataset: TensorDataset, shuffle: bool = False) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
        )


class DigitsClassifier(LightningModule):
    """A small MLP: two hidden layers with ReLU and dropout, trained with Adam.

    Args:
        hidden_size: width of both hidden layers.
        lr: Adam's learning rate; halved when the validation loss stops improving.
        dropout: dropout probability after each hidden layer.
    """

    def __init__(self, hidden_size: int = 256, lr: float = 3e-3, dropout: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(IMAGE_PIXELS, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, NUM_CLASSES),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of flattened images."""
        return self.net(images)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = F.cross_entropy(self(images), labels)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, acc = self._evaluate(batch)
        self.log("val_loss", loss)
        self.log("val_acc", acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        _, acc = self._evaluate(batch)
        self.log("test_acc", acc)

    def predict_step(self, batch, batch_idx):
        (images,) = batch
        return self(images).argmax(dim=1)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}

    def _evaluate(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and accuracy of one labelled batch; the epoch values are their batch-size-weighted means."""
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(dim=1) == labels).float().mean()
        return loss, acc
