"""LearningRateMonitor: metric names (as Lightning), when it logs, what it logs, and its errors."""
from types import SimpleNamespace

import pytest
import torch

from volt.callbacks.lr_monitor import LearningRateMonitor
from volt.utilities.exceptions import MisconfigurationException


class RecordingLogger:
    def __init__(self):
        self.calls = []

    def log_metrics(self, metrics, step=None):
        self.calls.append((step, dict(metrics)))


def sched_config(scheduler, name=None, interval="epoch"):
    return SimpleNamespace(scheduler=scheduler, name=name, interval=interval, frequency=1, monitor=None, strict=True)


class StubTrainer:
    """The Trainer surface the monitor reads; `global_step` also sets the loop's batches that stepped (the x axis),
    as with one optimizer."""

    def __init__(self, optimizers, configs=(), **overrides):
        self.optimizers = list(optimizers)
        self.lr_scheduler_configs = list(configs)
        self.loggers = [RecordingLogger()]
        self.fit_loop = SimpleNamespace(batches_stepped=0)
        self.log_every_n_steps = 1
        self.should_stop = False
        self.fast_dev_run = False
        self.strategy = SimpleNamespace(root_device=torch.device("cpu"))
        self.callback_metrics = {}
        for name, value in overrides.items():
            setattr(self, name, value)

    @property
    def global_step(self):
        return self.fit_loop.batches_stepped

    @global_step.setter
    def global_step(self, step):
        self.fit_loop.batches_stepped = step


def params(n=1):
    return [torch.nn.Parameter(torch.zeros(1)) for _ in range(n)]


def names_after_start(trainer, **kwargs):
    monitor = LearningRateMonitor(**kwargs)
    monitor.on_train_start(trainer, None)
    return monitor, list(monitor.lrs)


def test_names_follow_optimizer_types_groups_and_scheduler_names():
    adam1, adam2 = torch.optim.Adam(params()), torch.optim.Adam(params())
    sgd = torch.optim.SGD([{"params": params()}, {"params": params(), "name": "head"}], lr=0.1)
    named = torch.optim.AdamW(params())
    configs = [sched_config(torch.optim.lr_scheduler.StepLR(adam1, 1)),
               sched_config(torch.optim.lr_scheduler.StepLR(named, 1), name="warmup")]
    _, names = names_after_start(StubTrainer([adam1, named, adam2, sgd], configs))
    assert names == ["lr-Adam", "warmup", "lr-Adam-1", "lr-SGD/pg1", "lr-SGD/head"]


def test_single_named_group_gets_a_suffix_and_duplicate_group_names_raise():
    opt = torch.optim.SGD([{"params": params(), "name": "body"}], lr=0.1)
    assert names_after_start(StubTrainer([opt]))[1] == ["lr-SGD/body"]
    bad = torch.optim.SGD([{"params": params(), "name": "x"}, {"params": params(), "name": "x"}], lr=0.1)
    with pytest.raises(MisconfigurationException,
                       match=r"cannot have multiple parameter groups with identical `name` values.*named \['x'\]"):
        names_after_start(StubTrainer([bad]))


@pytest.mark.filterwarnings("ignore:You have set log_momentum=True")  # Lightning warns when any lacks `betas`
def test_same_names_as_lightning():
    pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.callbacks import LearningRateMonitor as PLMonitor

    adam1, adam2 = torch.optim.Adam(params()), torch.optim.Adam(params(2))
    sgd = torch.optim.SGD([{"params": params()}, {"params": params(), "name": "head"}], lr=0.1)
    configs = [sched_config(torch.optim.lr_scheduler.StepLR(adam1, 1)),
               sched_config(torch.optim.lr_scheduler.StepLR(sgd, 1), interval="step")]
    trainer = StubTrainer([adam1, sgd, adam2], configs)
    pl_monitor = PLMonitor(log_momentum=True, log_weight_decay=True)
    pl_monitor.on_train_start(trainer)
    ours, names = names_after_start(trainer, log_momentum=True, log_weight_decay=True)
    assert names == list(pl_monitor.lrs)
    assert list(ours.last_momentum_values) == list(pl_monitor.last_momentum_values)


def test_step_and_epoch_logging_follow_each_schedulers_interval():
    stepped, epoched, plain = (torch.optim.SGD(params(), lr=lr) for lr in (0.1, 0.2, 0.3))
    configs = [sched_config(torch.optim.lr_scheduler.StepLR(stepped, 1), interval="step"),
               sched_config(torch.optim.lr_scheduler.StepLR(epoched, 1), interval="epoch")]
    trainer = StubTrainer([stepped, epoched, plain], configs, global_step=4)
    monitor, _ = names_after_start(trainer)
    logger = trainer.loggers[0]

    monitor.on_train_batch_start(trainer, None, None, 0)
    assert logger.calls == [(4, {"lr-SGD": 0.1, "lr-SGD-2": 0.3})]
    logger.calls.clear()
    monitor.on_train_epoch_start(trainer, None)
    assert logger.calls == [(4, {"lr-SGD-1": 0.2, "lr-SGD-2": 0.3})]
    assert monitor.lrs == {"lr-SGD": [0.1], "lr-SGD-1": [0.2], "lr-SGD-2": [0.3, 0.3]}
    assert trainer.callback_metrics["lr-SGD-1"] == torch.tensor(0.2)


def test_logging_interval_overrides_the_schedulers():
    opt = torch.optim.SGD(params(), lr=0.1)
    trainer = StubTrainer([opt], [sched_config(torch.optim.lr_scheduler.StepLR(opt, 1), interval="epoch")])
    monitor, _ = names_after_start(trainer, logging_interval="step")
    monitor.on_train_epoch_start(trainer, None)
    assert trainer.loggers[0].calls == []
    monitor.on_train_batch_start(trainer, None, None, 0)
    assert trainer.loggers[0].calls == [(0, {"lr-SGD": 0.1})]


def test_step_logging_follows_log_every_n_steps():
    opt = torch.optim.SGD(params(), lr=0.1)
    trainer = StubTrainer([opt], log_every_n_steps=3)
    monitor, _ = names_after_start(trainer, logging_interval="step")
    for step in range(7):
        trainer.global_step = step
        monitor.on_train_batch_start(trainer, None, None, step)
    assert [step for step, _ in trainer.loggers[0].calls] == [2, 5]
    trainer.log_every_n_steps = 0
    monitor.on_train_batch_start(trainer, None, None, 0)
    assert len(trainer.loggers[0].calls) == 2


def test_momentum_and_weight_decay():
    adam = torch.optim.Adam(params(), lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)
    sgd = torch.optim.SGD(params(), lr=0.1, momentum=0.9)
    trainer = StubTrainer([adam, sgd])
    monitor, _ = names_after_start(trainer, logging_interval="epoch", log_momentum=True, log_weight_decay=True)
    monitor.on_train_epoch_start(trainer, None)
    assert trainer.loggers[0].calls[0][1] == pytest.approx({
        "lr-Adam": 0.01, "lr-Adam-momentum": 0.8, "lr-Adam-weight_decay": 0.1,
        "lr-SGD": 0.1, "lr-SGD-momentum": 0.9, "lr-SGD-weight_decay": 0.0})


def test_momentum_warning_for_optimizers_without_momentum():
    with pytest.warns(RuntimeWarning, match="optimizers do not have momentum.*neither `momentum` nor `betas`"):
        names_after_start(StubTrainer([torch.optim.Adagrad(params())]), log_momentum=True)


def test_history_moves_when_an_optimizer_gains_a_parameter_group():
    opt = torch.optim.SGD(params(), lr=0.1)
    trainer = StubTrainer([opt])
    monitor, _ = names_after_start(trainer, logging_interval="epoch")
    monitor.on_train_epoch_start(trainer, None)
    opt.add_param_group({"params": params(), "lr": 0.01})  # e.g. a finetuning callback unfreezes a layer
    monitor.on_train_epoch_start(trainer, None)
    assert monitor.lrs == {"lr-SGD/pg1": [0.1, 0.1], "lr-SGD/pg2": [0.01]}


def test_log_key_prefix_goes_before_every_name():
    adam = torch.optim.Adam(params(), lr=0.01)
    sgd = torch.optim.SGD([{"params": params()}, {"params": params(), "name": "head"}], lr=0.1, momentum=0.9)
    trainer = StubTrainer([adam, sgd], [sched_config(torch.optim.lr_scheduler.StepLR(adam, 1), name="warmup")])
    monitor, names = names_after_start(trainer, log_key_prefix="optim/", log_momentum=True, logging_interval="epoch")
    assert names == ["optim/warmup", "optim/lr-SGD/pg1", "optim/lr-SGD/head"]
    monitor.on_train_epoch_start(trainer, None)
    assert sorted(trainer.loggers[0].calls[0][1]) == [
        "optim/lr-SGD/head", "optim/lr-SGD/head-momentum", "optim/lr-SGD/pg1", "optim/lr-SGD/pg1-momentum",
        "optim/warmup", "optim/warmup-momentum"]
    assert "optim/warmup" in trainer.callback_metrics and list(monitor.lrs) == names
    assert names_after_start(StubTrainer([adam]), log_key_prefix=None)[1] == ["lr-Adam"]


def test_errors():
    with pytest.raises(MisconfigurationException, match=r"logging_interval='batch'.*'step', 'epoch' or None"):
        LearningRateMonitor(logging_interval="batch")
    with pytest.raises(MisconfigurationException, match=r"log_key_prefix=3\): use a string such as 'optim/'"):
        LearningRateMonitor(log_key_prefix=3)
    trainer = StubTrainer([torch.optim.SGD(params(), lr=0.1)], loggers=[])
    with pytest.raises(MisconfigurationException,
                       match="Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger.*logger="):
        LearningRateMonitor().on_train_start(trainer, None)


# ------------------------------------------------------------------------------------------ end to end


def fit_with_monitor(pl, tmp_path, monitor, **trainer_kwargs):
    """The same small run under volt or Lightning (`pl` is the package)."""
    from torch.utils.data import DataLoader, TensorDataset

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=1.0, momentum=0.5)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    trainer = pl.Trainer(max_epochs=2, default_root_dir=str(tmp_path), callbacks=[monitor], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, **trainer_kwargs)
    trainer.fit(Model(), DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2))
    return trainer


def test_fit_logs_the_schedule_through_the_loggers(tmp_path):
    import volt
    from volt.loggers import CSVLogger

    monitor = LearningRateMonitor(log_momentum=True)
    logger = CSVLogger(str(tmp_path))
    trainer = fit_with_monitor(volt, tmp_path, monitor, logger=logger, log_every_n_steps=2)
    assert monitor.lrs == {"lr-SGD": [0.5, 0.125, 0.03125, 0.0078125]}  # before steps 1, 3, 5, 7
    assert trainer.callback_metrics["lr-SGD-momentum"] == 0.5
    with open(f"{logger.log_dir}/metrics.csv") as f:
        text = f.read()
    assert "lr-SGD" in text.splitlines()[0] and "0.125" in text


def test_same_learning_rates_as_lightning(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    import volt
    from volt.loggers import CSVLogger

    ours, theirs = LearningRateMonitor(), pl.callbacks.LearningRateMonitor()
    fit_with_monitor(volt, tmp_path / "volt", ours, logger=CSVLogger(str(tmp_path / "volt")), log_every_n_steps=3)
    fit_with_monitor(pl, tmp_path / "pl", theirs, logger=pl.loggers.CSVLogger(str(tmp_path / "pl")),
                     log_every_n_steps=3)
    assert ours.lrs == theirs.lrs


def test_fast_dev_run_has_no_logger_and_no_error(tmp_path):
    import volt

    monitor = LearningRateMonitor()
    fit_with_monitor(volt, tmp_path, monitor, fast_dev_run=2)
    assert list(monitor.lrs) == ["lr-SGD"]


def manual_two_optimizers(pl):
    """Manual optimization stepping two optimizers per batch: global_step grows by 2 a batch."""

    class TwoOptimizers(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.first, self.second = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            opts = self.optimizers()
            for opt in opts:
                opt.zero_grad()
            self.manual_backward((self.first(batch[0]) + self.second(batch[0])).sum())
            for opt in opts:
                opt.step()

        def configure_optimizers(self):
            return [torch.optim.SGD(self.first.parameters(), lr=0.1), torch.optim.Adam(self.second.parameters())]

    return TwoOptimizers


@pytest.mark.parametrize("interval", ["step", None])
def test_manual_optimization_with_two_optimizers_logs_as_lightning(tmp_path, interval):
    """The monitor logs at the Trainer's step-metric positions (batches that stepped), not at global_step, which
    grows by two a batch here: with log_every_n_steps=2 it logged nothing before, and at the wrong steps."""
    pl = pytest.importorskip("pytorch_lightning")
    import volt
    from torch.utils.data import DataLoader, TensorDataset

    from helpers import memory_logger_class

    calls = {}
    for name, framework in (("pl", pl), ("volt", volt)):
        logger = memory_logger_class(framework.loggers.Logger)()
        trainer = framework.Trainer(max_epochs=2, logger=logger, log_every_n_steps=2, enable_progress_bar=False,
                                    enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                                    callbacks=[framework.callbacks.LearningRateMonitor(logging_interval=interval)])
        trainer.fit(manual_two_optimizers(framework)(), DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2))
        calls[name] = logger.metrics
    assert calls["volt"] == calls["pl"]
    steps = [step for step, metrics in calls["volt"]]
    assert steps == ([1, 3, 5, 7] if interval == "step" else [0, 1, 3, 4, 5, 7])
