"""LightningDataModule's own behaviour (its use inside runs is covered by the trainer and checkpoint tests)."""
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import volt as pl


class Stream(IterableDataset):
    """A dataset without a length."""

    def __iter__(self):
        return iter(torch.zeros(3, 2))


def _data_module(package):
    """A data module on `package` (volt or Lightning): one loader for fit, two for validation, none for test."""
    class Data(package.LightningDataModule):
        def setup(self, stage):
            self.train = TensorDataset(torch.zeros(10, 2))
            self.val = [TensorDataset(torch.zeros(6, 2)), Stream()]

        def train_dataloader(self):
            return DataLoader(self.train, batch_size=2)

        def val_dataloader(self):
            return [DataLoader(dataset, batch_size=2) for dataset in self.val]

        def predict_dataloader(self):
            return DataLoader(Stream(), batch_size=2)

    return Data()


@pytest.mark.parametrize("stage", [None, "fit"])
def test_str_lists_dataloaders_and_sizes_as_lightning(stage, quiet_lightning):
    texts = []
    for package in (pl, quiet_lightning):
        data = _data_module(package)
        if stage:
            data.setup(stage)
        texts.append(str(data))
    assert texts[0] == texts[1]
    if stage:
        assert texts[0].splitlines() == ["{Train dataloader: size=10}",
                                         "{Validation dataloader: 1. size=6 ; 2. size=NA}",
                                         "{Test dataloader: None}", "{Predict dataloader: size=NA}"]
    else:
        assert texts[0].splitlines()[:2] == ["{Train dataloader: None}", "{Validation dataloader: None}"]


def test_from_datasets_loaders_as_lightning(quiet_lightning):
    """The loaders `from_datasets` builds: shuffled for training only, pinned memory, the given batch size."""
    dataset = TensorDataset(torch.zeros(8, 2))
    described = []
    for package in (pl, quiet_lightning):
        data = package.LightningDataModule.from_datasets(dataset, val_dataset=[dataset, Stream()], batch_size=4)
        loaders = [data.train_dataloader(), *data.val_dataloader()]
        described.append([(type(loader.sampler).__name__, loader.pin_memory, loader.batch_size) for loader in loaders])
    assert described[0] == described[1]
    assert described[0][0] == ("RandomSampler", True, 4)
