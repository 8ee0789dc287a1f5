"""Trainer behaviour that Lightning programs rely on, run under volt and under pytorch-lightning 2.6.6 (the oracle):
argument checks, time-based validation, `init_module`, `PL_TRAINER_*` defaults, `device_ids`, evaluation samplers'
`set_epoch`, and `.trainer` on nested LightningModules."""
import time
from datetime import timedelta

import pytest
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

import volt
from volt.utilities.exceptions import MisconfigurationException


def module_class(pl):
    """A tiny regression module that records which batches each stage ran, and when validation ran."""

    class Recorder(pl.LightningModule):
        def __init__(self, clock=None):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)
            self.clock = clock  # a list holding a fake time.monotonic(), advanced one second per training step
            self.validated_at = []  # (epoch, global_step) of each validation run outside the sanity check

        def training_step(self, batch, batch_idx):
            if self.clock is not None:
                self.clock[0] += 1.0
            return self.layer(batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            if batch_idx == 0 and not self.trainer.sanity_checking:
                self.validated_at.append((self.current_epoch, self.global_step))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Recorder


def data(n=16):
    return DataLoader(TensorDataset(torch.randn(n, 2, generator=torch.Generator().manual_seed(0))), batch_size=2)


def quiet_trainer(pl, tmp_path, **kwargs):
    options = dict(default_root_dir=tmp_path, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    options.update(kwargs)
    return pl.Trainer(**options)


@pytest.mark.parametrize("interval", ["00:00:00:03", timedelta(seconds=3), {"seconds": 3}])
def test_time_based_val_check_interval_as_lightning(interval, tmp_path, monkeypatch, quiet_lightning):
    """A wall-clock `val_check_interval` validates once the interval has passed since training started or the last
    validation ended, not at the epoch end by itself; it crashed in volt. A fake clock makes each step 1 s."""
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    runs = {}
    for name, pl in (("volt", volt), ("pl", quiet_lightning)):
        model = module_class(pl)(clock)
        quiet_trainer(pl, tmp_path / name, max_epochs=2, val_check_interval=interval).fit(model, data(), data(4))
        runs[name] = model.validated_at
    assert runs["volt"] == runs["pl"] == [(0, 3), (0, 6), (1, 9), (1, 12), (1, 15)]


@pytest.mark.parametrize("value, message", [
    ("1:30", r"val_check_interval='1:30'\)` is not a duration: use 'DD:HH:MM:SS'"),
    ({"hour": 1}, r"is not a duration \(.*hour.*\): use 'DD:HH:MM:SS'"),
    (timedelta(0), "must be a positive duration"),
])
def test_time_based_val_check_interval_errors(value, message):
    with pytest.raises(MisconfigurationException, match=message):
        volt.Trainer(logger=False, val_check_interval=value)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(max_epochs=-100), MisconfigurationException,
     r"max_epochs=-100\)` is invalid: `max_epochs` must be a non-negative integer or -1 \(-1: no limit\)"),
    (dict(max_epochs="ten"), MisconfigurationException, r"max_epochs='ten'\)` is invalid: .* should be an integer"),
    (dict(min_epochs=-1), MisconfigurationException, r"min_epochs=-1\)` is invalid: .* non-negative integer, or None"),
    (dict(gradient_clip_val=(1, 2)), TypeError, r"gradient_clip_val=\(1, 2\)\)` is invalid: .* an int or a float"),
    (dict(check_val_every_n_epoch=1.2), MisconfigurationException,
     r"check_val_every_n_epoch=1.2\)` is invalid: `check_val_every_n_epoch` should be an integer"),
    (dict(limit_train_batches=1.2), MisconfigurationException, r"limit_train_batches=1.2\)` must be a fraction"),
    (dict(limit_val_batches="all"), MisconfigurationException, r"limit_val_batches='all'\)` must be a fraction"),
    (dict(val_check_interval=1.5), MisconfigurationException, r"val_check_interval=1.5\)` must be a fraction of"),
    (dict(num_sanity_val_steps=-2), MisconfigurationException,
     r"num_sanity_val_steps=-2\)` is invalid: .* must be a non-negative integer or -1"),
    (dict(reload_dataloaders_every_n_epochs=-1), MisconfigurationException,
     r"reload_dataloaders_every_n_epochs=-1\)` is invalid: `reload_dataloaders_every_n_epochs` should be an int >= 0"),
    (dict(barebones=True, num_sanity_val_steps=2), ValueError,
     r"barebones=True, num_sanity_val_steps=2\)` was passed. Sanity checking can impact raw speed .*: remove"),
    (dict(barebones=True, profiler="simple"), ValueError, r"profiler='simple'\)` was passed. Profiling"),
    (dict(barebones=True, detect_anomaly=True), ValueError, r"detect_anomaly=True\)` was passed. Anomaly detection"),
    (dict(barebones=True, fast_dev_run=True), ValueError, r"fast_dev_run=True\)` was passed. The development run"),
    (dict(barebones=True, log_every_n_steps=3), ValueError, r"log_every_n_steps=3\)` was passed. Logging"),
])
def test_bad_arguments_fail_at_construction(kwargs, error, message, quiet_lightning):
    """Values that trained silently with a wrong meaning are refused when the Trainer is made, with one message.
    Lightning refuses the same ones (except `max_epochs='ten'`, `min_epochs=-1`, `num_sanity_val_steps=-2`, which it
    accepts and misbehaves on later)."""
    with pytest.raises(error, match=message):
        volt.Trainer(logger=False, **kwargs)
    lenient = {"max_epochs", "min_epochs", "num_sanity_val_steps"}
    if not lenient.intersection(kwargs) and "limit_val_batches" not in kwargs:
        with pytest.raises(Exception):
            quiet_lightning.Trainer(logger=False, **kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(limit_train_batches=2.0, val_check_interval=3.0),
    dict(fast_dev_run=True, limit_val_batches=0, num_sanity_val_steps=5, val_check_interval=0.5),
    dict(fast_dev_run=3),
    dict(overfit_batches=3),
    dict(barebones=True),
])
def test_accepted_arguments_read_back_as_lightning(kwargs, quiet_lightning):
    """What the Trainer reports after construction: whole floats are batch counts, `fast_dev_run` overrides the
    limits, the sanity check and the validation interval, `overfit_batches` sets both limits."""
    names = ["limit_train_batches", "limit_val_batches", "limit_test_batches", "num_sanity_val_steps",
             "max_steps", "max_epochs", "fast_dev_run", "log_every_n_steps"]
    if "overfit_batches" not in kwargs:
        names.append("val_check_interval")
    ours, theirs = volt.Trainer(logger=False, **kwargs), quiet_lightning.Trainer(logger=False, **kwargs)
    assert {name: getattr(ours, name) for name in names} == {name: getattr(theirs, name) for name in names}
    assert ours.max_epochs == theirs.max_epochs


def test_trainer_defaults_from_pl_trainer_environment(monkeypatch, quiet_lightning):
    """`PL_TRAINER_<ARG>` sets a default (read as a Python literal), an explicit argument wins, and a subclass reads
    `PL_<SUBCLASSNAME>_<ARG>`, as in Lightning; CI jobs set e.g. PL_TRAINER_MAX_EPOCHS this way."""
    monkeypatch.setenv("PL_TRAINER_MAX_EPOCHS", "3")
    monkeypatch.setenv("PL_TRAINER_LOGGER", "False")
    monkeypatch.setenv("PL_TRAINER_ACCELERATOR", "cpu")
    monkeypatch.setenv("PL_TRAINER_LIMIT_VAL_BATCHES", "0.5")
    monkeypatch.setenv("PL_SHORTTRAINER_MAX_EPOCHS", "7")
    for pl in (volt, quiet_lightning):
        trainer = pl.Trainer()
        assert (trainer.max_epochs, trainer.loggers, trainer.limit_val_batches) == (3, [], 0.5)
        assert type(trainer.accelerator).__name__ == "CPUAccelerator"
        assert pl.Trainer(max_epochs=5).max_epochs == 5

        class ShortTrainer(pl.Trainer):
            pass

        assert ShortTrainer(logger=False).max_epochs == 7


def test_device_ids_count_processes_on_cpu(quiet_lightning):
    for pl in (volt, quiet_lightning):
        assert pl.Trainer(logger=False, accelerator="cpu", devices=2).device_ids == [0, 1]
        assert pl.Trainer(logger=False, accelerator="cpu").device_ids == [0]


class RecordingSampler(Sampler):
    def __init__(self, n):
        self.n, self.epochs = n, []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        return self.n


def test_validation_sampler_gets_set_epoch_as_lightning(tmp_path, quiet_lightning):
    """Samplers of the validation loader see `set_epoch` before each validation run (some shuffle by epoch), also
    in the sanity check and a later `validate`."""
    seen = {}
    for name, pl in (("volt", volt), ("pl", quiet_lightning)):
        dataset = TensorDataset(torch.randn(4, 2))
        sampler = RecordingSampler(4)
        trainer = quiet_trainer(pl, tmp_path / name, max_epochs=3, num_sanity_val_steps=1)
        model = module_class(pl)()
        trainer.fit(model, data(4), DataLoader(dataset, sampler=sampler, batch_size=2))
        trainer.validate(model, DataLoader(dataset, sampler=sampler, batch_size=2), verbose=False)
        seen[name] = sampler.epochs
    assert seen["volt"] == seen["pl"] and seen["volt"][-1] == 3


def test_nested_lightning_modules_get_the_trainer(tmp_path, quiet_lightning):
    """A LightningModule used as a submodule (an encoder, a teacher) reads `self.trainer`, `self.current_epoch` and
    `self.log` through the Trainer, as in Lightning."""
    for name, pl in (("volt", volt), ("pl", quiet_lightning)):
        Recorder = module_class(pl)

        class Outer(Recorder):
            def __init__(self):
                super().__init__()
                self.inner = Recorder()

        model = Outer()
        trainer = quiet_trainer(pl, tmp_path / name, max_epochs=1, limit_val_batches=0)
        trainer.fit(model, data(4))
        assert model.inner.trainer is trainer and model.inner.current_epoch == 1, name


def test_init_module_creates_on_device_in_precision_and_can_skip_init(tmp_path, quiet_lightning):
    """`with trainer.init_module():` makes the module's tensors in the true precision's dtype; `empty_init=True`
    leaves out torch.nn.init (weights a checkpoint will overwrite), as in Lightning."""

    class Initialised(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(3))
            torch.nn.init.constant_(self.weight, 5.0)

    for pl in (volt, quiet_lightning):
        trainer = pl.Trainer(logger=False, accelerator="cpu", precision="64-true")
        with trainer.init_module():
            module = Initialised()
        assert module.weight.dtype == torch.float64 and module.weight.tolist() == [5.0] * 3
        with trainer.init_module(empty_init=True):
            skipped = Initialised()
        assert skipped.weight.tolist() == [0.0] * 3
        assert torch.get_default_dtype() == torch.float32
        with pl.Trainer(logger=False, accelerator="cpu").init_module():
            assert Initialised().weight.dtype == torch.float32


def test_restoring_messages_as_lightning(tmp_path, caplog, quiet_lightning):
    """Resuming says where the states come from and when they are all back, in Lightning's words (scripts and log
    scrapers look for them)."""
    import logging

    messages = {}
    for name, pl in (("volt", volt), ("pl", quiet_lightning)):
        trainer = quiet_trainer(pl, tmp_path / name, max_epochs=1)
        trainer.fit(module_class(pl)(), data(4))
        path = str(tmp_path / name / "first.ckpt")
        trainer.save_checkpoint(path)
        logger = logging.getLogger("pytorch_lightning" if name == "pl" else "volt")
        previous, logger.level = logger.level, logging.INFO
        caplog.clear()
        with caplog.at_level(logging.INFO):
            quiet_trainer(pl, tmp_path / name, max_epochs=2).fit(module_class(pl)(), data(4), ckpt_path=path)
        logger.setLevel(previous)
        messages[name] = [r.getMessage().replace(path, "<path>") for r in caplog.records if "estor" in r.getMessage()]
    assert messages["volt"] == messages["pl"] == ["Restoring states from the checkpoint path at <path>",
                                                  "Restored all states from the checkpoint at <path>"]


def test_a_cpu_trainer_on_a_machine_with_a_gpu_warns_as_lightning(monkeypatch, quiet_lightning):
    """`Trainer(accelerator="cpu")` where a GPU is available: Lightning's "GPU available but not used" warning."""
    import warnings

    from pytorch_lightning.accelerators import CUDAAccelerator as LightningCUDA

    from volt.accelerators import CUDAAccelerator

    for accelerator_class, pl in ((CUDAAccelerator, volt), (LightningCUDA, quiet_lightning)):
        monkeypatch.setattr(accelerator_class, "is_available", staticmethod(lambda: True))
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            with pytest.warns(UserWarning, match="GPU available but not used"):
                pl.Trainer(accelerator="cpu", logger=False)
    monkeypatch.undo()
    if not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            volt.Trainer(accelerator="cpu", logger=False)  # no GPU: no warning


def test_save_checkpoint_of_a_module_attached_with_strategy_connect(tmp_path, quiet_lightning):
    """`trainer.strategy.connect(model)` then `trainer.save_checkpoint(path)`: the way programs save a module they
    never fitted. The module is the Trainer's `lightning_module`, the callbacks' `on_save_checkpoint` runs, and the
    file loads back with the module's weights, as in Lightning."""
    saved = {}
    for pl in (volt, quiet_lightning):
        class Noting(pl.Callback):
            def on_save_checkpoint(self, trainer, pl_module, checkpoint):
                checkpoint["noted"] = pl_module is trainer.lightning_module

        model = module_class(pl)()
        trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, callbacks=[Noting()],
                             enable_progress_bar=False, enable_model_summary=False)
        trainer.strategy.connect(model)
        path = tmp_path / f"{pl.__name__}.ckpt"
        trainer.save_checkpoint(path)
        checkpoint = torch.load(path, weights_only=True)
        restored = type(model).load_from_checkpoint(path)
        saved[pl.__name__] = (trainer.lightning_module is model, checkpoint["noted"], checkpoint["epoch"],
                              checkpoint["global_step"], torch.equal(restored.layer.weight, model.layer.weight))
    assert saved["volt"] == saved["pytorch_lightning"] == (True, True, 0, 0, True)


def test_dataloader_properties_show_the_last_calls_loaders_as_lightning(tmp_path, quiet_lightning):
    """`trainer.*_dataloaders` show the loaders of the last call's loops only (after `test`, no training loader)."""
    seen = {}
    for pl in (quiet_lightning, volt):
        class Module(module_class(pl)):
            def test_step(self, batch, batch_idx):
                pass

        train, val, test = data(), data(), data()
        names = {id(train): "train", id(val): "val", id(test): "test"}
        trainer = quiet_trainer(pl, tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                                limit_test_batches=1)
        model, shown = Module(), []
        for call, args in (("fit", (train, val)), ("test", (test,)), ("validate", (test,))):
            getattr(trainer, call)(model, *args)
            shown.append([names.get(id(loader), repr(loader)) for loader in (
                trainer.train_dataloader, trainer.val_dataloaders, trainer.test_dataloaders)])
        seen[pl] = shown
    assert seen[volt] == seen[quiet_lightning] == [["train", "val", "None"], ["None", "None", "test"],
                                                   ["None", "test", "None"]]
