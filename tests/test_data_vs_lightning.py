"""Data and loop behaviour that Lightning's own test suite checks, run under volt and under pytorch-lightning 2.6.6
(the oracle): what a missing or invalid dataloader raises, which objects the Trainer's dataloader properties show,
`overfit_batches`' samplers, the argument messages users match, and the warnings Lightning gives."""
import logging
import re
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, TensorDataset

import volt
from volt.utilities.exceptions import MisconfigurationException

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def module_class(pl):
    """A tiny regression module with all four dataloader hooks (4 batches of 2 each)."""

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            x = batch[0][0] if isinstance(batch[0], list) else batch[0]  # several loaders: the first one's batch
            return self.layer(x).pow(2).mean()

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            pass

        def test_step(self, batch, batch_idx, dataloader_idx=0):
            pass

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return batch_idx

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return data()

        val_dataloader = test_dataloader = predict_dataloader = train_dataloader

    return Tiny


def data(n=8, **kwargs):
    return DataLoader(TensorDataset(torch.randn(n, 2)), batch_size=2, **kwargs)


def failure(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the type and message are what is compared
        return type(error).__name__, str(error)
    return None, ""


def test_missing_and_invalid_dataloaders_raise_as_lightning(quiet_lightning):
    """A hook nobody defines: MisconfigurationException ("must be implemented"); a hook set to None, or a value that
    is not iterable, passed or returned: TypeError saying where it came from. Same types and phrases as Lightning."""
    def cases(pl):
        cls = module_class(pl)

        class NoHooks(cls):
            pass

        for name in ("train_dataloader", "val_dataloader", "test_dataloader", "predict_dataloader"):
            setattr(NoHooks, name, getattr(pl.LightningModule, name))
        removed = cls()
        removed.test_dataloader = None
        returns_object = cls()
        returns_object.predict_dataloader = lambda: object()
        trainer = pl.Trainer(fast_dev_run=True, **QUIET)
        return {
            "fit, no hook": lambda: trainer.fit(NoHooks()),
            "validate, no hook": lambda: trainer.validate(NoHooks()),
            "test, datamodule without the hook": lambda: trainer.test(NoHooks(), datamodule=pl.LightningDataModule()),
            "test, hook set to None": lambda: trainer.test(removed),
            "fit, object passed": lambda: trainer.fit(cls(), train_dataloaders=object()),
            "validate, list with a number": lambda: trainer.validate(cls(), dataloaders=[1, data()]),
            "predict, object returned": lambda: trainer.predict(returns_object),
        }

    ours, theirs = cases(volt), cases(quiet_lightning)
    phrases = {"MisconfigurationException": r"`(\w+)` must be implemented to be used with the Lightning Trainer",
               "TypeError": r"An invalid dataloader was (passed to `Trainer\.\w+\(\w+=...\)`|returned from `\w+\.\w+"
                            r"\(\)`)\. Found ([^.:]+)"}
    for case, call in ours.items():
        (kind, message), (their_kind, their_message) = failure(call), failure(theirs[case])
        assert kind == their_kind, (case, message, their_message)
        assert re.search(phrases[kind], message).groups()[:1] == re.search(phrases[kind], their_message).groups()[:1]
    assert "Either pass the dataloader to the `.test()` method" in failure(ours["test, hook set to None"])[1]
    with pytest.raises(MisconfigurationException, match="`val_dataloader` must be implemented"):
        volt.LightningDataModule().val_dataloader()


def test_dataloader_properties_show_the_users_loaders(quiet_lightning):
    """`trainer.train_dataloader` / `val_dataloaders` / ... are the objects the user gave (in the structure given),
    unless the Trainer put other samplers in: with `overfit_batches` both fit loaders become sequential (with
    Lightning's warning). Predictions and `enable_validation` read as in Lightning."""
    for pl in (volt, quiet_lightning):
        model, train, val = module_class(pl)(), data(), [data(), data(4)]
        trainer = pl.Trainer(max_epochs=1, **QUIET)
        trainer.fit(model, train, {"a": val[0]})
        assert trainer.train_dataloader is train and trainer.val_dataloaders == {"a": val[0]}
        assert trainer.enable_validation
        assert pl.Trainer(**QUIET).num_sanity_val_batches == [] and trainer.num_sanity_val_batches == [2]
        trainer.test(model, val)
        assert trainer.test_dataloaders == val and trainer.num_sanity_val_batches == [2]
        assert trainer.predict(model, val[0]) == [0, 1, 2, 3] == trainer.predict_loop.predictions
        assert trainer.predict(model, val) == [[0, 1, 2, 3], [0, 1]] == trainer.predict_loop.predictions

        shuffled = [data(sampler=RandomSampler(range(8))), data(sampler=RandomSampler(range(8)))]
        trainer = pl.Trainer(max_epochs=1, overfit_batches=2, num_sanity_val_steps=0, **QUIET)
        with pytest.warns(UserWarning, match="You requested to overfit but enabled train dataloader shuffling") as w:
            trainer.fit(model, shuffled, shuffled[0])
        assert any("enabled val dataloader shuffling" in str(item.message) for item in w)
        assert all(isinstance(loader.sampler, SequentialSampler) for loader in trainer.train_dataloader)
        assert isinstance(trainer.val_dataloaders.sampler, SequentialSampler)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(limit_val_batches=1.2), MisconfigurationException, "You have passed invalid value 1.2 for `limit_val_b"),
    (dict(overfit_batches=-0.1), MisconfigurationException, "You have passed invalid value -0.1 for `overfit_batc"),
    (dict(val_check_interval=1.2), MisconfigurationException, "You have passed invalid value 1.2 for `val_check_"),
    (dict(fast_dev_run=-1), MisconfigurationException, r"fast_dev_run=-1 is not a valid configuration. It should be"),
    (dict(val_check_interval=0.5, check_val_every_n_epoch=None), MisconfigurationException,
     r"`val_check_interval` should be an integer or a time-based duration .* when `check_val_every_n_epoch=None`\."),
    (dict(barebones=True, logger=True), ValueError, r"`Trainer\(barebones=True, logger=True\)` was passed"),
    (dict(barebones=True, enable_model_summary=True), ValueError, r"enable_model_summary=True\)` was passed"),
])
def test_argument_errors_as_lightning(kwargs, error, message, quiet_lightning):
    with pytest.raises(error, match=message):
        volt.Trainer(**kwargs)
    if error is MisconfigurationException:
        error = quiet_lightning.utilities.exceptions.MisconfigurationException
    with pytest.raises(error, match=message.split(" for ")[0].split(r"\)` was")[0]):
        quiet_lightning.Trainer(**kwargs)


def test_argument_info_and_warnings_as_lightning(caplog, tmp_path, quiet_lightning):
    """Explicit 1 / 1.0 limits say what they mean; barebones says what it turned off; a training epoch shorter than
    `log_every_n_steps`, submodules left in eval mode and an unset `max_epochs` warn (PossibleUserWarning); a
    `val_check_interval` beyond the epoch is a ValueError unless validation is off."""
    with caplog.at_level(logging.INFO):
        volt.Trainer(limit_train_batches=1, limit_test_batches=1.0, val_check_interval=1, logger=False)
        volt.Trainer(barebones=True)
    for line in ("`Trainer(limit_train_batches=1)` was configured so 1 batch per epoch will be used.",
                 "`Trainer(limit_test_batches=1.0)` was configured so 100% of the batches will be used.",
                 "`Trainer(val_check_interval=1)` was configured so validation will run after every batch.",
                 "running in `Trainer(barebones=True)` mode"):
        assert line in caplog.text

    for pl in (volt, quiet_lightning):
        model = module_class(pl)()
        model.frozen = torch.nn.Linear(1, 1).eval()
        stopping = module_class(pl)()
        stopping.on_train_batch_end = lambda *args: setattr(stopping.trainer, "should_stop", True)
        trainer = pl.Trainer(limit_train_batches=2, log_every_n_steps=3, num_sanity_val_steps=0, max_steps=2,
                             logger=pl.loggers.CSVLogger(tmp_path), enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            trainer.fit(model)
            pl.Trainer(max_epochs=None, limit_train_batches=1, **QUIET).fit(stopping)
        messages = [str(w.message) for w in record if issubclass(w.category, pl.utilities.warnings.PossibleUserWarning)]
        for start in ("The number of training batches (2) is smaller than the logging interval "
                      "Trainer(log_every_n_steps=3)", "Found 1 module(s) in eval mode at the start of training.",
                      "`max_epochs` was not set. Setting it to 1000 epochs."):
            assert sum(m.startswith(start) for m in messages) == 1, (pl.__name__, start, messages)
        with pytest.raises(ValueError, match=r"`val_check_interval` \(5\) must be less than or equal to the number "
                                             r"of the training batches \(4\)"):
            pl.Trainer(val_check_interval=5, max_epochs=1, **QUIET).fit(module_class(pl)())
        pl.Trainer(val_check_interval=5, limit_val_batches=0, max_epochs=1, **QUIET).fit(module_class(pl)())


def test_evaluation_hooks_run_without_grad_and_reloads_follow_lightning(quiet_lightning):
    """validate/test/predict run their start hooks under inference mode (no_grad with `inference_mode=False`); with
    `reload_dataloaders_every_n_epochs`, the sanity check's validation loaders count as reloaded only when the first
    epoch validates."""
    for pl in (volt, quiet_lightning):
        seen, reloads = [], []

        class Probe(module_class(pl)):
            def on_test_start(self):
                seen.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled()))

            on_validation_start = on_predict_start = on_test_start

            def val_dataloader(self):
                reloads.append((self.trainer.sanity_checking, self.current_epoch))
                return data()

        for inference_mode in (True, False):
            trainer = pl.Trainer(fast_dev_run=True, inference_mode=inference_mode, **QUIET)
            trainer.validate(Probe()), trainer.test(Probe()), trainer.predict(Probe())
        assert seen == [(False, True)] * 3 + [(False, False)] * 3
        reloads.clear()
        pl.Trainer(max_epochs=4, limit_train_batches=1, limit_val_batches=1, check_val_every_n_epoch=2,
                   reload_dataloaders_every_n_epochs=1, **QUIET).fit(Probe())
        assert reloads == [(True, 0), (False, 1), (False, 3)], pl.__name__


def test_a_step_taking_dataloader_iter_is_not_entered_without_batches(quiet_lightning):
    for pl in (volt, quiet_lightning):
        entered = []

        class Iterating(module_class(pl)):
            def validation_step(self, dataloader_iter):
                entered.append(next(dataloader_iter))

        pl.Trainer(limit_val_batches=0, **QUIET).validate(Iterating(), data())
        pl.Trainer(limit_val_batches=1, **QUIET).validate(Iterating(), data())
        assert len(entered) == 1, pl.__name__


def test_loader_setup_warnings_as_lightning(quiet_lightning):
    """A shuffling evaluation loader, spawn-started workers without `persistent_workers`, and persistent pinned
    workers with `reload_dataloaders_every_n_epochs` warn as in Lightning; a float limit under one batch names the
    smallest fraction that works."""
    import multiprocessing

    spawned = data(num_workers=1, multiprocessing_context=multiprocessing.get_context("spawn"))
    pinned = data(num_workers=1, persistent_workers=True, pin_memory=True)
    for pl in (volt, quiet_lightning):
        model = module_class(pl)()
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            if pl is volt:  # volt checks the loaders even with no batch to run (spawned workers start slowly)
                pl.Trainer(max_epochs=1, limit_train_batches=0, **QUIET).fit(model, spawned)
            pl.Trainer(max_steps=1, reload_dataloaders_every_n_epochs=1, **QUIET).fit(model, pinned)
            pl.Trainer(**QUIET).test(model, data(shuffle=True))
        messages = " | ".join(str(w.message) for w in record)
        phrases = ["The combination of `DataLoader(`pin_memory=True`, `persistent_workers=True`) and `Trainer("
                   "reload_dataloaders_every_n_epochs > 0)`",
                   "Your `test_dataloader`'s sampler has shuffling enabled, it is strongly recommended that you "
                   "turn shuffling off for val/test dataloaders."]
        if pl is volt:
            phrases.append("Consider setting `persistent_workers=True` in 'train_dataloader'")
        for phrase in phrases:
            assert phrase in messages, (pl.__name__, phrase)
        with pytest.raises(Exception, match=r"0.1 \* 4 < 1. Please increase the `limit_val_batches` argument. Try "
                                            r"at least `limit_val_batches=0.25`"):
            pl.Trainer(limit_val_batches=0.1, **QUIET).validate(model, data())


def test_a_submodule_left_in_eval_mode_stays_there_after_evaluation(quiet_lightning):
    """Evaluation puts the module in eval mode and then each submodule back in the mode it had (a frozen backbone
    stays frozen), unless `on_validation_model_train` is overridden; fit warns about such a submodule at start."""
    for pl in (volt, quiet_lightning):
        model = module_class(pl)()
        model.frozen = torch.nn.Linear(1, 1).eval()
        with pytest.warns(pl.utilities.warnings.PossibleUserWarning, match="Found 1 module"):
            pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, **QUIET).fit(model)
        pl.Trainer(**QUIET).validate(model, data())
        assert model.training and model.layer.training and not model.frozen.training, pl.__name__


def test_a_none_training_batch_is_skipped_as_in_lightning(quiet_lightning):
    """A collate_fn that returns None: that batch runs no hook but on_train_batch_end(None, None, i), trains nothing,
    and is warned about once."""
    from torch.utils.data import default_collate

    runs = {}
    for pl in (volt, quiet_lightning):
        calls = []

        class Dropping(module_class(pl)):
            def train_dataloader(self):
                return DataLoader(TensorDataset(torch.randn(4, 2)), collate_fn=lambda b: None if len(calls) % 3 == 0
                                  else default_collate(b))

            def on_train_batch_start(self, batch, batch_idx):
                calls.append(("start", batch_idx))

            def on_train_batch_end(self, outputs, batch, batch_idx):
                calls.append(("end", batch_idx, outputs is None, batch is None))

        trainer = pl.Trainer(max_epochs=1, **QUIET)
        with pytest.warns(UserWarning, match="train_dataloader yielded None. If this was on purpose") as record:
            trainer.fit(Dropping())
        assert sum("yielded None" in str(w.message) for w in record) == 1
        runs[pl.__name__] = calls, trainer.global_step
    assert runs["volt"] == runs["pytorch_lightning"] and runs["volt"][1] == 2


def test_lists_of_plain_values_are_one_iterable_of_batches_as_in_lightning(quiet_lightning):
    """Loaders given as a list, tuple or dict (nested too) run one after another, as Lightning flattens them; a
    container holding only numbers or strings (`[0]`, `(4, 5)`) is itself one iterable of batches."""
    def run(pl, data):
        class Recording(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.seen = []

            def test_step(self, batch, batch_idx, dataloader_idx=0):
                self.seen.append((batch, batch_idx, dataloader_idx))

            def predict_step(self, batch, batch_idx, dataloader_idx=0):
                return batch

        model = Recording()
        results = pl.Trainer(barebones=True, **QUIET).test(model, data, verbose=False)
        return model.seen, results, pl.Trainer(barebones=True, **QUIET).predict(model, data)

    for data in ([0], [1, 2, 3], (4, 5), ["a", "b"], [[1, 2], [3]], {"a": [1, 2], "b": (3,)}):
        assert run(volt, data) == run(quiet_lightning, data), data
