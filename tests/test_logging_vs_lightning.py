"""`self.log` and the logger writes, compared call by call with pytorch-lightning 2.6.6 (the test oracle): the x axis
and keys of evaluation step metrics, several dataloaders, the builtin reductions, TensorBoard's hp_metric in each
stage, logging from callbacks, torchmetrics objects across Trainer calls, and one name logged with two sets of
options."""
import glob

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import volt
from helpers import loader, memory_logger_class

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

QUIET = dict(enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def frameworks(quiet_lightning):
    return (("pl", quiet_lightning), ("volt", volt))


def both(quiet_lightning, run):
    """`run(pl)` under Lightning and volt."""
    return {name: run(pl) for name, pl in frameworks(quiet_lightning)}


def logging_module(pl):
    class Logging(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("val_loss", float(batch_idx + 10 * dataloader_idx), on_step=True, on_epoch=True)

        def test_step(self, batch, batch_idx, dataloader_idx=0):
            self.log("test_loss", float(batch_idx + 10 * dataloader_idx), on_step=True, on_epoch=True)
            self.log("test_max", float(batch_idx), reduce_fx=max)
            self.log("test_sum", float(batch_idx), reduce_fx=sum)
            self.log("test_min", float(batch_idx), reduce_fx=min)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Logging


def fit_validate_test(pl, root):
    """Each Trainer call's logger calls (step, sorted keys, values) and its callback_metrics."""
    pl.seed_everything(0, verbose=False)
    logger = memory_logger_class(pl.loggers.Logger)()
    trainer = pl.Trainer(max_epochs=2, logger=logger, log_every_n_steps=1, num_sanity_val_steps=1,
                         default_root_dir=root, **QUIET)
    model = logging_module(pl)()
    calls = []

    def record(result=None):
        calls.append(([(step, {k: round(v, 5) for k, v in sorted(m.items())}) for step, m in logger.metrics],
                      sorted(trainer.callback_metrics), result))
        logger.metrics.clear()

    trainer.fit(model, loader(n=4), loader(n=4))
    record()
    record(trainer.validate(model, loader(n=6), verbose=False))
    record(trainer.test(model, loader(n=6), verbose=False))
    record(trainer.test(model, [loader(n=4), loader(n=6)], verbose=False))
    return calls


def test_logger_calls_as_lightning_in_fit_validate_and_test(tmp_path, quiet_lightning):
    """Evaluation step metrics: x axis = the batch's position in its dataloader (restarting for each dataloader
    and each Trainer call, continuing over a fit's validations), no `epoch` added; several dataloaders give
    `test_loss_step/dataloader_idx_0` (fork suffix first); `reduce_fx=max/sum/min` builtins are accepted."""
    runs = both(quiet_lightning, lambda pl: fit_validate_test(pl, tmp_path))
    assert runs["volt"] == runs["pl"]
    fit, validate, test, test_two = runs["volt"]
    assert [step for step, m in fit[0] if "val_loss_step" in m] == [0, 1, 2, 3]
    assert all("epoch" not in m for _, m in validate[0][:3]) and validate[0][0] == (0, {"val_loss_step": 0.0})
    assert test[2] == [{"test_loss_epoch": 1.0, "test_max": 2.0, "test_min": 0.0, "test_sum": 3.0}]
    steps = [(step, list(m)) for step, m in test_two[0][:5]]
    assert steps == [(0, ["test_loss_step/dataloader_idx_0"]), (1, ["test_loss_step/dataloader_idx_0"]),
                     (0, ["test_loss_step/dataloader_idx_1"]), (1, ["test_loss_step/dataloader_idx_1"]),
                     (2, ["test_loss_step/dataloader_idx_1"])]
    assert "test_loss_epoch/dataloader_idx_1" in test_two[1] and "test_loss/dataloader_idx_1" in test_two[1]


def accuracy_module(pl):
    torchmetrics = pytest.importorskip("torchmetrics")

    class Accuracy(pl.LightningModule):
        """Always predicts class 0; logs a torchmetrics accuracy in validation."""

        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 2)
            self.accuracy = torchmetrics.classification.MulticlassAccuracy(num_classes=2, average="micro")

        def forward(self, x):
            return torch.tensor([[10.0, 0.0]]).expand(len(x), 2) + 0 * self.layer(x)

        def training_step(self, batch, batch_idx):
            return self(batch[0]).sum()

        def validation_step(self, batch, batch_idx):
            self.accuracy(self(batch[0]), batch[1])
            self.log("accuracy", self.accuracy)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    return Accuracy


def labelled(label: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.ones(8, 1), torch.full((8,), label)), batch_size=4)


def test_torchmetrics_state_does_not_carry_over_into_a_later_call(quiet_lightning):
    """All right in fit's validation, all wrong in a later validate: 0.0 (it was 0.5, the state kept from fit)."""
    def run(pl):
        model = accuracy_module(pl)()
        trainer = pl.Trainer(max_epochs=1, logger=False, num_sanity_val_steps=0, **QUIET)
        trainer.fit(model, labelled(0), labelled(0))
        return float(trainer.callback_metrics["accuracy"]), trainer.validate(model, labelled(1), verbose=False)

    runs = both(quiet_lightning, run)
    assert runs["volt"] == runs["pl"] == (1.0, [{"accuracy": 0.0}])


def test_hp_metric_in_every_stage_as_lightning(tmp_path, quiet_lightning):
    """TensorBoard gets the hp_metric placeholder at step 0 in the event file of each of fit, validate, test and
    predict (volt wrote it in fit only)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def run(pl):
        class WithHparams(logging_module(pl)):
            def __init__(self, lr=0.1):
                super().__init__()
                self.save_hyperparameters()

            def predict_step(self, batch, batch_idx):
                return batch_idx

        root = tmp_path / pl.__name__
        trainer = pl.Trainer(max_epochs=1, logger=pl.loggers.TensorBoardLogger(str(root)), default_root_dir=root,
                             num_sanity_val_steps=0, **QUIET)
        model = WithHparams()
        trainer.fit(model, loader(n=4), loader(n=4))
        trainer.validate(model, loader(n=2), verbose=False)
        trainer.test(model, loader(n=2), verbose=False)
        trainer.predict(model, loader(n=2))
        files = sorted(glob.glob(str(root / "lightning_logs" / "version_0" / "events.out.tfevents.*")),
                       key=lambda path: int(path.rsplit(".", 1)[1]))
        points = []
        for path in files:
            events = EventAccumulator(path)
            events.Reload()
            points.append([(e.step, e.value) for e in events.Scalars("hp_metric")])
        return points

    runs = both(quiet_lightning, run)
    assert runs["volt"] == runs["pl"] == [[(0, -1.0)]] * 4


def test_pl_module_log_from_callback_hooks_as_lightning(quiet_lightning):
    """`pl_module.log` in a callback hook takes the hook's defaults (step values in batch hooks, epoch values in
    epoch hooks) and is refused where Lightning refuses it."""
    hooks = ["on_train_start", "on_train_epoch_start", "on_train_batch_start", "on_before_backward",
             "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad", "on_train_batch_end",
             "on_train_epoch_end", "on_validation_start", "on_validation_epoch_start", "on_validation_batch_start",
             "on_validation_batch_end", "on_validation_epoch_end", "on_test_batch_end", "on_test_epoch_end",
             "on_validation_end", "on_train_end", "on_fit_start", "on_sanity_check_start", "on_test_end",
             "on_predict_batch_end"]

    def run(pl):
        refused = {}

        def hook(name):
            def log(self, trainer, pl_module, *args):
                try:
                    pl_module.log(name, float(trainer.global_step))
                except Exception as error:  # noqa: BLE001 - the refusal is what is compared
                    refused[name] = type(error).__name__
            return log

        class Logging(logging_module(pl)):
            def predict_step(self, batch, batch_idx):
                return batch_idx

        pl.seed_everything(0, verbose=False)
        logger = memory_logger_class(pl.loggers.Logger)()
        callback = type("LogEverywhere", (pl.Callback,), {name: hook(name) for name in hooks})()
        trainer = pl.Trainer(max_epochs=1, logger=logger, log_every_n_steps=1, callbacks=[callback],
                             num_sanity_val_steps=1, **QUIET)
        model = Logging()
        trainer.fit(model, loader(n=4), loader(n=4))
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        trainer.test(model, loader(n=2), verbose=False)
        trainer.predict(model, loader(n=2))
        return sorted(refused.items()), metrics, logger.metrics

    runs = both(quiet_lightning, run)
    assert runs["volt"][0] == runs["pl"][0]
    assert runs["volt"][1] == pytest.approx(runs["pl"][1])
    assert [(step, sorted(m)) for step, m in runs["volt"][2]] == [(step, sorted(m)) for step, m in runs["pl"][2]]
    assert dict(runs["volt"][0])["on_validation_end"] == "MisconfigurationException"
    assert runs["volt"][1]["on_train_batch_start"] == 1.0 and runs["volt"][1]["on_train_batch_end"] == 2.0


@pytest.mark.parametrize("second_call, message", [
    (dict(on_epoch=True), "on_epoch=False first, then on_epoch=True"),
    (dict(prog_bar=True), "prog_bar=False first, then prog_bar=True"),
    (dict(reduce_fx="sum"), "reduce_fx='mean' first, then reduce_fx='sum'"),
])
def test_one_name_logged_with_different_options_in_a_step_raises(second_call, message):
    class Twice(logging_module(volt)):
        def training_step(self, batch, batch_idx):
            self.log("x", 1.0)
            self.log("x", 2.0, **second_call)
            return super().training_step(batch, batch_idx)

    trainer = volt.Trainer(max_epochs=1, logger=False, **QUIET)
    with pytest.raises(volt.utilities.exceptions.MisconfigurationException,
                       match=r"You called `self.log\(x, ...\)` twice in `training_step` with different arguments: "
                             + message.replace("(", r"\(")):
        trainer.fit(Twice(), loader(n=4))


def test_one_name_logged_again_with_the_same_options_once_defaults_are_filled_in():
    class Consistent(logging_module(volt)):
        def training_step(self, batch, batch_idx):
            self.log("x", 1.0)
            self.log("x", 2.0, on_step=True, on_epoch=False, reduce_fx=torch.mean)
            return super().training_step(batch, batch_idx)

    trainer = volt.Trainer(max_epochs=1, logger=False, **QUIET)
    trainer.fit(Consistent(), loader(n=4))
    assert float(trainer.callback_metrics["x"]) == 2.0


def test_different_options_in_different_batches_also_raise(quiet_lightning):
    """A name keeps its options for the whole epoch: on_step only in the first batch is refused by both."""
    def run(pl):
        class Switching(logging_module(pl)):
            def training_step(self, batch, batch_idx):
                self.log("x", 1.0, on_step=batch_idx == 0, on_epoch=True)
                return super().training_step(batch, batch_idx)

        with pytest.raises(Exception, match="twice in `training_step` with different arguments") as error:
            pl.Trainer(max_epochs=1, logger=False, **QUIET).fit(Switching(), loader(n=4))
        return type(error.value).__name__

    assert both(quiet_lightning, run) == {"pl": "MisconfigurationException", "volt": "MisconfigurationException"}


@pytest.mark.parametrize("compute_groups", [True, False])
def test_metric_collection_and_logger_true_without_a_logger_as_lightning(quiet_lightning, compute_groups):
    """`log_dict(MetricCollection)` hands a compute group's shared state over by reference, not copied at every log
    (as Lightning, same values); `self.log(..., logger=True)` with no logger warns and still fills logged_metrics."""
    torchmetrics = pytest.importorskip("torchmetrics")
    from torchmetrics.classification import MulticlassAccuracy, MulticlassPrecision

    def run(pl):
        copied = []

        class Collection(torchmetrics.MetricCollection):
            def items(self, keep_base=False, copy_state=True):
                copied.append(copy_state)
                return super().items(keep_base=keep_base, copy_state=copy_state)

        class Metrics(logging_module(pl)):
            def __init__(self):
                super().__init__()
                self.metrics = Collection([MulticlassAccuracy(num_classes=3), MulticlassPrecision(num_classes=3)],
                                          compute_groups=compute_groups)

            def training_step(self, batch, batch_idx):
                self.metrics(torch.tensor([0, 1, 2, batch_idx % 3]), torch.tensor([0, 1, 1, 1]))
                self.log_dict(self.metrics, on_step=True, on_epoch=True)
                self.log("epoch", -batch_idx, logger=True)
                return super().training_step(batch, batch_idx)

        pl.seed_everything(0, verbose=False)
        trainer = pl.Trainer(max_epochs=1, logger=False, **QUIET)
        with pytest.warns(UserWarning, match=r"log\('epoch', ..., logger=True\)` but have no logger"):
            trainer.fit(Metrics(), loader(n=8))
        return set(copied), {key: float(value) for key, value in trainer.logged_metrics.items()}

    runs = both(quiet_lightning, run)
    assert runs["volt"] == runs["pl"]
    assert (True in runs["volt"][0]) is not compute_groups and runs["volt"][1]["epoch"] == -3  # the last batch's


def test_metric_dicts_hold_what_lightning_holds(quiet_lightning):
    """`progress_bar_metrics` holds Python floats (made when read; the bar reads the tensors), the other two dicts
    float tensors, also for an integer tensor logged; a one-element tensor is squeezed; and a value written into
    `callback_metrics` before any run stays there (what a test of a callback relies on)."""
    def run(pl):
        class Logging(logging_module(pl)):
            def training_step(self, batch, batch_idx):
                loss = super().training_step(batch, batch_idx)
                self.log("count", torch.tensor(3), prog_bar=True)
                self.log("one", loss.detach().view(1), on_epoch=True, prog_bar=True)
                return loss

            def on_train_epoch_end(self):
                self.log("steps", torch.tensor(self.global_step), prog_bar=True)

        trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                             logger=False, **QUIET)
        trainer.callback_metrics["before"] = torch.tensor([[1.0]])
        before = sorted(trainer.callback_metrics)
        trainer.fit(Logging(), loader(n=4), loader(n=2))
        return before, {what: {key: (type(value).__name__, str(getattr(value, "dtype", "")), getattr(value, "ndim", 0))
                               for key, value in sorted(getattr(trainer, what).items())}
                        for what in ("callback_metrics", "logged_metrics", "progress_bar_metrics")}

    runs = both(quiet_lightning, run)
    assert runs["volt"] == runs["pl"]
    assert runs["volt"][0] == ["before"]
    assert runs["volt"][1]["progress_bar_metrics"]["count"] == ("float", "", 0)
    assert runs["volt"][1]["callback_metrics"]["count"] == ("Tensor", "torch.float32", 0)


def test_tensorboard_writes_hyperparameters_at_once_as_lightning(tmp_path, quiet_lightning):
    """`log_hyperparams` writes the hp_metric placeholder at once (volt wrote it with the first metrics): the
    version folder holds an event file right away, and a subclass's `log_metrics` sees hp_metric first in a fit."""
    import os

    def run(pl):
        root = tmp_path / pl.__name__
        calls = []

        class Recording(pl.loggers.TensorBoardLogger):
            def log_metrics(self, metrics, step=None):
                calls.append((sorted(metrics), step))
                super().log_metrics(metrics, step)

        direct = pl.loggers.TensorBoardLogger(str(root), name="direct", version="2020-02-05")
        direct.log_hyperparams({"a": 1})
        folder = os.listdir(root / "direct" / "2020-02-05")

        class WithHparams(logging_module(pl)):
            def __init__(self, lr=0.1):
                super().__init__()
                self.save_hyperparameters()

        trainer = pl.Trainer(max_steps=1, logger=Recording(str(root)), default_root_dir=root, log_every_n_steps=1,
                             **QUIET)
        trainer.fit(WithHparams(), loader(n=2))
        return [name.split(".")[0] for name in folder], calls

    runs = both(quiet_lightning, run)
    assert runs["volt"] == runs["pl"]
    assert runs["volt"][1][0] == (["hp_metric"], None)
