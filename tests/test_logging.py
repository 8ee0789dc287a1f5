"""`self.log` / `self.log_dict`: per-hook defaults, step/epoch forks, the three metric dicts, epoch reduction, what
loggers receive and when, several dataloaders, torchmetrics objects, and the hooks where logging is an error.

Each scenario is a function of the package (`volt`, or `pytorch_lightning` in the `lightning`-marked tests) that
returns plain data; the volt test checks it against the expected values written here, and the Lightning test checks
that Lightning 2.6.6 produces the same values.
"""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import volt
from helpers import loader, memory_logger_class, trainer
from volt.utilities.exceptions import MisconfigurationException


def _floats(metrics):
    return {key: round(float(value), 6) for key, value in metrics.items()}


def _quiet(pl, tmp_path, **kwargs):
    options = dict(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=False)
    options.update(kwargs)
    return pl.Trainer(**options)


# ------------------------------------------------------------------------------------------------ scenarios


def defaults_and_dicts(pl, tmp_path):
    """Values that are functions of batch_idx, logged with default options from several hooks, two epochs."""
    seen = {}

    class Snapshot(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.current_epoch == 0 and batch_idx == 2:
                seen["callback"] = _floats(trainer.callback_metrics)
                seen["progress_bar"] = _floats(trainer.progress_bar_metrics)
                seen["logged"] = _floats(trainer.logged_metrics)

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            self.log("train_value", float(batch_idx))  # training: on_step only
            self.log("both", float(batch_idx), on_epoch=True)  # forks into both_step / both_epoch
            self.log("bar", 10.0 + batch_idx, prog_bar=True)
            self.log("quiet", 5.0, logger=False)
            return self.layer(batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("val_value", float(batch_idx))  # validation: on_epoch only, mean over batches

        def on_train_epoch_end(self):
            self.log("epoch_hook", 7.0 + self.current_epoch)

        def on_validation_epoch_end(self):
            self.log("val_epoch_hook", 8.0, prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    memory = memory_logger_class(pl.loggers.Logger)()
    run = _quiet(pl, tmp_path, max_epochs=2, limit_train_batches=4, limit_val_batches=2, log_every_n_steps=2,
                 logger=memory, callbacks=[Snapshot()])
    run.fit(Model(), loader(n=8), loader(n=4))
    seen["final_callback"] = _floats(run.callback_metrics)
    seen["final_progress_bar"] = _floats(run.progress_bar_metrics)
    seen["final_logged"] = _floats(run.logged_metrics)
    seen["logger"] = [(step, _floats(metrics)) for step, metrics in memory.metrics]
    return seen


DEFAULTS_AND_DICTS = {
    # during the epoch: `both` is the step value; logger=False values are in callback_metrics only
    "callback": {"train_value": 2.0, "both": 2.0, "both_step": 2.0, "bar": 12.0, "quiet": 5.0},
    "progress_bar": {"bar": 12.0},
    "logged": {"train_value": 2.0, "both_step": 2.0, "bar": 12.0},
    # after the epoch: `both` is the epoch mean (0+1+2+3)/4; the sanity check left nothing behind
    "final_callback": {"train_value": 3.0, "both": 1.5, "both_step": 3.0, "both_epoch": 1.5, "bar": 13.0,
                       "quiet": 5.0, "val_value": 0.5, "val_epoch_hook": 8.0, "epoch_hook": 8.0},
    "final_progress_bar": {"bar": 13.0, "val_epoch_hook": 8.0},
    "final_logged": {"train_value": 3.0, "both_step": 3.0, "both_epoch": 1.5, "bar": 13.0, "val_value": 0.5,
                     "val_epoch_hook": 8.0, "epoch_hook": 8.0},
    # every 2nd optimizer step, x-axis = optimizer steps - 1, with an `epoch` key; epoch values at epoch end
    "logger": [
        (1, {"bar": 11.0, "both_step": 1.0, "epoch": 0.0, "train_value": 1.0}),
        (3, {"bar": 13.0, "both_step": 3.0, "epoch": 0.0, "train_value": 3.0}),
        (3, {"epoch": 0.0, "val_epoch_hook": 8.0, "val_value": 0.5}),
        (3, {"both_epoch": 1.5, "epoch": 0.0, "epoch_hook": 7.0}),
        (5, {"bar": 11.0, "both_step": 1.0, "epoch": 1.0, "train_value": 1.0}),
        (7, {"bar": 13.0, "both_step": 3.0, "epoch": 1.0, "train_value": 3.0}),
        (7, {"epoch": 1.0, "val_epoch_hook": 8.0, "val_value": 0.5}),
        (7, {"both_epoch": 1.5, "epoch": 1.0, "epoch_hook": 8.0}),
    ],
}


def _uneven_batches():
    """Two batches of values: [0, 0, 0] and [3]. The batch-size-weighted mean is 0.75, the plain mean 1.5."""
    return DataLoader(TensorDataset(torch.tensor([0.0, 0.0, 0.0, 3.0])), batch_sampler=[[0, 1, 2], [3]])


def epoch_reductions(pl, tmp_path):
    """validate() and fit() over the uneven batches, with every reduction."""

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def _log_all(self, batch, **options):
            (values,) = batch
            self.log("mean", values.mean(), **options)
            self.log("explicit_batch_size", values.mean(), batch_size=1, **options)
            self.log("sum", values.sum(), reduce_fx="sum", **options)
            self.log("max", values.max(), reduce_fx="max", **options)
            self.log("min", values.min(), reduce_fx=torch.min, **options)

        def training_step(self, batch, batch_idx):
            self._log_all(batch, on_step=False, on_epoch=True)
            return self.layer(batch[0][:, None]).sum()

        def validation_step(self, batch, batch_idx):
            self._log_all(batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    validated = _quiet(pl, tmp_path).validate(Model(), _uneven_batches(), verbose=False)
    fitted = _quiet(pl, tmp_path, num_sanity_val_steps=0)
    fitted.fit(Model(), _uneven_batches())
    return {"validate": [_floats(d) for d in validated], "fit": _floats(fitted.callback_metrics)}


REDUCED = {"mean": 0.75, "explicit_batch_size": 1.5, "sum": 3.0, "max": 3.0, "min": 0.0}
EPOCH_REDUCTIONS = {"validate": [REDUCED], "fit": REDUCED}


def two_val_loaders(pl, tmp_path):
    """validate() with two dataloaders; the second one's values are 10 more than the first one's."""

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("value", 10.0 * dataloader_idx + batch_idx)
            self.log_dict({"a": 1.0 + dataloader_idx, "b": 2.0}, prog_bar=True)
            self.log(f"plain_{dataloader_idx}", 3.0, add_dataloader_idx=False)

        def on_validation_epoch_end(self):
            self.log("epoch_end", 4.0)  # no suffix: it belongs to every dataloader

    run = _quiet(pl, tmp_path)
    returned = run.validate(Model(), [loader(n=4), loader(n=4)], verbose=False)
    return {"returned": [_floats(d) for d in returned], "progress_bar": _floats(run.progress_bar_metrics)}


TWO_VAL_LOADERS = {
    "returned": [
        {"value/dataloader_idx_0": 0.5, "a/dataloader_idx_0": 1.0, "b/dataloader_idx_0": 2.0, "plain_0": 3.0,
         "epoch_end": 4.0},
        {"value/dataloader_idx_1": 10.5, "a/dataloader_idx_1": 2.0, "b/dataloader_idx_1": 2.0, "plain_1": 3.0,
         "epoch_end": 4.0},
    ],
    "progress_bar": {"a/dataloader_idx_0": 1.0, "b/dataloader_idx_0": 2.0, "a/dataloader_idx_1": 2.0,
                     "b/dataloader_idx_1": 2.0},
}


def accumulation_log_steps(pl, tmp_path):
    """accumulate_grad_batches=2 over 6 batches, log_every_n_steps=1: one write per optimizer step."""

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            self.log("batch_idx", float(batch_idx))
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    memory = memory_logger_class(pl.loggers.Logger)()
    run = _quiet(pl, tmp_path, logger=memory, accumulate_grad_batches=2, log_every_n_steps=1)
    run.fit(Model(), loader(n=12))
    return [(step, _floats(metrics)) for step, metrics in memory.metrics]


ACCUMULATION_LOG_STEPS = [(0, {"batch_idx": 1.0, "epoch": 0.0}), (1, {"batch_idx": 3.0, "epoch": 0.0}),
                          (2, {"batch_idx": 5.0, "epoch": 0.0})]


def torchmetrics_objects(pl, tmp_path):
    """A torchmetrics Metric logged as an object: its forward value per step, its compute() per epoch."""
    torchmetrics = pytest.importorskip("torchmetrics")
    seen = {}

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.train_sum = torchmetrics.SumMetric()
            self.val_max = torchmetrics.MaxMetric()

        def training_step(self, batch, batch_idx):
            self.train_sum(torch.tensor(float(batch_idx)))
            self.log("train_sum", self.train_sum, on_step=True, on_epoch=True)
            return self.layer(batch[0]).pow(2).mean()

        def on_train_batch_end(self, outputs, batch, batch_idx):
            seen.setdefault("steps", []).append(round(float(self.trainer.callback_metrics["train_sum_step"]), 6))

        def validation_step(self, batch, batch_idx):
            self.val_max.update(torch.tensor(2.0 * batch_idx))
            self.log("val_max", self.val_max)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    run = _quiet(pl, tmp_path, max_epochs=2, num_sanity_val_steps=0)
    run.fit(Model(), loader(n=6), loader(n=6))
    seen["final"] = _floats(run.callback_metrics)
    return seen


TORCHMETRICS_OBJECTS = {
    # step values are each batch's own value; the epoch value sums the epoch (reset between epochs)
    "steps": [0.0, 1.0, 2.0, 0.0, 1.0, 2.0],
    "final": {"train_sum": 3.0, "train_sum_step": 2.0, "train_sum_epoch": 3.0, "val_max": 4.0},
}

SCENARIOS = {
    "defaults_and_dicts": (defaults_and_dicts, DEFAULTS_AND_DICTS),
    "epoch_reductions": (epoch_reductions, EPOCH_REDUCTIONS),
    "two_val_loaders": (two_val_loaders, TWO_VAL_LOADERS),
    "accumulation_log_steps": (accumulation_log_steps, ACCUMULATION_LOG_STEPS),
    "torchmetrics_objects": (torchmetrics_objects, TORCHMETRICS_OBJECTS),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_logging_scenario(name, tmp_path):
    run, expected = SCENARIOS[name]
    assert run(volt, tmp_path) == expected


@pytest.mark.lightning
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_lightning_logs_the_same(name, tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    run, expected = SCENARIOS[name]
    assert run(pl, tmp_path) == expected


# ------------------------------------------------------------------------------------------------ errors

FORBIDDEN_HOOKS = ["setup", "configure_optimizers", "on_fit_start", "on_fit_end", "on_train_end", "on_validation_end",
                   "train_dataloader", "on_before_batch_transfer", "on_save_checkpoint", "lr_scheduler_step",
                   "predict_step", "on_predict_epoch_end"]


def log_in_hook(pl, tmp_path, hook):
    """Run a loop whose module calls `self.log` inside `hook`; return the error it raised."""

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def forward(self, x):
            return self.layer(x)

        def training_step(self, batch, batch_idx):
            return self(batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            pass

        def predict_step(self, batch, batch_idx):
            return self(batch[0])

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1)]

        def train_dataloader(self):
            return loader(n=2)

        def predict_dataloader(self):
            return loader(n=2)

    def logging_hook(self, *args, **kwargs):
        self.log("value", 1.0)
        return getattr(pl.LightningModule, hook)(self, *args, **kwargs)

    setattr(Model, hook, logging_hook)
    run = _quiet(pl, tmp_path, limit_val_batches=1, enable_checkpointing=hook == "on_save_checkpoint")
    with pytest.raises(Exception) as error:
        if hook.startswith(("predict", "on_predict")):
            run.predict(Model())
        else:
            run.fit(Model(), val_dataloaders=loader(n=2))
    return error.value


@pytest.mark.parametrize("hook", FORBIDDEN_HOOKS)
def test_logging_in_a_hook_that_cannot_log_raises(hook, tmp_path):
    error = log_in_hook(volt, tmp_path, hook)
    assert isinstance(error, MisconfigurationException)
    if hook.startswith(("predict", "on_predict")):  # Lightning's wording for every predict hook
        assert f"`self.log('value', ...)` in `{hook}`, but the loop's result collection is not registered" in str(error)
    else:
        assert f"You can't `self.log()` inside `{hook}`" in str(error)


@pytest.mark.lightning
@pytest.mark.parametrize("hook", FORBIDDEN_HOOKS)
def test_lightning_also_refuses_to_log_in(hook, tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    assert "`self.log()`" in str(log_in_hook(pl, tmp_path, hook))


class _LogsInTrainingStep(volt.LightningModule):
    def __init__(self, log):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.log_call = log

    def training_step(self, batch, batch_idx):
        self.log_call(self)
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("log, message", [
    (lambda m: m.log("v", torch.ones(3)), r"tensor must have a single element \(its shape is \(3,\)\): log one number"),
    (lambda m: m.log("v", "text"), r"`self.log\(v, text\)` was called, but `str` values cannot be logged: log a"),
    (lambda m: m.log("v", 1.0, reduce_fx="median"), r"reduce_fx={min,max,mean,sum}\)` are supported .* log a"),
    (lambda m: m.log("v", 1.0, on_step=False, on_epoch=False), "is not useful: it logs nothing; set one of them"),
    (lambda m: m.log("v/dataloader_idx_0", 1.0), "key `v/dataloader_idx_0`, but it should not contain information"),
])
def test_bad_log_calls_name_the_problem(log, message, tmp_path):
    with pytest.raises((ValueError, MisconfigurationException), match=message):
        trainer(tmp_path).fit(_LogsInTrainingStep(log), loader(n=2))


def test_a_logged_metric_object_must_be_a_module_attribute(tmp_path):
    """As Lightning: a torchmetrics object logged by `self.log` must be an attribute of the module (its state belongs
    to the module), unless `metric_attribute=` names one; the error lists the module's metric attributes."""
    torchmetrics = pytest.importorskip("torchmetrics")
    stray = torchmetrics.SumMetric()

    def log_stray(model):
        stray(torch.tensor(1.0))
        model.log("foo", stray)

    with pytest.raises(MisconfigurationException, match="fix this by setting an attribute for the metric in your"):
        trainer(tmp_path).fit(_LogsInTrainingStep(log_stray), loader(n=2))
    with_attribute = _LogsInTrainingStep(log_stray)
    with_attribute.bar = torchmetrics.SumMetric()
    with pytest.raises(MisconfigurationException,
                       match=r"`self.log\(foo, ..., metric_attribute=name\)` where `name` is one of \['bar'\]"):
        trainer(tmp_path).fit(with_attribute, loader(n=2))

    def log_named(model):
        stray(torch.tensor(1.0))
        model.log("foo", stray, metric_attribute="bar")

    run = trainer(tmp_path)
    run.fit(_LogsInTrainingStep(log_named), loader(n=4))
    assert float(run.callback_metrics["foo"]) == 1.0


def test_on_step_logging_in_an_epoch_hook_raises(tmp_path):
    class Model(_LogsInTrainingStep):
        def on_train_epoch_end(self):
            self.log("v", 1.0, on_step=True)

    with pytest.raises(MisconfigurationException, match=r"on_step=True\)` in `on_train_epoch_end`"):
        trainer(tmp_path).fit(Model(lambda m: None), loader(n=2))


def test_log_without_a_trainer_warns_and_does_nothing():
    module = _LogsInTrainingStep(lambda m: None)
    with pytest.warns(UserWarning, match="reference is not registered on the model yet"):
        module.log("v", 1.0)


def test_test_returns_epoch_metrics_and_feeds_the_loggers(tmp_path):
    from helpers import BoringModel, MemoryLogger

    memory = MemoryLogger()
    model = BoringModel()
    returned = trainer(tmp_path, logger=memory).test(model, verbose=False)
    expected = torch.stack([model.loss(batch) for batch in loader(seed=2)]).mean()
    assert list(returned[0]) == ["test_loss"]
    assert returned[0]["test_loss"] == pytest.approx(float(expected))
    assert memory.metrics == [(0, {"test_loss": pytest.approx(float(expected)), "epoch": 0})]


def test_validation_inside_an_accumulation_window_writes_no_training_rows(tmp_path):
    """Training step values of a window still accumulating stay queued for the training log; a validation run in
    the middle of the window writes only its own values (training and evaluation keep separate queues)."""
    import volt
    from helpers import BoringModel, memory_logger_class, trainer

    class StepVal(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("val_step_loss", self.loss(batch), on_step=True, on_epoch=False)

    logger = memory_logger_class(volt.loggers.Logger)()
    # 4 batches, windows of 2, validation after batch 1 (inside the first window) and at the end
    trainer(tmp_path, logger=logger, accumulate_grad_batches=2, val_check_interval=1, log_every_n_steps=1,
            limit_val_batches=1, num_sanity_val_steps=0).fit(StepVal())
    for step, metrics in logger.metrics:
        assert not ("train_loss" in metrics and "val_step_loss" in metrics), logger.metrics
    train_steps = [step for step, metrics in logger.metrics if "train_loss" in metrics]
    assert train_steps == [0, 1]  # one row per optimizer step, never a row from an accumulating batch


def test_barebones_turns_self_log_into_a_warning(tmp_path):
    from helpers import BoringModel, trainer

    t = trainer(tmp_path, barebones=True, logger=None, enable_checkpointing=None, enable_progress_bar=None,
                enable_model_summary=None, max_steps=2)
    with pytest.warns(UserWarning, match=r"`Trainer\(barebones=True\)` is configured"):
        t.fit(BoringModel())
    assert "train_loss" not in t.callback_metrics
