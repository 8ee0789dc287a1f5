"""LightningModule and LightningDataModule: hyperparameters, checkpoint loading, properties, optimizers and
schedulers in every configure_optimizers form, manual optimization, and the datamodule's hooks and state."""
import copy
import pickle
from argparse import Namespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import volt
from helpers import BoringModel, dataset, loader, trainer
from volt.utilities.exceptions import MisconfigurationException
from volt.callbacks import TQDMProgressBar


# ------------------------------------------------------------------------------------------ hyperparameters


class AllArgs(BoringModel):
    def __init__(self, lr=0.1, hidden=8, name="net", **kwargs):
        super().__init__(lr=lr)
        self.save_hyperparameters()


class SomeArgs(BoringModel):
    def __init__(self, lr=0.1, hidden=8, name="net"):
        super().__init__(lr=lr)
        self.save_hyperparameters("lr", "name")


class IgnoredArgs(BoringModel):
    def __init__(self, lr=0.1, hidden=8, backbone=None):
        super().__init__(lr=lr)
        self.save_hyperparameters(ignore="hidden")


class FromDict(BoringModel):
    def __init__(self, config):
        super().__init__(lr=config["lr"])
        self.save_hyperparameters(config)


class FromNamespace(BoringModel):
    def __init__(self, args):
        super().__init__(lr=args.lr)
        self.save_hyperparameters(args)


class Child(AllArgs):
    def __init__(self, depth=2, **kwargs):
        super().__init__(**kwargs)


@pytest.mark.parametrize("make, expected", [
    (lambda: AllArgs(lr=0.5), {"lr": 0.5, "hidden": 8, "name": "net"}),
    (lambda: AllArgs(extra=3), {"lr": 0.1, "hidden": 8, "name": "net", "extra": 3}),
    (lambda: SomeArgs(lr=0.5, hidden=2), {"lr": 0.5, "name": "net"}),
    (lambda: IgnoredArgs(hidden=2), {"lr": 0.1, "backbone": None}),
    (lambda: FromDict({"lr": 0.3, "layers": [1, 2]}), {"lr": 0.3, "layers": [1, 2]}),
    (lambda: FromNamespace(Namespace(lr=0.2, flag=True)), {"lr": 0.2, "flag": True}),
    (lambda: Child(depth=5, lr=0.4), {"depth": 5, "lr": 0.4, "hidden": 8, "name": "net"}),
])
def test_save_hyperparameters_forms(make, expected):
    model = make()
    assert dict(model.hparams) == expected
    assert dict(model.hparams_initial) == expected


def test_hparams_are_attributes_and_hparams_initial_is_a_copy():
    model = AllArgs(lr=0.5)
    assert model.hparams.lr == model.hparams["lr"] == 0.5
    model.hparams.lr = 1.0
    assert model.hparams_initial.lr == 0.5
    with pytest.raises(AttributeError, match="'hparams' has no attribute 'missing'"):
        model.hparams.missing
    assert dict(BoringModel().hparams) == {}


def test_save_hyperparameters_bad_input():
    class Bad(BoringModel):
        def __init__(self, lr=0.1, form="names"):
            super().__init__()
            self.save_hyperparameters("missing" if form == "names" else 3)

    with pytest.raises(ValueError, match=r"\['missing'\] are not arguments of Bad.__init__; available: \['form',"):
        Bad()
    with pytest.raises(ValueError, match="save_hyperparameters got int: Primitives .* are not allowed; pass argument "
                                         "names, a dict, a Namespace"):
        Bad(form="int")


# ------------------------------------------------------------------------------------------ load_from_checkpoint


@pytest.fixture
def saved(tmp_path):
    """A checkpoint of a trained AllArgs(lr=0.5, hidden=3) and the model itself."""
    model = AllArgs(lr=0.5, hidden=3)
    run = trainer(tmp_path, limit_val_batches=0)
    run.fit(model)
    path = tmp_path / "model.ckpt"
    run.save_checkpoint(path)
    return path, model


def test_load_from_checkpoint_restores_hparams_and_weights(saved):
    path, trained = saved
    loaded = AllArgs.load_from_checkpoint(path)
    assert dict(loaded.hparams) == {"lr": 0.5, "hidden": 3, "name": "net"}
    assert torch.equal(loaded.layer.weight, trained.layer.weight)
    assert loaded.training, "as Lightning, the model is not switched to eval mode"


def test_load_from_checkpoint_kwargs_override_hparams(saved):
    loaded = AllArgs.load_from_checkpoint(saved[0], hidden=7)
    assert (loaded.hparams.lr, loaded.hparams.hidden) == (0.5, 7)


def test_load_from_checkpoint_strict(saved):
    class Bigger(AllArgs):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.extra = torch.nn.Linear(2, 2)

    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "extra.weight"'):
        Bigger.load_from_checkpoint(saved[0])
    loaded = Bigger.load_from_checkpoint(saved[0], strict=False)
    assert torch.equal(loaded.layer.weight, saved[1].layer.weight)


def test_load_from_checkpoint_map_location(saved):
    loaded = AllArgs.load_from_checkpoint(saved[0], map_location="cpu")
    assert loaded.device == torch.device("cpu")


@pytest.mark.parametrize("make", [
    lambda: FromDict({"lr": 0.3, "layers": [1, 2]}),
    lambda: FromNamespace(Namespace(lr=0.3, layers=[1, 2])),
])
def test_hparams_saved_from_one_argument_go_back_into_it(tmp_path, make):
    """`save_hyperparameters(config)`: load_from_checkpoint passes the saved values back as `config`, whose items
    read as keys and as attributes (a dict or a Namespace went in)."""
    model = make()
    run = trainer(tmp_path, limit_val_batches=0)
    run.fit(model)
    run.save_checkpoint(tmp_path / "model.ckpt")
    loaded = type(model).load_from_checkpoint(tmp_path / "model.ckpt")
    assert dict(loaded.hparams) == {"lr": 0.3, "layers": [1, 2]} and loaded.lr == 0.3
    assert torch.equal(loaded.layer.weight, model.layer.weight)
    assert type(model).load_from_checkpoint(tmp_path / "model.ckpt", lr=0.7).lr == 0.7


def test_load_from_checkpoint_with_a_missing_hparams_file_warns_and_uses_the_saved_hparams(saved):
    missing = saved[0].parent / "missing.yaml"
    with pytest.warns(RuntimeWarning, match=rf"hparams_file {missing} does not exist; the hyperparameters saved in"
                                            " the checkpoint are used"):
        loaded = AllArgs.load_from_checkpoint(saved[0], hparams_file=missing)
    assert dict(loaded.hparams) == {"lr": 0.5, "hidden": 3, "name": "net"}


def test_load_from_checkpoint_reads_an_hparams_file(saved, tmp_path):
    (tmp_path / "hparams.yaml").write_text("lr: 0.25\nname: from_file\n")
    loaded = AllArgs.load_from_checkpoint(saved[0], hparams_file=tmp_path / "hparams.yaml", hidden=4)
    assert dict(loaded.hparams) == {"lr": 0.25, "hidden": 4, "name": "from_file"}
    (tmp_path / "hparams.txt").write_text("lr: 0.25\n")
    with pytest.raises(ValueError, match=r"hparams_file must be a .yaml or .yml file .*, got .*hparams.txt"):
        AllArgs.load_from_checkpoint(saved[0], hparams_file=tmp_path / "hparams.txt")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"list.yaml holds a list; expected a mapping of names to values"):
        AllArgs.load_from_checkpoint(saved[0], hparams_file=tmp_path / "list.yaml")


class NumpyLearningRate(BoringModel):
    def __init__(self, lr=np.float64(0.1), steps=np.int64(2), grid=np.arange(3)):
        super().__init__(lr=lr)
        self.save_hyperparameters()


def test_numpy_hyperparameters_and_an_optimizer_built_from_them_are_checkpointed(tmp_path):
    """An `np.float64` learning rate lands in the optimizer's state too; the checkpoint holds the Python number."""
    run = trainer(tmp_path, limit_val_batches=0)
    run.fit(NumpyLearningRate())
    run.save_checkpoint(tmp_path / "model.ckpt")
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)
    assert type(checkpoint["optimizer_states"][0]["param_groups"][0]["lr"]) is float
    loaded = NumpyLearningRate.load_from_checkpoint(tmp_path / "model.ckpt")
    assert dict(loaded.hparams) == {"lr": 0.1, "steps": 2, "grid": [0, 1, 2]}
    trainer(tmp_path, max_epochs=2, limit_val_batches=0).fit(loaded, ckpt_path=tmp_path / "model.ckpt")


class HydraStyle(BoringModel):
    """Takes its whole configuration as one OmegaConf object, as Hydra programs do."""

    def __init__(self, cfg):
        super().__init__(lr=cfg.optim.lr)
        self.save_hyperparameters(cfg)
        self.widths = cfg.model.widths


def test_omegaconf_hyperparameters_round_trip_as_plain_data(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"optim": {"lr": 0.2, "start_lr": "${optim.lr}"}, "model": {"widths": [4, 1]}})
    model = HydraStyle(cfg)
    run = trainer(tmp_path, limit_val_batches=0)
    run.fit(model)
    run.save_checkpoint(tmp_path / "model.ckpt")

    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)
    saved = checkpoint["hyper_parameters"]  # plain data, resolved; the type brings the container back
    assert saved["optim"] == {"lr": 0.2, "start_lr": 0.2} and checkpoint["hparams_type"] == "DictConfig"
    loaded = HydraStyle.load_from_checkpoint(tmp_path / "model.ckpt")
    assert isinstance(loaded.hparams.optim, omegaconf.DictConfig)
    assert isinstance(loaded.widths, omegaconf.ListConfig) and list(loaded.widths) == [4, 1]
    assert loaded.lr == 0.2 and torch.equal(loaded.layer.weight, model.layer.weight)


# ------------------------------------------------------------------------------------------ utilities, properties


def test_a_trained_module_pickles_and_deep_copies_detached_from_its_trainer(tmp_path):
    model = BoringModel()
    run = trainer(tmp_path, limit_val_batches=0)
    run.fit(model)
    for copied in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert torch.equal(copied.layer.weight, model.layer.weight) and copied.layer.weight is not model.layer.weight
        with pytest.raises(RuntimeError, match="BoringModel is not attached to a `Trainer`"):
            copied.trainer
        trainer(tmp_path, limit_val_batches=0).fit(copied)  # and it trains again
    assert model.trainer is run
    copied_trainer = pickle.loads(pickle.dumps(run))  # its loop state holds RNG states: none in a dtype pickle refuses
    assert copied_trainer.global_step == run.global_step

    optimizer = copy.deepcopy(model.optimizers())  # the optimizer wrapper copies as the optimizer it wraps
    assert type(optimizer) is torch.optim.SGD and optimizer.param_groups[0]["lr"] == 0.1
    assert type(pickle.loads(pickle.dumps(model.optimizers()))) is torch.optim.SGD
    loader_copy = copy.deepcopy(run.train_dataloader)
    assert [x.tolist() for x, _ in loader_copy] == [x.tolist() for x, _ in run.train_dataloader]


def test_a_callback_holding_its_trainer_pickles_after_fit(tmp_path):
    """As in Lightning (whose progress bars keep their trainer): the trainer's hook table pickles with it (its
    setup/teardown callers were local lambdas)."""
    bar = TQDMProgressBar()
    trainer(tmp_path, limit_val_batches=0, callbacks=[bar], enable_progress_bar=True).fit(BoringModel())
    assert pickle.dumps(bar) and pickle.dumps(bar.trainer)


def test_a_module_deep_copied_while_training_is_an_independent_average(tmp_path):
    """The exponential moving average pattern: a callback keeps a deep copy of the module it averages into."""

    class EMA(volt.Callback):
        def on_train_start(self, trainer, pl_module):
            self.average = copy.deepcopy(pl_module)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            with torch.no_grad():
                for mine, live in zip(self.average.parameters(), pl_module.parameters()):
                    mine.lerp_(live, 0.5)

    ema, model = EMA(), BoringModel()
    start = model.layer.weight.detach().clone()
    trainer(tmp_path, limit_val_batches=0, callbacks=[ema]).fit(model)
    averaged = ema.average.layer.weight
    assert not torch.equal(averaged, start) and not torch.equal(averaged, model.layer.weight)


def test_freeze_and_unfreeze():
    model = BoringModel()
    model.freeze()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    model.unfreeze()
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_print_prints_on_rank_zero(capsys):
    BoringModel().print("hello", 3)
    assert capsys.readouterr().out == "hello 3\n"


def test_properties_without_a_trainer():
    model = BoringModel()
    assert (model.current_epoch, model.global_step, model.global_rank, model.local_rank) == (0, 0, 0, 0)
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert model.logger is None and model.loggers == []
    with pytest.raises(RuntimeError, match="BoringModel is not attached to a `Trainer`"):
        model.trainer


def test_properties_during_training(tmp_path):
    seen = []

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            seen.append((self.current_epoch, self.global_step, self.trainer is run, self.device.type))
            return super().training_step(batch, batch_idx)

    run = trainer(tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=0)
    run.fit(Model())
    assert seen == [(0, 0, True, "cpu"), (0, 1, True, "cpu"), (1, 2, True, "cpu"), (1, 3, True, "cpu")]


# ------------------------------------------------------------------------------------------ optimizers


class Gan(volt.LightningModule):
    """Manual optimization with two optimizers, the usual GAN shape."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.generator = torch.nn.Linear(4, 4)
        self.discriminator = torch.nn.Linear(4, 1)
        self.frozen_while_generating = []

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        (x, _) = batch
        self.toggle_optimizer(opt_g)
        self.frozen_while_generating.append([p.requires_grad for p in self.discriminator.parameters()])
        g_loss = -self.discriminator(self.generator(x)).mean()
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        with self.toggled_optimizer(opt_d):
            fake, real = self.discriminator(self.generator(x).detach()), self.discriminator(x)
            d_loss = torch.nn.functional.softplus(fake).mean() + torch.nn.functional.softplus(-real).mean()
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.step()
        self.log_dict({"g_loss": g_loss, "d_loss": d_loss})

    def configure_optimizers(self):
        return [torch.optim.SGD(self.generator.parameters(), lr=0.1),
                torch.optim.Adam(self.discriminator.parameters(), lr=0.1)]


def test_manual_optimization_with_two_optimizers(tmp_path):
    model = Gan()
    before = [p.detach().clone() for p in model.parameters()]
    run = trainer(tmp_path, limit_val_batches=0)
    run.fit(model, loader())
    assert run.global_step == 8, "as Lightning, every optimizer step counts (2 optimizers x 4 batches)"
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.frozen_while_generating == [[False, False]] * 4
    assert all(p.requires_grad for p in model.parameters()), "untoggle restores requires_grad"
    assert set(run.callback_metrics) == {"g_loss", "d_loss"}
    optimizers = model.optimizers()
    assert [type(o.optimizer) for o in optimizers] == [torch.optim.SGD, torch.optim.Adam]
    assert model.optimizers(use_pl_optimizer=False) == run.optimizers
    assert model.lr_schedulers() is None
    # replaced by a callback or the user (as in Lightning): `self.optimizers()` wraps the new ones
    run.optimizers = [torch.optim.Adam(model.parameters()), optimizers[1]]
    assert [type(o.optimizer) for o in model.optimizers()] == [torch.optim.Adam, torch.optim.Adam]
    assert model.optimizers()[1].optimizer is run.optimizers[1] is optimizers[1].optimizer


def test_manual_optimization_rejects_automatic_features(tmp_path):
    with pytest.raises(MisconfigurationException, match="Automatic gradient clipping is not supported for manual"):
        trainer(tmp_path, gradient_clip_val=1.0).fit(Gan())
    with pytest.raises(MisconfigurationException, match="Automatic gradient accumulation is not supported"):
        trainer(tmp_path, accumulate_grad_batches=2).fit(Gan())
    with pytest.raises(RuntimeError, match="`manual_backward` is for manual optimization"):
        BoringModel().manual_backward(torch.zeros(()))


class Configurable(BoringModel):
    """configure_optimizers returns whatever `make(self)` builds; lr starts at 1.0 so schedules are easy to read."""

    def __init__(self, make):
        super().__init__(lr=1.0)
        self.make = make

    def configure_optimizers(self):
        return self.make(self)


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=1.0)


def halving(optimizer):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)


def opt_and(scheduler_config):
    def make(model):
        optimizer = sgd(model)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": halving(optimizer), **scheduler_config}}

    return make


def _two_lists(model):
    optimizer = sgd(model)
    return [optimizer], [halving(optimizer)]


def _dict_with_scheduler(model):
    optimizer = sgd(model)
    return {"optimizer": optimizer, "lr_scheduler": halving(optimizer)}


@pytest.mark.parametrize("make, schedulers", [
    (sgd, 0),
    (lambda m: [sgd(m)], 0),
    (lambda m: (sgd(m),), 0),
    (_two_lists, 1),
    (lambda m: {"optimizer": sgd(m)}, 0),
    (_dict_with_scheduler, 1),
    (lambda m: [{"optimizer": sgd(m)}], 0),
])
def test_configure_optimizers_forms(tmp_path, make, schedulers):
    model = Configurable(make)
    run = trainer(tmp_path, limit_val_batches=0)
    run.fit(model)
    assert len(run.optimizers) == 1 and isinstance(run.optimizers[0], torch.optim.SGD)
    assert len(run.lr_scheduler_configs) == schedulers
    assert run.optimizers[0].param_groups[0]["lr"] == (0.5 if schedulers else 1.0)  # "epoch" interval by default


def test_configure_optimizers_none_trains_without_an_optimizer(tmp_path):
    model = Configurable(lambda m: None)
    before = model.layer.weight.detach().clone()
    with pytest.warns(UserWarning, match="`configure_optimizers` returned `None`, this fit will run with no optimizer"):
        trainer(tmp_path, limit_val_batches=0).fit(model)
    assert torch.equal(before, model.layer.weight)


@pytest.mark.parametrize("config, lr", [
    ({"interval": "epoch"}, 0.5),
    ({"interval": "step"}, 0.5 ** 4),
    ({"interval": "step", "frequency": 2}, 0.5 ** 2),
])
def test_scheduler_interval_and_frequency(tmp_path, config, lr):
    run = trainer(tmp_path, limit_val_batches=0)
    run.fit(Configurable(opt_and(config)))
    assert run.optimizers[0].param_groups[0]["lr"] == lr


def test_scheduler_name_and_lr_schedulers(tmp_path):
    seen = []

    class Model(Configurable):
        def on_train_start(self):
            seen.append(self.lr_schedulers())

    run = trainer(tmp_path, limit_val_batches=0)
    run.fit(Model(opt_and({"name": "halving"})))
    assert run.lr_scheduler_configs[0].name == "halving"
    assert seen == [run.lr_scheduler_configs[0].scheduler]


def plateau(monitor="val_loss", **config):
    def make(model):
        optimizer = sgd(model)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": monitor, **config}}

    return make


class ConstantValLoss(Configurable):
    def validation_step(self, batch, batch_idx):
        self.log("val_loss", 1.0)  # never improves: the plateau scheduler halves lr after every epoch but the first


def test_reduce_lr_on_plateau_reads_the_monitored_metric(tmp_path):
    run = trainer(tmp_path, max_epochs=3, limit_train_batches=1)
    run.fit(ConstantValLoss(plateau()))
    assert run.optimizers[0].param_groups[0]["lr"] == 0.25
    assert run.lr_scheduler_configs[0].reduce_on_plateau


def test_reduce_lr_on_plateau_missing_metric(tmp_path):
    with pytest.raises(MisconfigurationException, match=r"ReduceLROnPlateau conditioned on metric missing which is "
                                                        r"not available. Available metrics are: \["):
        trainer(tmp_path, limit_train_batches=1).fit(ConstantValLoss(plateau("missing")))
    run = trainer(tmp_path, limit_train_batches=1)
    with pytest.warns(RuntimeWarning, match="not available but strict is set to `False`. Skipping"):
        run.fit(ConstantValLoss(plateau("missing", strict=False)))
    assert run.optimizers[0].param_groups[0]["lr"] == 1.0


def test_reduce_lr_on_plateau_needs_a_monitor(tmp_path):
    def make(model):
        optimizer = sgd(model)
        return [optimizer], [torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)]

    with pytest.raises(MisconfigurationException, match="must include a monitor when a `ReduceLROnPlateau`"):
        trainer(tmp_path).fit(Configurable(make))


def test_bad_scheduler_configs(tmp_path):
    with pytest.raises(MisconfigurationException, match='"interval" key in lr scheduler dict must be "step" or '
                                                        "\"epoch\", not 'batch'"):
        trainer(tmp_path).fit(Configurable(opt_and({"interval": "batch"})))
    with pytest.raises(MisconfigurationException, match="'frequency' must be a positive int, not 0"):
        trainer(tmp_path).fit(Configurable(opt_and({"frequency": 0})))
    with pytest.raises(MisconfigurationException, match='must have the key "scheduler"'):
        trainer(tmp_path).fit(Configurable(lambda m: {"optimizer": sgd(m), "lr_scheduler": {"interval": "step"}}))


# ------------------------------------------------------------------------------------------ LightningDataModule


class DataModule(volt.LightningDataModule):
    """Records its hooks; keeps a counter as checkpointed state."""

    def __init__(self, batch_size=2):
        super().__init__()
        self.save_hyperparameters()
        self.calls = []
        self.batches_served = 0

    def prepare_data(self):
        self.calls.append("prepare_data")

    def setup(self, stage):
        self.calls.append(f"setup({stage})")
        self.train_set, self.val_set = dataset(8), dataset(4, seed=1)

    def teardown(self, stage):
        self.calls.append(f"teardown({stage})")

    def train_dataloader(self):
        self.calls.append("train_dataloader")
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size)

    def val_dataloader(self):
        self.calls.append("val_dataloader")
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

    def test_dataloader(self):
        self.calls.append("test_dataloader")
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        self.batches_served += 1
        return batch

    def state_dict(self):
        return {"batches_served": self.batches_served}

    def load_state_dict(self, state_dict):
        self.batches_served = state_dict["batches_served"]


class NoData(BoringModel):
    """A model whose dataloader hooks must not be called when a datamodule provides the data."""

    def train_dataloader(self):
        raise AssertionError("the datamodule's loader should be used")

    val_dataloader = test_dataloader = train_dataloader

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        return super().validation_step(batch, batch_idx)


def test_datamodule_hooks_and_state(tmp_path):
    datamodule = DataModule()
    run = trainer(tmp_path, num_sanity_val_steps=0)
    run.fit(NoData(), datamodule=datamodule)
    assert datamodule.calls == ["prepare_data", "setup(fit)", "train_dataloader", "val_dataloader", "teardown(fit)"]
    assert datamodule.batches_served == 6 and run.datamodule is datamodule and datamodule.trainer is run
    run.save_checkpoint(tmp_path / "dm.ckpt")

    restored = DataModule.load_from_checkpoint(tmp_path / "dm.ckpt", batch_size=4)
    assert restored.hparams.batch_size == 4 and restored.batches_served == 6

    resumed = DataModule()
    trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0).fit(NoData(), datamodule=resumed,
                                                               ckpt_path=tmp_path / "dm.ckpt")
    assert resumed.batches_served == 12, "state restored from the checkpoint, then 4 train + 2 val batches"

    datamodule.calls.clear()
    assert trainer(tmp_path).test(NoData(), datamodule=datamodule, verbose=False)[0]["test_loss"] > 0
    assert datamodule.calls == ["prepare_data", "setup(test)", "test_dataloader", "teardown(test)"]


def test_datamodule_hparams_are_checkpointed(tmp_path):
    run = trainer(tmp_path, limit_val_batches=0)
    run.fit(BoringModel(), datamodule=DataModule(batch_size=4))
    run.save_checkpoint(tmp_path / "dm.ckpt")
    checkpoint = torch.load(tmp_path / "dm.ckpt", weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"] == {"batch_size": 4}
    assert checkpoint["DataModule"] == {"batches_served": 2}


def test_datamodule_with_hparams_from_one_argument_loads_from_a_checkpoint(tmp_path):
    class Configured(volt.LightningDataModule):
        def __init__(self, config):
            super().__init__()
            self.save_hyperparameters(config)

        def train_dataloader(self):
            return loader(batch_size=self.hparams.batch_size)

    run = trainer(tmp_path, limit_val_batches=0)
    run.fit(NoData(), datamodule=Configured({"batch_size": 4}))
    run.save_checkpoint(tmp_path / "dm.ckpt")
    assert torch.load(tmp_path / "dm.ckpt", weights_only=True)["datamodule_hparams_name"] == "config"
    loaded = Configured.load_from_checkpoint(tmp_path / "dm.ckpt")
    assert dict(loaded.hparams) == {"batch_size": 4} and loaded.train_dataloader().batch_size == 4


def test_datamodule_from_datasets(tmp_path):
    datamodule = volt.LightningDataModule.from_datasets(
        train_dataset=dataset(8), val_dataset=[dataset(4), dataset(6)], test_dataset=dataset(2), batch_size=2)
    assert datamodule.train_dataloader().batch_size == 2
    run = trainer(tmp_path, num_sanity_val_steps=0)
    run.fit(NoData(), datamodule=datamodule)
    assert run.num_training_batches == 4 and run.num_val_batches == [2, 3]
    assert len(run.test(NoData(), datamodule=datamodule, verbose=False)) == 1
    with pytest.raises(TypeError, match=r"LightningDataModule.__init__ does not accept \['shuffle'\]"):
        volt.LightningDataModule.from_datasets(dataset(8), shuffle=True)


def test_from_datasets_passes_batch_size_and_num_workers_to_an_init_that_takes_them():
    class Sized(volt.LightningDataModule):
        def __init__(self, batch_size=1, num_workers=0, note="none"):
            super().__init__()
            self.batch_size, self.num_workers, self.note = batch_size, num_workers, note

    class TakesAnything(volt.LightningDataModule):
        def __init__(self, **kwargs):
            super().__init__()
            self.kwargs = kwargs

    sized = Sized.from_datasets(dataset(8), batch_size=4, num_workers=2, note="mine")
    assert (sized.batch_size, sized.num_workers, sized.note) == (4, 2, "mine")
    assert sized.train_dataloader().batch_size == 4
    assert TakesAnything.from_datasets(dataset(8), batch_size=4).kwargs == {"batch_size": 4, "num_workers": 0}


def test_datamodule_and_dataloaders_together_is_an_error(tmp_path):
    with pytest.raises(MisconfigurationException, match="cannot pass `train_dataloader` or `val_dataloaders` to "
                                                        r"`trainer.fit\(datamodule=...\)`"):
        trainer(tmp_path).fit(BoringModel(), loader(), datamodule=DataModule())


def _clipping_module_class(pl, clip_val=None):
    """A module whose `configure_gradient_clipping` calls `clip_gradients(optimizer)`, giving `clip_val` if set."""
    from helpers import boring_model_class

    class Clipping(boring_model_class(pl)):
        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            if clip_val is None:
                self.clip_gradients(optimizer)
            else:
                self.clip_gradients(optimizer, gradient_clip_val=clip_val)

    return Clipping


def test_clip_gradients_takes_the_trainers_settings_as_lightning(tmp_path, quiet_lightning):
    """`self.clip_gradients(optimizer)` clips with the Trainer's value and algorithm (volt used to skip it)."""
    weights = []
    for pl in (volt, quiet_lightning):
        torch.manual_seed(0)
        model = _clipping_module_class(pl)()
        pl.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, max_steps=3, gradient_clip_val=1e-3,
                   gradient_clip_algorithm="value").fit(model)
        weights.append(model.layer.weight.detach().clone())
    torch.manual_seed(0)
    unclipped = _clipping_module_class(volt)()
    trainer(tmp_path, max_steps=3).fit(unclipped)
    torch.testing.assert_close(weights[0], weights[1])
    assert not torch.allclose(weights[0], unclipped.layer.weight)


def test_clip_gradients_value_that_contradicts_the_trainer_is_an_error(tmp_path, quiet_lightning):
    for pl in (volt, quiet_lightning):
        model = _clipping_module_class(pl, clip_val=0.01)()
        with pytest.raises(Exception, match=r"gradient_clip_val=0.0001\)` and have passed `clip_gradients\("
                                            r"gradient_clip_val=0.01\)`") as error:
            pl.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False, max_steps=1,
                       gradient_clip_val=1e-4).fit(model)
        assert type(error.value).__name__ == "MisconfigurationException"


@pytest.mark.parametrize(("strict", "strict_loading", "outcome"), [
    (None, False, "loads"), (False, False, "loads"), (True, False, "conflict"), (False, True, "conflict")])
def test_load_from_checkpoint_strict_against_strict_loading_as_lightning(strict, strict_loading, outcome, tmp_path,
                                                                         quiet_lightning):
    """A `strict=` that contradicts the module's own `strict_loading` is an error, in volt as in Lightning."""
    from helpers import boring_model_class

    for pl in (volt, quiet_lightning):
        class Loading(boring_model_class(pl)):
            def __init__(self):
                super().__init__()
                self.strict_loading = strict_loading

        path = tmp_path / f"{pl.__name__}.ckpt"
        run = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, max_steps=1)
        run.fit(Loading())
        run.save_checkpoint(path)
        if outcome == "conflict":
            with pytest.raises(ValueError, match=r"strict=.* in conflict with `?Loading.strict_loading"):
                Loading.load_from_checkpoint(path, strict=strict)
        else:
            assert isinstance(Loading.load_from_checkpoint(path, strict=strict), Loading)


def test_load_from_checkpoint_without_weights_warns_and_keeps_initial_weights(saved):
    """As Lightning: a checkpoint whose state_dict is empty loads (even with strict=True), with a warning."""
    path, _ = saved
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"] = {}
    torch.save(checkpoint, path)
    torch.manual_seed(0)
    initial = AllArgs(**checkpoint["hyper_parameters"]).state_dict()
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="contains no parameters"):
        loaded = AllArgs.load_from_checkpoint(path, strict=True)
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, initial[name])


def test_save_hyperparameters_in_parent_and_subclass_keeps_both_as_lightning(tmp_path, quiet_lightning):
    """A parent `__init__` saving its arguments, then the subclass saving its own: both sets stay, in volt as in
    Lightning, in `hparams` and in the checkpoint."""
    from helpers import boring_model_class

    for pl in (volt, quiet_lightning):
        class Parent(boring_model_class(pl)):
            def __init__(self, batch_size=64):
                super().__init__()
                self.save_hyperparameters()

        class Child(Parent):
            def __init__(self, *args, child_arg=1200, **kwargs):
                super().__init__(*args, **kwargs)
                self.save_hyperparameters()

        assert dict(Child().hparams) == {"batch_size": 64, "child_arg": 1200}  # the parent's default stays
        model = Child(batch_size=179)
        assert dict(model.hparams) == {"batch_size": 179, "child_arg": 1200}
        run = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, max_steps=1)
        run.fit(model)
        path = tmp_path / f"{pl.__name__}.ckpt"
        run.save_checkpoint(path)
        assert dict(Child.load_from_checkpoint(path).hparams) == {"batch_size": 179, "child_arg": 1200}

        class IgnoringChild(Parent):
            def __init__(self, batch_size=64, child_arg=1200):
                super().__init__(batch_size)
                self.save_hyperparameters(ignore="batch_size")

        assert dict(IgnoringChild().hparams) == {"child_arg": 1200}  # the subclass's ignore drops the parent's


def test_configure_sharded_model_still_builds_the_model_with_a_deprecation_warning(tmp_path):
    """Lightning 2.x's deprecated name for `configure_model`; overriding both is an error, as in Lightning."""

    class OldStyle(BoringModel):
        def configure_sharded_model(self):
            self.extra = torch.nn.Linear(2, 2)

    model = OldStyle()
    with pytest.deprecated_call(match="overridden `OldStyle.configure_sharded_model` which is deprecated"):
        trainer(tmp_path, fast_dev_run=1).fit(model)
    assert isinstance(model.extra, torch.nn.Linear)

    class Both(OldStyle):
        def configure_model(self):
            pass

    with pytest.raises(RuntimeError, match="Both `Both.configure_model`, and `Both.configure_sharded_model` are"):
        trainer(tmp_path, fast_dev_run=1).fit(Both())


def test_given_hyperparameters_apply_to_the_class_being_built_only():
    """LightningCLI builds a module inside `given_hyperparameters` (its config); modules it builds in turn collect
    their own arguments from the stack (as Lightning: theirs and the enclosing module's `__init__` arguments)."""
    from volt.module import given_hyperparameters

    class Inner(volt.LightningModule):
        def __init__(self, depth: int = 1):
            super().__init__()
            self.save_hyperparameters()

    class Outer(volt.LightningModule):
        def __init__(self, width: int = 2):
            super().__init__()
            self.save_hyperparameters()
            self.inner = Inner()

    with given_hyperparameters(Outer, {"width": 5, "_class_path": "pkg.Outer"}):
        outer = Outer(width=5)
    assert dict(outer.hparams) == {"width": 5, "_class_path": "pkg.Outer"}
    assert dict(outer.inner.hparams) == {"depth": 1, "width": 5}
    assert dict(Outer().hparams) == {"width": 2}


def test_fabric_is_none_as_under_lightnings_trainer(tmp_path, quiet_lightning):
    """`self.fabric` reads None (volt has no Fabric), so a module written for both Fabric and the Trainer takes its
    Trainer branch, as under Lightning's Trainer; it is None during a run too."""
    seen = []

    class Model(BoringModel):
        def on_train_start(self):
            seen.append(self.fabric)

    trainer(tmp_path, fast_dev_run=1).fit(Model(), loader(n=2))
    assert seen == [None] and BoringModel().fabric is None and quiet_lightning.LightningModule().fabric is None


def test_load_from_checkpoint_on_an_instance_is_refused_as_in_lightning(quiet_lightning):
    """`model.load_from_checkpoint(path)` returns a new object and leaves `model` untouched: Lightning refuses the
    call on an instance, and so does volt (on a datamodule too); `is_overridden` without a parent says so."""
    from pytorch_lightning.demos.boring_classes import BoringModel as LightningBoringModel

    from volt.demos.boring_classes import BoringDataModule, BoringModel
    from volt.utilities.model_helpers import is_overridden

    for instance in (BoringModel(), BoringDataModule(), LightningBoringModel()):
        with pytest.raises(TypeError, match=rf"`{type(instance).__name__}.load_from_checkpoint` cannot be called on "
                                            "an instance"):
            instance.load_from_checkpoint("model.ckpt")
    with pytest.raises(FileNotFoundError):
        BoringModel.load_from_checkpoint("missing.ckpt")
    with pytest.raises(ValueError, match="Expected a parent"):
        is_overridden("whatever", object())
