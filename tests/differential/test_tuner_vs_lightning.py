"""Differential tests of the tuner: the same module code run by pytorch-lightning 2.6.6 and by volt, each with its own
`Tuner`. The learning-rate finder must try the same rates, record the same smoothed losses and suggest the same
rate; the batch-size search must find the same size for a module that runs out of memory past a batch size.

Lightning's lr_find stops at `max_epochs` (volt's runs its `num_training` steps regardless), so the runs here have
epochs to spare; and Lightning recognises only CUDA's out-of-memory error, so the module raises that one.
"""
import importlib

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pytestmark = [pytest.mark.lightning, pytest.mark.filterwarnings("ignore::UserWarning")]


def module_class(pl, limit=None):
    """A small regression MLP on `pl`'s LightningModule; with `limit`, batches above it run out of memory."""

    class Net(pl.LightningModule):
        def __init__(self, lr: float = 0.1, batch_size: int = 16):
            super().__init__()
            self.lr, self.batch_size = lr, batch_size
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))

        def training_step(self, batch, batch_idx):
            if limit is not None and len(batch[0]) > limit:
                raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

        def train_dataloader(self):
            generator = torch.Generator().manual_seed(0)
            x = torch.randn(256, 4, generator=generator)
            y = x.sum(1, keepdim=True) + 0.1 * torch.randn(256, 1, generator=generator)
            return DataLoader(TensorDataset(x, y), batch_size=self.batch_size, shuffle=True)

    return Net


def tune(name, tmp_path, search, limit=None, **options):
    """Seeded: `search(Tuner(trainer), model)` under framework `name`; returns (result, model)."""
    pl = importlib.import_module({"lightning": "pytorch_lightning", "volt": "volt"}[name])
    tuner_module = importlib.import_module(f"{pl.__name__}.tuner")
    pl.seed_everything(0, verbose=False)
    model = module_class(pl, limit)()
    trainer = pl.Trainer(max_epochs=20, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path / name,
                         **options)
    return search(tuner_module.Tuner(trainer), model), model


@pytest.mark.parametrize("options", [dict(num_training=60),  # diverges: both stop at the same step
                                     dict(num_training=40, max_lr=0.05, mode="linear", early_stop_threshold=None)])
def test_lr_find_same_rates_losses_and_suggestion(quiet_lightning, tmp_path, options):
    results = [tune(name, tmp_path, lambda tuner, model: tuner.lr_find(model, **options))
               for name in ("lightning", "volt")]
    (theirs, their_model), (ours, our_model) = results
    assert ours.results["lr"] == theirs.results["lr"]
    assert ours.results["loss"] == theirs.results["loss"]
    assert ours.suggestion() == theirs.suggestion() is not None
    assert our_model.lr == their_model.lr == ours.suggestion()  # update_attr=True by default


@pytest.mark.parametrize("mode, margin, init_val", [("power", 0.05, 2), ("binsearch", 0.05, 16)])
def test_scale_batch_size_same_result(quiet_lightning, tmp_path, mode, margin, init_val):
    def search(tuner, model):
        return tuner.scale_batch_size(model, mode=mode, margin=margin, init_val=init_val, steps_per_trial=1)

    (theirs, their_model), (ours, our_model) = [tune(name, tmp_path, search, limit=37)
                                                for name in ("lightning", "volt")]
    assert ours == theirs and our_model.batch_size == their_model.batch_size == ours


def test_scale_batch_size_starting_above_the_bound(quiet_lightning, tmp_path):
    """volt differs on purpose: Lightning's first trial runs the module's old batch size (16) instead of `init_val`
    (64), so it never sees 64 fail and returns it; volt's first trial runs 64, and its answer runs. (From a size at
    or above the dataset's length, Lightning's binsearch retries the failing size forever, so that is not run.)"""
    def search(tuner, model):
        return tuner.scale_batch_size(model, mode="power", init_val=64, steps_per_trial=1)

    (theirs, _), (ours, our_model) = [tune(name, tmp_path, search, limit=37) for name in ("lightning", "volt")]
    assert theirs == 64 and ours == our_model.batch_size == 32
