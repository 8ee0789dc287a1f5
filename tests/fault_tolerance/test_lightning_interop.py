"""Checkpoints across frameworks: pytorch-lightning 2.6.6 (test-only dependency) and volt.

The differential tests (tests/differential) compare whole resumed runs; these check the files themselves, with
hyperparameters of the kinds that break `weights_only` loading (a path, a tuple, nested dicts).
"""
import pathlib

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import volt

pl = pytest.importorskip("pytorch_lightning")

pytestmark = [pytest.mark.lightning, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

HPARAMS = dict(lr=0.1, dims=(4, 3), data_dir=pathlib.Path("/data/run"), nested={"a": {"b": [1, 2]}})


def _model_class(framework):
    class Net(framework.LightningModule):
        def __init__(self, lr, dims, data_dir, nested):
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(*dims)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)

    return Net


def _loader():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(16, 4, generator=g), torch.randn(16, 3, generator=g)), batch_size=4)


def _fit(framework, root, **kwargs):
    trainer = framework.Trainer(default_root_dir=root, max_epochs=1, logger=False, enable_progress_bar=False,
                                enable_model_summary=False, **kwargs)
    model = _model_class(framework)(**HPARAMS)
    trainer.fit(model, _loader())
    return trainer, model


def test_lightning_checkpoint_loads_and_resumes_in_volt(tmp_path):
    lightning, _ = _fit(pl, tmp_path / "pl")
    path = lightning.checkpoint_callback.best_model_path

    restored = _model_class(volt).load_from_checkpoint(path)  # safe load: Lightning pickled the Path as is
    assert dict(restored.hparams) == HPARAMS
    lightning_weights = torch.load(path, weights_only=False)["state_dict"]
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in lightning_weights.items())

    trainer = volt.Trainer(default_root_dir=tmp_path / "volt", max_epochs=2, logger=False, enable_progress_bar=False,
                           enable_model_summary=False)
    trainer.fit(_model_class(volt)(**HPARAMS), _loader(), ckpt_path=path)
    assert trainer.global_step == 8 and trainer.current_epoch == 2  # continued from the end of epoch 0


def test_volt_checkpoint_loads_in_lightning_for_weights_and_plain_hparams(tmp_path):
    trainer, model = _fit(volt, tmp_path)
    path = trainer.checkpoint_callback.best_model_path
    torch.load(path, weights_only=True)  # plain data

    class NoPathNet(_model_class(pl)):
        """The path comes back in volt's tagged form, which Lightning does not decode: pass it again."""

    restored = NoPathNet.load_from_checkpoint(path, data_dir=HPARAMS["data_dir"])
    assert dict(restored.hparams) == HPARAMS
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in model.state_dict().items())


def _resume_model_class(framework, manual=False):
    """Records every training batch it runs as (epoch, batch_idx, global_step)."""

    class Resumed(framework.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 3)
            self.automatic_optimization = not manual
            self.ran = []

        def training_step(self, batch, batch_idx):
            self.ran.append((self.current_epoch, batch_idx, self.global_step))
            loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
            if manual:
                optimizer = self.optimizers()
                optimizer.zero_grad()
                self.manual_backward(loss)
                optimizer.step()
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Resumed


@pytest.mark.parametrize("case, checkpoint_kwargs, validate, manual", [
    ("epoch end after validation", {}, True, False),
    ("epoch end without validation", {}, False, False),
    ("inside the epoch", dict(every_n_train_steps=2, save_top_k=-1), True, False),
    ("last batch, before the epoch end", dict(every_n_train_steps=4, save_top_k=-1), False, False),
    ("manual optimization", {}, True, True),
])
def test_lightning_resumes_a_volt_checkpoint_where_it_resumes_its_own(case, checkpoint_kwargs, validate, manual,
                                                                      tmp_path):
    """volt writes Lightning's `loops` progress counters beside its own cursor, so Lightning 2.6.6 continues a volt
    checkpoint at the epoch, batch and step it continues its own checkpoint from the same point (before, it silently
    restarted at epoch 0)."""
    resumed = {}
    for name, writer in (("volt", volt), ("pl", pl)):
        callback = writer.callbacks.ModelCheckpoint(dirpath=tmp_path / name, filename="{epoch}-{step}",
                                                    **checkpoint_kwargs)
        trainer = writer.Trainer(default_root_dir=tmp_path / name, max_epochs=1, logger=False,
                                 enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
                                 num_sanity_val_steps=0)
        trainer.fit(_resume_model_class(writer, manual)(), _loader(), _loader() if validate else None)
        path = sorted((tmp_path / name).glob("*.ckpt"))[0]  # the first one written
        lightning = pl.Trainer(default_root_dir=tmp_path / f"resume-{name}", max_epochs=3, logger=False,
                               enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                               num_sanity_val_steps=0)
        model = _resume_model_class(pl, manual)()
        lightning.fit(model, _loader(), _loader() if validate else None, ckpt_path=path)
        resumed[name] = (path.name, model.ran, lightning.global_step, lightning.current_epoch)
    assert resumed["volt"] == resumed["pl"]
    assert resumed["volt"][1], case  # it trained after the resume
