"""The document volt was started from (an overview of PyTorch Lightning) runs on volt, block by block, as a user
would run it after replacing `pytorch_lightning` with `volt`.

Its data comes from torchvision's MNIST, which needs a download; the test injects a stand-in `torchvision` whose
MNIST has the same interface and shapes (28x28 images, labels 0-9) but a few random images. Blocks that ask for
GPUs (`gpus=1`, `gpus=2`) must fail with the clear no-GPU error on a machine without them, then run without `gpus`.
The blocks use two names they never define (`train_dataloader`, `torch`); the test provides them.
"""
import os
import re
import sys
import types

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

SOURCE = "/work/shared/reference/seed-lightning-overview.md"

# The document's code blocks, verbatim.
BLOCKS = [
    """\
import pytorch_lightning as pl
import torch.nn as nn
import torch.optim as optim

class LitModel(pl.LightningModule):
    def __init__(self):
        super(LitModel, self).__init__()
        self.layer = nn.Linear(28 * 28, 10)  # Example for MNIST

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.forward(x)
        loss = nn.functional.cross_entropy(logits, y)
        return loss

    def configure_optimizers(self):
        return optim.Adam(self.parameters(), lr=0.001)
""",
    """\
from pytorch_lightning import Trainer

# Initialize the model and trainer
model = LitModel()
trainer = Trainer(max_epochs=5, gpus=1)

# Start training
trainer.fit(model, train_dataloader)
""",
    """\
from pytorch_lightning import LightningDataModule
from torchvision import transforms
from torchvision.datasets import MNIST
from torch.utils.data import DataLoader

class MNISTDataModule(LightningDataModule):
    def __init__(self, batch_size=64):
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage=None):
        transform = transforms.Compose([transforms.ToTensor()])
        self.train_dataset = MNIST('.', train=True, download=True, transform=transform)
        self.val_dataset = MNIST('.', train=False, download=True, transform=transform)

    def train_dataloader(self):
        return DataLoader(self.train_dataset, batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(self.val_dataset, batch_size=self.batch_size)
""",
    """\
class LitModel(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(28 * 28, 128),
            nn.ReLU(),
            nn.Linear(128, 10)
        )

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x.view(x.size(0), -1))
        loss = nn.functional.cross_entropy(logits, y)
        self.log('train_loss', loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x.view(x.size(0), -1))
        val_loss = nn.functional.cross_entropy(logits, y)
        self.log('val_loss', val_loss)

    def configure_optimizers(self):
        return optim.Adam(self.parameters(), lr=0.001)
""",
    """\
class MNISTDataModule(LightningDataModule):
    def __init__(self, batch_size=64):
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage=None):
        transform = transforms.Compose([transforms.ToTensor()])
        self.train_dataset = MNIST('.', train=True, download=True, transform=transform)
        self.val_dataset = MNIST('.', train=False, download=True, transform=transform)

    def train_dataloader(self):
        return DataLoader(self.train_dataset, batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(self.val_dataset, batch_size=self.batch_size)
""",
    """\
# Initialize the model and data module
model = LitModel()
data_module = MNISTDataModule(batch_size=32)

# Initialize Trainer and start training
trainer = Trainer(max_epochs=10, gpus=1)
trainer.fit(model, data_module)
""",
    """\
from pytorch_lightning.callbacks import ModelCheckpoint, EarlyStopping

checkpoint_callback = ModelCheckpoint(
    monitor="val_loss",
    dirpath="checkpoints/",
    filename="best-checkpoint",
    save_top_k=1,
    mode="min"
)

early_stopping_callback = EarlyStopping(
    monitor="val_loss",
    patience=3,
    mode="min"
)

trainer = Trainer(
    max_epochs=20,
    callbacks=[checkpoint_callback, early_stopping_callback],
    gpus=1
)
""",
    """\
trainer = Trainer(logger=True, log_every_n_steps=10)
""",
    """\
trainer = Trainer(max_epochs=10, gpus=2)  # Train on 2 GPUs
""",
    """\
trainer = Trainer(max_epochs=10, accumulate_grad_batches=4)  # Accumulate gradients for every 4 batches
""",
    """\
class CustomModel(pl.LightningModule):
    def training_epoch_end(self, outputs):
        avg_loss = torch.stack([x['loss'] for x in outputs]).mean()
        self.log('avg_train_loss', avg_loss)
""",
    """\
trainer = Trainer(precision=16)  # Enable mixed precision
""",
]


class FakeMNIST(Dataset):
    """torchvision's MNIST interface with a few random 28x28 uint8 images: nothing to download."""

    def __init__(self, root, train=True, download=False, transform=None):
        generator = torch.Generator().manual_seed(0 if train else 1)
        size = 96 if train else 32
        self.data = torch.randint(0, 256, (size, 28, 28), dtype=torch.uint8, generator=generator)
        self.targets = torch.randint(0, 10, (size,), generator=generator)
        self.transform = transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        image = self.data[index]
        return (self.transform(image) if self.transform else image), int(self.targets[index])


class ToTensor:
    def __call__(self, image):
        return image[None].float() / 255  # 1x28x28 in [0, 1], as torchvision's ToTensor makes of an MNIST image


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image):
        for transform in self.transforms:
            image = transform(image)
        return image


@pytest.fixture
def fake_torchvision(monkeypatch):
    torchvision = types.ModuleType("torchvision")
    torchvision.transforms = types.ModuleType("torchvision.transforms")
    torchvision.transforms.Compose, torchvision.transforms.ToTensor = Compose, ToTensor
    torchvision.datasets = types.ModuleType("torchvision.datasets")
    torchvision.datasets.MNIST = FakeMNIST
    for name, module in [("torchvision", torchvision), ("torchvision.transforms", torchvision.transforms),
                         ("torchvision.datasets", torchvision.datasets)]:
        monkeypatch.setitem(sys.modules, name, module)


def run_block(index, namespace):
    """Run block `index` with `volt` in place of `pytorch_lightning`. Asking for more GPUs than the machine has
    must raise the clear error; the block then runs again without `gpus`."""
    code = BLOCKS[index].replace("pytorch_lightning", "volt")
    asked = re.search(r"gpus=(\d+)", code)
    if asked and torch.cuda.device_count() < int(asked.group(1)):
        message = "asks for a CUDA GPU, but none is available" if not torch.cuda.is_available() else "devices"
        with pytest.raises((RuntimeError, ValueError), match=message):
            exec(code, namespace)
        code = re.sub(r",\s*gpus=\d+", "", code)
    exec(code, namespace)
    return namespace


def test_every_block_runs_on_volt(fake_torchvision, tmp_path, monkeypatch):
    import volt

    monkeypatch.chdir(tmp_path)  # the blocks write lightning_logs/ and checkpoints/ in the working directory
    images = FakeMNIST(".").data.view(-1, 28 * 28).float() / 255
    ns = {"torch": torch, "train_dataloader": DataLoader(TensorDataset(images, FakeMNIST(".").targets), batch_size=32)}

    run_block(0, ns)  # LitModel on flat 28*28 inputs
    run_block(1, ns)  # Trainer(max_epochs=5).fit(model, train_dataloader)
    assert isinstance(ns["model"], volt.LightningModule) and ns["trainer"].global_step == 5 * 3

    for index in (2, 3, 4):  # MNISTDataModule, LitModel (flattening, logging), MNISTDataModule again
        run_block(index, ns)
    run_block(5, ns)  # Trainer(max_epochs=10).fit(model, data_module)
    trainer = ns["trainer"]
    assert trainer.global_step == 10 * 3 and {"train_loss", "val_loss"} <= set(trainer.callback_metrics)
    assert os.path.isdir(os.path.join(trainer.log_dir, "checkpoints"))

    run_block(6, ns)  # ModelCheckpoint + EarlyStopping; the block only builds the Trainer: fit with it too
    trainer = ns["trainer"]
    trainer.fit(ns["LitModel"](), ns["MNISTDataModule"](batch_size=32))
    assert ns["checkpoint_callback"].best_model_path == os.path.realpath("checkpoints/best-checkpoint.ckpt")
    assert os.path.isfile(ns["checkpoint_callback"].best_model_path)
    assert trainer.early_stopping_callback is ns["early_stopping_callback"]

    assert run_block(7, ns)["trainer"].log_every_n_steps == 10  # logger=True: the default TensorBoard logger
    assert type(ns["trainer"].logger).__name__ == "TensorBoardLogger"
    run_block(8, ns)  # gpus=2
    assert run_block(9, ns)["trainer"].accumulate_grad_batches == 4

    run_block(10, ns)  # CustomModel.training_epoch_end(outputs): combine it with LitModel to train it

    class Combined(ns["CustomModel"], ns["LitModel"]):
        pass

    trainer = volt.Trainer(max_epochs=1, enable_progress_bar=False)
    trainer.fit(Combined(), ns["MNISTDataModule"](batch_size=32))
    assert "avg_train_loss" in trainer.callback_metrics

    with pytest.warns(UserWarning, match="precision=16 is supported for backward compatibility; it means '16-mixed'"):
        run_block(11, ns)
    assert ns["trainer"].precision == "16-mixed"


@pytest.mark.skipif(not os.path.exists(SOURCE), reason="the shared reference document is not on this machine")
def test_blocks_are_the_documents():
    with open(SOURCE) as f:
        assert re.findall(r"```python\n(.*?)```", f.read(), re.S) == BLOCKS
