"""More public behaviour that Lightning's own test suite showed volt doing differently: warnings Lightning gives
(with the phrases its users' tests match), resuming from an `OnExceptionCheckpoint`, hyperparameters, pickling and
checkpoint callbacks. Where it is cheap, the same check runs on pytorch-lightning 2.6.6 too (`oracle`)."""
import importlib
import warnings

import pytest
import torch

import volt


def _framework(oracle, request):
    return request.getfixturevalue("quiet_lightning") if oracle else volt


def _boring(pl):
    return importlib.import_module(f"{pl.__name__}.demos.boring_classes").BoringModel


def _quiet_trainer(pl, tmp_path, **kwargs):
    options = dict(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False,
                   max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    options.update(kwargs)
    return pl.Trainer(**options)


@pytest.mark.parametrize("oracle", [False, True])
def test_optimizer_configuration_warnings(oracle, request, tmp_path):
    """Extra keys in an optimizer dict are ignored with a warning (not refused); OneCycleLR stepped per epoch warns."""
    pl = _framework(oracle, request)

    class Configured(_boring(pl)):
        def __init__(self, make):
            super().__init__()
            self.make = make

        def configure_optimizers(self):
            return self.make(torch.optim.SGD(self.parameters(), lr=0.1))

    extra = Configured(lambda opt: {"optimizer": opt, "scheduler": torch.optim.lr_scheduler.StepLR(opt, 1)})
    with pytest.warns(RuntimeWarning, match=r"Found unsupported keys in the optimizer configuration: \{'scheduler'\}"):
        _quiet_trainer(pl, tmp_path, max_steps=1, enable_checkpointing=False).fit(extra)
    one_cycle = Configured(lambda opt: {"optimizer": opt, "lr_scheduler": {
        "scheduler": torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)}})
    with pytest.warns(RuntimeWarning, match="Are you sure you didn't mean 'interval': 'step'?"):
        _quiet_trainer(pl, tmp_path, max_steps=1, enable_checkpointing=False).fit(one_cycle)


@pytest.mark.parametrize("oracle", [False, True])
def test_fit_resumes_from_the_on_exception_checkpoint(oracle, request, tmp_path):
    """As Lightning: with an `OnExceptionCheckpoint` whose file exists, `fit()` and `fit(ckpt_path="last")` resume
    from it; an evaluation without a model says the file is only used when fitting."""
    pl = _framework(oracle, request)

    class Fails(_boring(pl)):
        fail = True

        def training_step(self, batch, batch_idx):
            if self.fail and batch_idx == 1:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    def run():
        return _quiet_trainer(pl, tmp_path, callbacks=[pl.callbacks.OnExceptionCheckpoint(tmp_path)])

    for ckpt_path in (None, "last"):
        with pytest.raises(RuntimeError, match="boom"):
            run().fit(Fails())  # writes the file (the successful fit below removes it)
        resumed, model = run(), Fails()
        model.fail = False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resumed.fit(model, ckpt_path=ckpt_path)
        told = any("last model of the previous `fit` call will be used" in str(w.message) for w in caught)
        assert told == (ckpt_path is None)
        assert resumed.ckpt_path == str(tmp_path / "on_exception.ckpt") and resumed.global_step == 2
    with pytest.warns(UserWarning, match="also an on-exception checkpoint available, however it is used by default "
                                         "only when fitting"):
        try:
            resumed.validate()
        except AttributeError:  # Lightning, after the warning, asks its OnExceptionCheckpoint for `best_model_path`
            assert oracle


@pytest.mark.parametrize("oracle", [False, True])
def test_extract_batch_size_warns_on_an_ambiguous_batch(oracle, request):
    pl = _framework(oracle, request)
    extract_batch_size = importlib.import_module(f"{pl.__name__}.utilities.data").extract_batch_size
    ambiguous = "Trying to infer the `batch_size` from an ambiguous collection. The batch size we found is {}."
    for batch, size in (({"a": [{"b": [torch.zeros(10, 2), torch.zeros(11, 2)]}]}, 10),
                        ([torch.zeros(12), torch.tensor(3.0)], 12)):  # (Lightning warns once per message)
        with pytest.warns(UserWarning, match=ambiguous.format(size)):
            assert extract_batch_size(batch) == size
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert extract_batch_size({"x": [torch.zeros(7, 3), torch.zeros(7)]}) == 7
        assert extract_batch_size(torch.tensor(2.0)) == 1
    for no_tensor in ("text", {"a": ["b"] * 3}):
        with pytest.raises(Exception, match="We could not infer the batch_size from the batch"):
            extract_batch_size(no_tensor)


@pytest.mark.parametrize("oracle", [False, True])
def test_hyperparameters_collected_and_cleaned_as_lightning(oracle, request, tmp_path):
    """A module built inside another's `__init__` collects the enclosing `__init__`'s arguments too, up to the first
    frame that is not such a constructor; `ignore` applies to both. A hyperparameter that cannot be pickled is removed
    with a warning when a run starts."""
    pl = _framework(oracle, request)

    class Head(pl.LightningModule):
        def __init__(self, dropout, init="xavier", **extra):
            super().__init__()
            self.save_hyperparameters(ignore=["dropout", "width"])

    class Body(pl.LightningModule):
        def __init__(self, width, depth=3):
            super().__init__()
            self.head = Head(0.1, tag="x")

    class Plain:  # not a Lightning class: where collecting stops
        def __init__(self, seed=1):
            self.body = Body(width=8)

    assert list(Plain().body.head.hparams.items()) == [("init", "xavier"), ("tag", "x"), ("depth", 3)]

    class Unpicklable(_boring(pl)):
        def __init__(self, fn=lambda x: x, size=2):
            super().__init__()
            self.save_hyperparameters()

    model = Unpicklable()
    with pytest.warns(UserWarning, match="Attribute 'fn' removed from hparams because it cannot be pickled"):
        _quiet_trainer(pl, tmp_path, max_steps=1, enable_checkpointing=False).fit(model)
    assert dict(model.hparams) == {"size": 2}
    is_picklable = importlib.import_module(f"{pl.__name__}.utilities.parsing").is_picklable
    assert not is_picklable(torch.jit.script(torch.nn.Linear(1, 1))) and is_picklable({"a": torch.zeros(1)})


@pytest.mark.parametrize("oracle", [False, True])
def test_a_logged_metric_whose_compute_gives_no_tensor_is_refused(oracle, request, tmp_path):
    torchmetrics = pytest.importorskip("torchmetrics")
    pl = _framework(oracle, request)

    class Pair(torchmetrics.Metric):
        def update(self):
            pass

        def compute(self):
            return torch.tensor(1.0), torch.tensor(2.0)

    class Logs(_boring(pl)):
        def __init__(self):
            super().__init__()
            self.pair = Pair()

        def on_train_start(self):
            self.log("pair", self.pair)

    with pytest.raises(ValueError, match=r"compute\(\)` return of the metric logged as 'pair' must be a tensor"):
        _quiet_trainer(pl, tmp_path, limit_train_batches=1, limit_val_batches=0, enable_checkpointing=False).fit(Logs())


def test_a_mock_callback_hears_every_hook(tmp_path):
    """A `Mock(spec=Callback)` (its class has no hook methods) is called like a callback that overrides them all, as
    Lightning calls every callback; one from `configure_callbacks` hears the same calls as one given to the Trainer."""
    from unittest.mock import Mock

    given, configured = Mock(spec=volt.Callback), Mock(spec=volt.Callback)

    class Configures(_boring(volt)):
        def configure_callbacks(self):
            return [configured]

    trainer = _quiet_trainer(volt, tmp_path, callbacks=[given], fast_dev_run=True, enable_checkpointing=False)
    trainer.fit(Configures())
    names = [call[0] for call in given.method_calls]
    assert {"setup", "on_fit_start", "on_train_batch_end", "on_fit_end", "teardown"} <= set(names)
    assert configured.method_calls == given.method_calls and trainer.callbacks[-1] is configured


def test_several_pruning_callbacks_combine():
    """Distinct state keys (method and amount), so the Trainer accepts them together, as Lightning does."""
    from volt.callbacks import ModelPruning

    first, second = ModelPruning("l1_unstructured", amount=0.5), ModelPruning("random_unstructured", amount=0.25)
    volt.Trainer(callbacks=[first, second], logger=False)
    assert first.state_key != second.state_key
    with pytest.raises(RuntimeError, match="more than one stateful callback of type `ModelPruning`"):
        volt.Trainer(callbacks=[first, ModelPruning("l1_unstructured", amount=0.5)], logger=False)
