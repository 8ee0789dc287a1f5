"""The step signatures Lightning accepts: `training_step(self, batch)` without `batch_idx`, and steps taking
`dataloader_iter` (the step fetches its own batches), in training and evaluation. Each is run by volt and by
pytorch-lightning 2.6.6 (the test oracle) and must see the same arguments in its steps and batch hooks."""
import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import volt

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def numbers(n: int = 10, start: int = 0) -> DataLoader:
    """Batches of two consecutive numbers, so each batch says where it comes from."""
    return DataLoader(TensorDataset(torch.arange(start, start + n, dtype=torch.float32).view(-1, 1)), batch_size=2)


def values(batch):
    return None if batch is None else batch[0].view(-1).tolist()


def recording_module(pl, per_step: int = 1):
    """A module whose steps take `dataloader_iter` (fetching `per_step` batches each) and which records what its
    steps fetched and what its batch hooks received."""

    class Iterating(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)
            self.seen = []

        def training_step(self, dataloader_iter):
            fetched = [next(dataloader_iter) for _ in range(per_step)]
            self.seen.append(("step", [(values(batch), idx, dl) for batch, idx, dl in fetched]))
            return self.layer(fetched[0][0][0]).sum()

        def on_train_batch_start(self, batch, batch_idx):
            self.seen.append(("start", values(batch), batch_idx))

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.seen.append(("end", values(batch), batch_idx))

        def validation_step(self, dataloader_iter):
            batch, batch_idx, dataloader_idx = next(dataloader_iter)
            self.seen.append(("val", values(batch), batch_idx, dataloader_idx))
            self.log("seen", batch[0].sum())

        def on_validation_batch_start(self, batch, batch_idx, dataloader_idx=0):
            self.seen.append(("val_start", values(batch), batch_idx, dataloader_idx))

        def on_validation_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
            self.seen.append(("val_end", values(batch), batch_idx, dataloader_idx))

        def predict_step(self, dataloader_iter):
            batch, batch_idx, dataloader_idx = next(dataloader_iter)
            return values(batch), batch_idx, dataloader_idx

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return Iterating


def fit_iterating(pl, root, per_step, **kwargs):
    model = recording_module(pl, per_step)()
    options = dict(QUIET, max_epochs=2, num_sanity_val_steps=1, default_root_dir=root)
    options.update(kwargs)
    trainer = pl.Trainer(**options)
    trainer.fit(model, numbers(10), numbers(6))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return model.seen, (trainer.global_step, trainer.current_epoch), metrics


@pytest.mark.parametrize("per_step", [1, 2], ids=["one-batch-per-step", "two-batches-per-step"])
def test_dataloader_iter_training_as_lightning(tmp_path, quiet_lightning, per_step):
    """One batch a step: the epoch ends with its last batch and validates. Two a step over 5 batches: the third
    step finds the iterator used up, which ends the epoch there (no optimizer step, no batch-end hooks and, as in
    Lightning, no end-of-epoch validation). The batch-start hooks see the batch fetched before the step."""
    lightning = fit_iterating(quiet_lightning, tmp_path / "pl", per_step)
    ours = fit_iterating(volt, tmp_path / "volt", per_step)
    assert ours == lightning
    seen, (global_step, epoch), metrics = ours
    assert (global_step, epoch) == ((10, 2) if per_step == 1 else (4, 2))
    assert seen[0] == ("val_start", None, 0, 0)  # the sanity check's first batch: nothing fetched yet
    assert (("val", [0.0, 1.0], 0, 0) in seen) and ("start", None, 0) in seen
    validated = len([event for event in seen if event[0] == "val"])
    assert validated == (1 + 2 * 3 if per_step == 1 else 1)  # sanity check (+ 3 batches after each epoch)


def test_dataloader_iter_limit_and_validation_interval(tmp_path, quiet_lightning):
    """`limit_train_batches` bounds what the iterator yields; validation runs at the limited epoch's end."""
    runs = [fit_iterating(pl, tmp_path / name, 1, limit_train_batches=3, num_sanity_val_steps=0)
            for name, pl in (("pl", quiet_lightning), ("volt", volt))]
    assert runs[1] == runs[0]
    assert runs[1][1] == (6, 2)


def test_dataloader_iter_evaluation_and_prediction_as_lightning(quiet_lightning):
    """One iterator over all dataloaders in turn: steps, hooks, per-dataloader results and predictions agree."""
    results = {}
    for name, pl in (("pl", quiet_lightning), ("volt", volt)):
        model = recording_module(pl)()
        trainer = pl.Trainer(**QUIET)
        metrics = trainer.validate(model, [numbers(6), numbers(4, start=100)], verbose=False)
        predictions = trainer.predict(model, [numbers(6), numbers(4, start=100)]), trainer.predict(model, numbers(4))
        results[name] = model.seen, metrics, predictions
    assert results["volt"] == results["pl"]
    seen, metrics, (two_loaders, one_loader) = results["volt"]
    assert ("val", [100.0, 101.0], 0, 1) in seen and ("val_start", [4.0, 5.0], 2, 0) in seen
    assert two_loaders[1] == [([100.0, 101.0], 0, 1), ([102.0, 103.0], 1, 1)]
    assert one_loader == [([0.0, 1.0], 0, 0), ([2.0, 3.0], 1, 0)]


def test_dataloader_iter_resumes_exactly_mid_epoch(tmp_path):
    """A checkpoint after a step that fetched two batches resumes with the batches after them: the resumed fit
    ends with the same weights as an uninterrupted one."""
    callbacks = [volt.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)]
    full = recording_module(volt, per_step=2)()
    volt.Trainer(**dict(QUIET, enable_checkpointing=True), callbacks=callbacks, max_epochs=2,
                 default_root_dir=tmp_path).fit(full, numbers(8))
    resumed = recording_module(volt, per_step=2)()
    trainer = volt.Trainer(**QUIET, max_epochs=2, default_root_dir=tmp_path)
    trainer.fit(resumed, numbers(8), ckpt_path=os.path.join(tmp_path, "ckpt", "epoch=0-step=1.ckpt"))
    assert [event for event in resumed.seen if event[0] == "step"] == [
        event for event in full.seen if event[0] == "step"][1:]
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    assert trainer.global_step == 4


def test_dataloader_iter_step_that_fetches_nothing_fails_clearly(tmp_path):
    class Idle(recording_module(volt)):
        def training_step(self, dataloader_iter):
            return self.layer(torch.ones(1)).sum()

    with pytest.raises(volt.utilities.exceptions.MisconfigurationException,
                       match=r"returned without fetching a batch. Call `batch, batch_idx, dataloader_idx = next"):
        volt.Trainer(**QUIET, max_epochs=1).fit(Idle(), numbers(4))


def plain_module(pl):
    """Steps that take the batch alone, as Lightning allows."""

    class BatchOnly(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)
            self.seen = []

        def training_step(self, batch):
            self.seen.append(("train", values(batch)))
            return self.layer(batch[0]).sum()

        def validation_step(self, batch):
            self.seen.append(("val", values(batch)))

        def test_step(self, batch):
            self.seen.append(("test", values(batch)))

        def predict_step(self, batch):
            return values(batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return BatchOnly


def test_steps_without_batch_idx_as_lightning(tmp_path, quiet_lightning):
    runs = {}
    for name, pl in (("pl", quiet_lightning), ("volt", volt)):
        model = plain_module(pl)()
        trainer = pl.Trainer(**QUIET, max_epochs=1, default_root_dir=tmp_path / name)
        trainer.fit(model, numbers(4), numbers(4))
        trainer.validate(model, numbers(2), verbose=False)
        trainer.test(model, numbers(2), verbose=False)
        runs[name] = model.seen, trainer.predict(model, numbers(4)), trainer.global_step
    assert runs["volt"] == runs["pl"]
    assert runs["volt"][2] == 2 and ("test", [0.0, 1.0]) in runs["volt"][0]


def test_steps_assigned_on_the_instance_without_batch_idx(tmp_path):
    model = plain_module(volt)()
    calls = []
    model.validation_step = lambda batch: calls.append(values(batch))
    volt.Trainer(**QUIET, max_epochs=1, num_sanity_val_steps=0).fit(model, numbers(2), numbers(4))
    assert calls == [[0.0, 1.0], [2.0, 3.0]]


def test_dataloader_idx_in_the_signature_must_match_the_number_of_dataloaders(quiet_lightning):
    """Several loaders need `dataloader_idx` in the step; one loader refuses a required one. Both frameworks raise
    before the first batch, with the same advice."""

    class Single(plain_module(volt)):
        def validation_step(self, batch, batch_idx, dataloader_idx):
            pass

    trainer = volt.Trainer(**QUIET)
    with pytest.raises(RuntimeError, match=r"single `val_dataloader`, but have included `dataloader_idx` in "
                                           r"`Single.validation_step\(\)`. Either remove the argument or give it a"):
        trainer.validate(Single(), numbers(2))
    with pytest.raises(RuntimeError, match=r"multiple `test_dataloader`, but no `dataloader_idx` argument in "
                                           r"`BatchOnly.test_step\(\)`. Try adding `dataloader_idx=0`"):
        trainer.test(plain_module(volt)(), [numbers(2), numbers(2)])
    with pytest.raises(RuntimeError, match="no `dataloader_idx`"):
        quiet_lightning.Trainer(**QUIET).test(plain_module(quiet_lightning)(), [numbers(2), numbers(2)])


def test_a_step_set_to_none_on_the_instance_is_missing_as_in_lightning(tmp_path, quiet_lightning):
    """`model.validation_step = None` turns validation and the sanity check off in fit; validate/test without
    their step raise before running, in both frameworks; a step assigned in `__init__` runs."""
    def run(pl):
        calls = []

        class Watch(pl.Callback):
            def on_sanity_check_start(self, trainer, pl_module):
                calls.append("sanity")

            def on_validation_start(self, trainer, pl_module):
                calls.append("validation")

        model = plain_module(pl)()
        model.validation_step = None
        trainer = pl.Trainer(**QUIET, max_epochs=1, callbacks=[Watch()], default_root_dir=tmp_path)
        trainer.fit(model, numbers(4), numbers(4))
        errors = []
        for method in (trainer.validate, trainer.test):
            if method == trainer.test:
                model.test_step = None
            with pytest.raises(pl.utilities.exceptions.MisconfigurationException) as error:
                method(model, numbers(2), verbose=False)
            errors.append(str(error.value).split("()")[0])

        class Assigned(plain_module(pl)):
            def __init__(self):
                super().__init__()
                self.validation_step = lambda batch, batch_idx: calls.append("assigned")

        pl.Trainer(**QUIET, max_epochs=1, num_sanity_val_steps=0).fit(Assigned(), numbers(2), numbers(2))
        return calls, errors

    runs = {name: run(pl) for name, pl in (("pl", quiet_lightning), ("volt", volt))}
    assert runs["volt"][0] == runs["pl"][0] == ["assigned"]  # no sanity check, no validation; the assigned step ran
    assert runs["volt"][1] == ["No `validation_step", "No `test_step"]
    assert runs["pl"][1] == runs["volt"][1]
