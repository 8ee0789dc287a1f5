"""Public behaviour that Lightning's own test suite (tests/tests_pytorch) showed volt doing differently: the Trainer's
argument checks and their wording, hooks as Lightning calls them, `self.log` from callbacks, hyperparameters and
optimizer configurations. Each test groups several checks around one tiny run."""
import math
import os

import pytest
import torch
from helpers import BoringModel, MemoryLogger, loader, trainer

import volt
from volt.trainer.optim import LightningOptimizer
from volt.utilities.exceptions import MisconfigurationException


@pytest.mark.parametrize("make, error, message", [
    (dict(max_epochs=-100), MisconfigurationException, "`max_epochs` must be a non-negative integer or -1"),
    (dict(max_steps=-2), MisconfigurationException, "`max_steps` must be a non-negative integer or -1"),
    (dict(check_val_every_n_epoch=1.2), MisconfigurationException, "`check_val_every_n_epoch` should be an integer"),
    (dict(gradient_clip_val=(1, 2)), TypeError, "`gradient_clip_val` should be an int or a float"),
    (dict(gradient_clip_algorithm="norm2"), MisconfigurationException, "`gradient_clip_algorithm` norm2 is invalid"),
])
@pytest.mark.parametrize("oracle", [False, True])
def test_argument_errors_match_lightnings_wording(make, error, message, oracle, request):
    pl = request.getfixturevalue("quiet_lightning") if oracle else volt
    if oracle:
        error = getattr(pl.utilities.exceptions, error.__name__, error)
    with pytest.raises(error, match=message):
        pl.Trainer(logger=False, **make)


def test_trainer_properties_and_checks_as_lightning(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    run = volt.Trainer(default_root_dir="~/runs", num_sanity_val_steps=-1, logger=False)
    assert run.default_root_dir == os.path.join(str(tmp_path), "runs")
    assert run.num_sanity_val_steps == math.inf and run.gradient_clip_algorithm is None
    run.loggers = None
    assert run.loggers == [] and run.logger is None
    assert isinstance(run.callbacks[-1], volt.callbacks.ModelCheckpoint)  # checkpoint callbacks last
    with pytest.raises(AttributeError, match="Saving a checkpoint is only possible if a model is attached"):
        run.save_checkpoint(tmp_path / "x.ckpt")
    for stage in ("validate", "test", "predict"):
        with pytest.raises(TypeError, match=rf"`Trainer.{stage}\(\)` requires a `LightningModule`"):
            getattr(run, stage)()
    with pytest.raises(TypeError, match="`model` must be a `LightningModule` .*got `Linear`"):
        run.fit(torch.nn.Linear(1, 1))

    class Stateful(volt.Callback):
        def state_dict(self):
            return {"seen": 1}

    with pytest.raises(RuntimeError, match="more than one stateful callback of type `Stateful`"):
        volt.Trainer(callbacks=[Stateful(), Stateful()], logger=False)


class FrozenPart(BoringModel):
    """A frozen submodule in eval mode, which validation must leave in eval mode."""

    def __init__(self):
        super().__init__()
        self.frozen = torch.nn.Linear(1, 1).eval()
        self.stages = []

    def setup(self, stage):
        self.stages.append(stage)

    def training_step(self, batch, batch_idx):
        assert self.layer.training and not self.frozen.training
        return super().training_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx):
        return None if batch_idx else self(batch[0])


class LogsFromCallback(volt.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.log("from_callback", 2.0)


def test_a_fit_calls_hooks_and_logs_as_lightning(tmp_path):
    model, logger = FrozenPart(), MemoryLogger()
    calls = []
    logger.log_metrics = lambda *args, **kwargs: calls.append((args, kwargs))
    run = trainer(tmp_path, logger=logger, callbacks=[LogsFromCallback()], limit_train_batches=2,
                  limit_val_batches=1, log_every_n_steps=1)
    run.fit(model)
    assert run.callback_metrics["from_callback"] == 2.0  # `self.log` inside a callback hook
    assert calls and all(not args and set(kwargs) == {"metrics", "step"} for args, kwargs in calls)
    assert model.stages == ["fit"] and isinstance(model.stages[0], volt.trainer.states.TrainerFn)
    assert model.layer.training and not model.frozen.training  # each submodule's mode restored after validation
    assert model.freeze() is model and model.unfreeze() is model
    with pytest.warns(UserWarning, match="predict returned None"):
        run.predict(model, loader(n=4))
    assert run.validate(model, verbose=False, dataloaders=loader()) and volt.Trainer(
        limit_val_batches=0, logger=False, enable_progress_bar=False).validate(model, verbose=False) == []
    with pytest.raises(MisconfigurationException, match="should not contain information about `dataloader_idx`"):
        model.training_step = lambda batch, batch_idx: model.log("x/dataloader_idx_0", 1.0)
        trainer(tmp_path).fit(model)


def test_min_epochs_notice_and_fit_loop_limits(tmp_path, caplog):
    class StopsAtOnce(BoringModel):
        def on_train_epoch_end(self):
            self.trainer.should_stop = True

    model = StopsAtOnce()
    run = trainer(tmp_path, min_epochs=3, max_epochs=5, limit_val_batches=0)
    with caplog.at_level("INFO"):
        run.fit(model)
    assert run.current_epoch == 3
    assert sum("`min_epochs=3` or `min_steps=None` has not been met. Training will continue" in record.getMessage()
               for record in caplog.records) == 1
    run.fit_loop.max_epochs = 4  # Lightning's way to fit further
    assert run.max_epochs == 4


class Configured(BoringModel):
    def __init__(self, make, manual=False):
        super().__init__()
        self.make = make
        self.automatic_optimization = not manual

    def training_step(self, batch, batch_idx):
        if self.automatic_optimization:
            return super().training_step(batch, batch_idx)

    def configure_optimizers(self):
        return self.make(self)


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1)


def test_optimizer_configurations_checked_as_lightning(tmp_path):
    class Custom:
        def __init__(self, optimizer):
            self.optimizer = optimizer

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    foreign = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(MisconfigurationException, match="attached with an optimizer that wasn't returned"):
        trainer(tmp_path).fit(Configured(lambda m: ([_sgd(m)], [torch.optim.lr_scheduler.StepLR(foreign, 1)])))
    with pytest.raises(MisconfigurationException, match="`Custom` doesn't follow PyTorch's LRScheduler API"):
        trainer(tmp_path).fit(Configured(lambda m: ([opt := _sgd(m)], [Custom(opt)])))
    with pytest.raises(RuntimeError, match="multiple optimizers is only supported with manual optimization"):
        trainer(tmp_path).fit(Configured(lambda m: [_sgd(m), _sgd(m)]))
    plateau = {"scheduler": None, "monitor": "missing", "strict": True}

    def with_plateau(m):
        opt = _sgd(m)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        return {"optimizer": opt, "lr_scheduler": {**plateau, "scheduler": scheduler}}

    trainer(tmp_path, max_steps=1).fit(Configured(with_plateau))  # a cut-short epoch steps no plateau scheduler
    with pytest.warns(RuntimeWarning, match=r"\['monitor', 'strict'\], but the keys will be ignored"):
        trainer(tmp_path, max_steps=1).fit(Configured(with_plateau, manual=True))

    class Clips(BoringModel):
        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            self.clip_gradients(optimizer, gradient_clip_algorithm="value")

    with pytest.raises(MisconfigurationException, match=r"gradient_clip_algorithm='norm'\)` and have passed"):
        trainer(tmp_path, gradient_clip_algorithm="norm").fit(Clips())
    wrapped = LightningOptimizer(_sgd(BoringModel()))  # outside a Trainer
    assert repr(wrapped).startswith("LightningSGD (") and wrapped.step() is None


class WithLoss(BoringModel):
    def __init__(self, loss_fn=None, lr=0.1):
        super().__init__(lr=lr)
        self.save_hyperparameters()


class FromConfig(BoringModel):
    def __init__(self, config):
        super().__init__(lr=config.lr)
        self.save_hyperparameters(config)


def test_hyperparameters_as_lightning(tmp_path):
    with pytest.warns(UserWarning, match="'loss_fn' is an instance of `nn.Module` and is already saved"):
        model = WithLoss(loss_fn=torch.nn.MSELoss())
    assert isinstance(model.hparams.loss_fn, torch.nn.MSELoss)  # kept, as Lightning
    run = trainer(tmp_path, max_steps=1, limit_val_batches=0)
    run.fit(model)
    run.save_checkpoint(tmp_path / "a.ckpt")
    assert torch.load(tmp_path / "a.ckpt", weights_only=True)["hyper_parameters"] == {"lr": 0.1}  # no module
    with pytest.raises(ValueError, match=r"Primitives \(<class 'bool'>"):
        WithLoss().save_hyperparameters(3)
    omegaconf = pytest.importorskip("omegaconf")
    model = FromConfig(omegaconf.OmegaConf.create({"lr": 0.2, "widths": [4, 1]}))
    assert isinstance(model.hparams, omegaconf.DictConfig)
    run.fit(model)
    run.save_checkpoint(tmp_path / "b.ckpt")
    checkpoint = torch.load(tmp_path / "b.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"] == {"lr": 0.2, "widths": [4, 1]}
    assert checkpoint["hparams_type"] == "DictConfig"
    loaded = FromConfig.load_from_checkpoint(tmp_path / "b.ckpt")
    assert isinstance(loaded.hparams, omegaconf.DictConfig) and loaded.hparams.widths[0] == 4
    # Lightning before 1.0 saved them under "module_arguments"
    checkpoint = {**torch.load(tmp_path / "a.ckpt", weights_only=True), "module_arguments": {"lr": 0.5}}
    del checkpoint["hyper_parameters"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert WithLoss.load_from_checkpoint(tmp_path / "old.ckpt").hparams.lr == 0.5
