"""User mistakes: each one gets a single clear error that names what is wrong and how to fix it."""
import os

import pytest
import torch

import volt
from helpers import BoringModel, loader, trainer
from volt.callbacks import EarlyStopping, ModelCheckpoint
from volt.utilities.exceptions import MisconfigurationException


def fit(tmp_path, model, **kwargs):
    kwargs.setdefault("limit_val_batches", 0)
    trainer(tmp_path, **kwargs).fit(model)


# ------------------------------------------------------------------------------------------ training_step


def test_missing_training_step(tmp_path):
    class NoStep(volt.LightningModule):
        def configure_optimizers(self):
            return None

    with pytest.raises(MisconfigurationException, match=r"No `training_step\(\)` method defined in NoStep"):
        trainer(tmp_path).fit(NoStep(), loader())


class Returns(BoringModel):
    def __init__(self, output):
        super().__init__()
        self.output = output

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        return self.output(loss)


@pytest.mark.parametrize("output, message", [
    (lambda loss: [loss], "must return a Tensor, a dict, or None .*it returned list"),
    (lambda loss: float(loss), "it returned float"),
    (lambda loss: {"total": loss}, r"the 'loss' key needs to be present \(keys: \['total'\]\). Put the loss under"),
    (lambda loss: {"loss": 1.0}, "The loss returned by `training_step` must be a Tensor, not float"),
    (lambda loss: loss.detach(), "does not require grad.*without `.detach\\(\\)`"),
])
def test_bad_training_step_outputs(tmp_path, output, message):
    with pytest.raises(MisconfigurationException, match=message):
        fit(tmp_path, Returns(output))


def test_training_step_without_return_warns_once(tmp_path, quiet_lightning):
    """A forgotten `return loss` trains nothing: warned once per fit, as Lightning does; the weights stay put."""
    model = Returns(lambda loss: None)
    before = [p.clone() for p in model.parameters()]
    with pytest.warns(UserWarning, match=r"`training_step` returned None \(epoch 0, batch 0\), so this batch "
                                         "trained nothing") as record:
        fit(tmp_path, model, max_epochs=2)
    assert sum("returned None" in str(w.message) for w in record) == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))

    class PlNone(quiet_lightning.LightningModule):  # the oracle warns too
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    from pytorch_lightning.loops.optimization.automatic import Closure

    Closure.warning_cache.clear()  # Lightning warns once per process; an earlier test may have seen it
    with pytest.warns(UserWarning, match="`training_step` returned `None`"):
        quiet_lightning.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False).fit(PlNone(), loader())


def test_training_step_without_return_on_several_ranks_is_an_error(tmp_path):
    """With several ranks a skipped step would leave the others waiting for its gradients: an error, as Lightning
    (a real two-rank run ends on it at once; here the world size is set as Lightning's own test sets it)."""
    run = trainer(tmp_path, max_steps=1)
    run.strategy.world_size = 2
    with pytest.raises(RuntimeError, match=r"returned None on rank 0 \(epoch 0, batch 0\). Skipping the "
                                           r"`training_step` .* is not supported: the other ranks would wait"):
        run.fit(Returns(lambda loss: None))


def test_optimizer_step_override_that_skips_the_closure(tmp_path):
    class Model(BoringModel):
        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
            optimizer.step()

    with pytest.raises(MisconfigurationException, match=r"The closure hasn't been executed: `optimizer_step` .*did "
                                                        r"not run the optimizer closure. Call "
                                                        r"`optimizer.step\(closure=optimizer_closure\)`"):
        fit(tmp_path, Model())


def test_an_optimizer_stepping_under_no_grad_still_trains(tmp_path):
    """Some optimizers (Hugging Face's AdamW) run `step` under no_grad: the closure's training_step gets grad."""
    class NoGradSGD(torch.optim.SGD):
        @torch.no_grad()
        def step(self, closure=None):
            closure()
            return super().step()

    class Model(BoringModel):
        def configure_optimizers(self):
            return NoGradSGD(self.parameters(), lr=0.1)

    model = Model()
    before = [p.clone() for p in model.parameters()]
    fit(tmp_path, model)
    assert not any(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ------------------------------------------------------------------------------------------ optimizers


class Optimizers(BoringModel):
    def __init__(self, make):
        super().__init__()
        self.make = make

    def configure_optimizers(self):
        return self.make(self)


@pytest.mark.parametrize("make, message", [
    (lambda m: "adam", r"Unknown configuration for model optimizers: got str.\n`configure_optimizers` must return "
                       r"one of:\n  \* an optimizer"),
    (lambda m: [1, 2], r"got list of \['int', 'int'\]"),
    (lambda m: {"lr_scheduler": None}, "The dict returned by `configure_optimizers` has no 'optimizer' key"),
])
def test_wrong_configure_optimizers_forms(tmp_path, make, message):
    with pytest.raises(MisconfigurationException, match=message):
        fit(tmp_path, Optimizers(make))


def test_multiple_optimizers_need_manual_optimization(tmp_path):
    def two(model):
        return [torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.Adam(model.parameters())]

    with pytest.raises(RuntimeError, match="multiple optimizers is only supported with manual "
                                                        r"optimization. Set `self.automatic_optimization = False`"):
        fit(tmp_path, Optimizers(two))


def test_the_1x_optimizer_idx_argument_needs_manual_optimization(tmp_path):
    class Model(BoringModel):
        def training_step(self, batch, batch_idx, optimizer_idx):
            return self.loss(batch)

    with pytest.raises(RuntimeError, match="Remove the `optimizer_idx` argument from `training_step`, "
                                                        "set `self.automatic_optimization = False`"):
        fit(tmp_path, Model())


# ------------------------------------------------------------------------------------------ what is passed in


@pytest.mark.parametrize("entry", ["fit", "validate", "test", "predict"])
def test_model_that_is_not_a_lightning_module(tmp_path, entry):
    with pytest.raises(TypeError, match=rf"`Trainer.{entry}`: `model` must be a `LightningModule` .*got `Linear`. "
                                        "Subclass `volt.LightningModule`"):
        getattr(trainer(tmp_path), entry)(torch.nn.Linear(1, 1), loader())


def test_no_training_data(tmp_path):
    class NoData(BoringModel):
        train_dataloader = volt.LightningModule.train_dataloader

    with pytest.raises(MisconfigurationException, match="`train_dataloader` must be implemented to be used with the "
                                                        "Lightning Trainer: define `train_dataloader\\(self\\)`"):
        fit(tmp_path, NoData())


def test_datamodule_that_is_not_a_datamodule(tmp_path):
    with pytest.raises(TypeError, match="`datamodule` must be a LightningDataModule, got list"):
        trainer(tmp_path).fit(BoringModel(), datamodule=[loader()])


def test_eval_without_a_model(tmp_path):
    with pytest.raises(TypeError, match=r"`Trainer.test\(\)` requires a `LightningModule` when none is attached"):
        trainer(tmp_path).test()


# ------------------------------------------------------------------------------------------ logging and monitors


def test_log_in_a_hook_that_cannot_log(tmp_path):
    class Model(BoringModel):
        def on_fit_start(self):
            self.log("x", 1.0)

    with pytest.raises(MisconfigurationException, match=r"You can't `self.log\(\)` inside `on_fit_start`"):
        fit(tmp_path, Model())


def test_checkpoint_monitor_never_logged(tmp_path):
    with pytest.raises(MisconfigurationException, match=r"`ModelCheckpoint\(monitor='val_acc'\)` could not find the "
                                                        r"monitored key in the returned metrics: \[.*'val_loss'.*\]. "
                                                        r"HINT: Did you call `log\('val_acc', value\)`"):
        fit(tmp_path, BoringModel(), limit_val_batches=1, enable_checkpointing=True,
            callbacks=[ModelCheckpoint(monitor="val_acc")])


def test_early_stopping_monitor_never_logged(tmp_path):
    with pytest.raises(RuntimeError, match="Early stopping conditioned on metric `val_acc` which is not available"):
        fit(tmp_path, BoringModel(), limit_val_batches=1, callbacks=[EarlyStopping(monitor="val_acc")])


def test_plateau_monitor_never_logged(tmp_path):
    def plateau(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": scheduler, "monitor": "val_acc"}

    with pytest.raises(MisconfigurationException, match="ReduceLROnPlateau conditioned on metric val_acc which is not "
                                                        r"available. Available metrics are: \['train_loss'"):
        fit(tmp_path, Optimizers(plateau), limit_val_batches=1)


# ------------------------------------------------------------------------------------------ numerics


def test_nan_loss_with_detect_anomaly(tmp_path):
    """torch's anomaly mode names the backward op that made a NaN (as in Lightning); a NaN loss whose gradients stay
    finite (a NaN added to it) is stopped by volt after the backward."""
    with pytest.raises(RuntimeError, match="'MulBackward0' returned nan values in its 0th output"):
        fit(tmp_path, Returns(lambda loss: loss * float("nan")), detect_anomaly=True)
    with pytest.raises(ValueError, match=r"The loss is nan at epoch 0, batch 0 \(global step 0\); `detect_anomaly="
                                         "True` stops training here. Check the inputs"):
        fit(tmp_path, Returns(lambda loss: loss + float("nan")), detect_anomaly=True)


class NanFrom(BoringModel):
    """The loss becomes NaN from global step `start` on (as after a diverging update)."""

    def __init__(self, start):
        super().__init__()
        self.start = start

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        return loss * float("nan") if self.global_step >= self.start else loss


def test_non_finite_loss_warns_once_with_where(tmp_path):
    with pytest.warns(UserWarning, match=r"The training loss is nan at epoch 0, batch 3 \(global step 4\). The loss "
                                         r"is checked every 2 steps \(`log_every_n_steps`\) and at each epoch end, so "
                                         "it may have become non-finite a few steps earlier") as record:
        fit(tmp_path, NanFrom(start=2), max_epochs=3, log_every_n_steps=2)
    assert sum("The training loss is" in str(w.message) for w in record) == 1


def test_non_finite_loss_check_adds_no_per_step_sync(tmp_path, monkeypatch):
    """The loss is read back from the device only where step metrics are written and at each epoch end: with
    `log_every_n_steps=50`, 3 epochs of 4 steps check 3 times, not 12."""
    calls = []
    real_isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda tensor: calls.append(1) or real_isfinite(tensor))
    fit(tmp_path, BoringModel(), max_epochs=3, log_every_n_steps=50)
    assert len(calls) == 3


def test_nan_gradient_with_detect_anomaly(tmp_path):
    """A finite loss whose backward produces NaN: torch's anomaly mode names the backward function."""
    with pytest.raises(RuntimeError, match="returned nan values"):
        fit(tmp_path, Returns(lambda loss: loss + torch.sqrt(loss * 0)), detect_anomaly=True)


# ------------------------------------------------------------------------------------------ checkpoints


def test_ckpt_path_best_without_a_best_checkpoint(tmp_path):
    with pytest.raises(ValueError, match=r'`.test\(ckpt_path="best"\)` is set but `ModelCheckpoint` is not configured'):
        trainer(tmp_path).test(BoringModel(), ckpt_path="best")


def test_ckpt_path_that_does_not_exist(tmp_path):
    with pytest.raises((FileNotFoundError, OSError), match="missing.ckpt"):
        trainer(tmp_path).fit(BoringModel(), ckpt_path=tmp_path / "missing.ckpt")


# ------------------------------------------------------------------------------------------ interrupts


def test_keyboard_interrupt_in_a_callback_ends_with_exit_status_1_after_cleanup(tmp_path, quiet_lightning):
    """As in Lightning: the exception hooks run and the loggers finalize as failed, then SystemExit(1)."""
    from helpers import boring_model_class, memory_logger_class

    outcomes = {}
    for name, pl in (("volt", volt), ("lightning", quiet_lightning)):
        calls = []

        class Interrupting(pl.Callback):
            def on_train_batch_end(self, *args):
                raise KeyboardInterrupt

            def on_exception(self, trainer, pl_module, exception):
                calls.append(type(exception).__name__)

        logger = memory_logger_class(pl.loggers.Logger)()
        run = pl.Trainer(default_root_dir=tmp_path / name, logger=logger, callbacks=[Interrupting()], max_epochs=1,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        model = BoringModel() if name == "volt" else boring_model_class(pl)()
        with pytest.raises(SystemExit) as stop:
            run.fit(model, loader())
        outcomes[name] = (stop.value.code, calls, logger.finalized)
    assert outcomes["volt"] == outcomes["lightning"] == (1, ["KeyboardInterrupt"], ["failed"])


def test_stop_iteration_raised_in_a_hook_is_an_error(tmp_path):
    """Lightning's training loop takes a StopIteration from a callback for the end of the data and ends the epoch
    silently; in volt it is the error it is (a mocked clock or iterator that ran dry, a bug in a hook)."""

    class RunsDry(volt.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 2:
                next(iter([]))

    run = trainer(tmp_path, callbacks=[RunsDry()], limit_val_batches=0)
    with pytest.raises(StopIteration):
        run.fit(BoringModel(), loader())
    assert run.global_step == 2



# ------------------------------------------------------------------------------------------ folders that cannot be written


def test_checkpoint_folder_that_cannot_be_written_fails_at_fit_start(tmp_path):
    """Found when fit starts, before any training (it was found at the first save, after an epoch)."""
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder is expected")
    model = BoringModel()
    with pytest.raises(PermissionError, match=r"The checkpoint folder \(ModelCheckpoint's dirpath\) '.*results/ckpts' "
                                              r"cannot be written: '.*results' is a file, not a folder. Choose a folder"):
        fit(tmp_path, model, callbacks=[ModelCheckpoint(dirpath=blocker / "ckpts")], enable_checkpointing=True)
    assert model.global_step == 0
    fit(tmp_path, BoringModel(), callbacks=[ModelCheckpoint(dirpath=blocker / "ckpts", save_top_k=0)],
        enable_checkpointing=True)  # saves nothing: nothing to check


def test_log_folder_that_cannot_be_written_fails_at_fit_start(tmp_path):
    from volt.loggers import CSVLogger

    (tmp_path / "logs").write_text("a file")
    with pytest.raises(PermissionError, match=r"The log folder of CSVLogger '.*logs/run/version_0' cannot be written: "
                                              "'.*logs' is a file, not a folder"):
        fit(tmp_path, BoringModel(), logger=CSVLogger(tmp_path / "logs", name="run"))


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux's sysfs")
def test_checkpoint_folder_on_a_filesystem_nobody_may_write_fails_at_fit_start(tmp_path):
    with pytest.raises(PermissionError, match=r"'/sys/kernel/volt-checkpoints' cannot be written: cannot create files "
                                              r"in '/sys/kernel' \(Permission denied\)"):
        fit(tmp_path, BoringModel(), callbacks=[ModelCheckpoint(dirpath="/sys/kernel/volt-checkpoints")],
            enable_checkpointing=True)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_checkpoint_folder_fails_at_fit_start(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=r"cannot create files in '.*locked' \(Permission denied\)"):
            fit(tmp_path, BoringModel(), callbacks=[ModelCheckpoint(dirpath=locked)], enable_checkpointing=True)
    finally:
        locked.chmod(0o700)
