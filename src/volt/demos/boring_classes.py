"""The smallest useful models and datasets: random inputs, a linear layer, an arbitrary loss. Subclass them to
reproduce a problem in a few lines (they behave as Lightning's classes of the same names, random draws included)."""
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from volt.datamodule import LightningDataModule
from volt.module import LightningModule
from volt.utilities.apply_func import apply_to_collection


class RandomDataset(Dataset):
    """`length` random vectors of `size` (drawn once, from the global torch RNG)."""

    def __init__(self, size: int, length: int) -> None:
        self.len = length
        self.data = torch.randn(length, size)

    def __getitem__(self, index: int) -> Tensor:
        return self.data[index]

    def __len__(self) -> int:
        return self.len


class RandomDictDataset(RandomDataset):
    """Like RandomDataset, but each item is a dict: {"a": x, "b": x + 2}."""

    def __getitem__(self, index: int) -> Dict[str, Tensor]:
        vector = self.data[index]
        return {"a": vector, "b": vector + 2}


class RandomIterableDataset(IterableDataset):
    """`count` random vectors of `size`, drawn as they are iterated; no length."""

    def __init__(self, size: int, count: int) -> None:
        self.count = count
        self.size = size

    def __iter__(self) -> Iterator[Tensor]:
        for _ in range(self.count):
            yield torch.randn(self.size)


class RandomIterableDatasetWithLen(RandomIterableDataset):
    """RandomIterableDataset that reports its length."""

    def __len__(self) -> int:
        return self.count


class BoringModel(LightningModule):
    """A linear layer (32 -> 2) trained with SGD (lr 0.1, StepLR) towards ones on 64 random vectors per stage.
    Training steps return {"loss": ...}, validation steps {"x": ...}, test steps {"y": ...}."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(32, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)

    def loss(self, preds: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Mean squared distance to `labels`, or to ones: any loss that moves the weights will do."""
        return F.mse_loss(preds, torch.ones_like(preds) if labels is None else labels)

    def step(self, batch: Any) -> Tensor:
        return self.loss(self(batch))

    def training_step(self, batch: Any, batch_idx: int) -> Dict[str, Tensor]:
        return {"loss": self.step(batch)}

    def validation_step(self, batch: Any, batch_idx: int) -> Dict[str, Tensor]:
        return {"x": self.step(batch)}

    def test_step(self, batch: Any, batch_idx: int) -> Dict[str, Tensor]:
        return {"y": self.step(batch)}

    def configure_optimizers(self) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RandomDataset(32, 64))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(RandomDataset(32, 64))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(RandomDataset(32, 64))

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(RandomDataset(32, 64))


class ManualOptimBoringModel(BoringModel):
    """BoringModel with manual optimization: the step zeroes, back-propagates and steps itself."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        optimizer = self.optimizers()
        loss = self.step(batch)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss


class _StageLoaders(LightningDataModule):
    """One DataLoader per stage over the `random_<stage>` dataset that `setup` makes."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.random_train)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.random_val)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.random_test)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.random_predict)


class BoringDataModule(_StageLoaders):
    """256 random vectors of size 32, split in four blocks of 64 for train, validation, test and predict."""

    def __init__(self) -> None:
        super().__init__()
        self.random_full = RandomDataset(32, 64 * 4)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.random_train = Subset(self.random_full, indices=range(64))
        if stage in ("fit", "validate"):
            self.random_val = Subset(self.random_full, indices=range(64, 128))
        if stage == "test":
            self.random_test = Subset(self.random_full, indices=range(128, 192))
        if stage == "predict":
            self.random_predict = Subset(self.random_full, indices=range(192, 256))


class BoringDataModuleNoLen(_StageLoaders):
    """Iterable datasets without a length: 512 training, 128 validation, 256 test and 64 predict vectors."""

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.random_train = RandomIterableDataset(32, 512)
        if stage in ("fit", "validate"):
            self.random_val = RandomIterableDataset(32, 128)
        if stage == "test":
            self.random_test = RandomIterableDataset(32, 256)
        if stage == "predict":
            self.random_predict = RandomIterableDataset(32, 64)


class IterableBoringDataModule(LightningDataModule):
    """Two loaders per stage (a map-style and an iterable dataset of size-4 vectors): 16, 32, 64 and 128 items."""

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.train_datasets = [RandomDataset(4, 16), RandomIterableDataset(4, 16)]
        if stage in ("fit", "validate"):
            self.val_datasets = [RandomDataset(4, 32), RandomIterableDataset(4, 32)]
        if stage == "test":
            self.test_datasets = [RandomDataset(4, 64), RandomIterableDataset(4, 64)]
        if stage == "predict":
            self.predict_datasets = [RandomDataset(4, 128), RandomIterableDataset(4, 128)]

    def train_dataloader(self) -> List[DataLoader]:
        return apply_to_collection(self.train_datasets, Dataset, DataLoader)

    def val_dataloader(self) -> List[DataLoader]:
        return apply_to_collection(self.val_datasets, Dataset, DataLoader)

    def test_dataloader(self) -> List[DataLoader]:
        return apply_to_collection(self.test_datasets, Dataset, DataLoader)

    def predict_dataloader(self) -> List[DataLoader]:
        return apply_to_collection(self.predict_datasets, Dataset, DataLoader)


class DemoModel(LightningModule):
    """A linear layer (32 -> out_dim) with ReLU, trained with Adam to minimise the sum of its outputs."""

    def __init__(self, out_dim: int = 10, learning_rate: float = 0.02) -> None:
        super().__init__()
        self.l1 = nn.Linear(32, out_dim)
        self.learning_rate = learning_rate

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.l1(x.view(x.size(0), -1)))

    def training_step(self, batch: Any, batch_nb: int) -> Tensor:
        return self(batch).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


class Net(nn.Module):
    """A small convolutional classifier for 1x28x28 images (MNIST's), returning log-probabilities of 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)
