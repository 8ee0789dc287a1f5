"""Trainer(plugins=[...]): precision plugins, cluster environments (SLURMEnvironment(auto_requeue=...)), checkpoint
I/O plugins and TorchSyncBatchNorm, through the public API; and the checkpoint I/O plugins themselves."""
import signal
import threading
import time

import pytest
import torch

import volt
from helpers import BoringModel, loader
from volt.plugins import (AsyncCheckpointIO, CheckpointIO, DoublePrecision, HalfPrecision, LayerSync, MixedPrecision,
                          Precision, TorchCheckpointIO, TorchSyncBatchNorm)
from volt.plugins.environments import LightningEnvironment, SLURMEnvironment
from volt.utilities.exceptions import MisconfigurationException


def make_trainer(**kwargs):
    defaults = dict(max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
    return volt.Trainer(**{**defaults, **kwargs})


def test_precision_plugins_set_the_precision_and_run_it():
    trainer = make_trainer(plugins=[DoublePrecision()])
    model = BoringModel()
    trainer.fit(model, loader())
    assert trainer.precision == "64-true" and model.layer.weight.dtype == torch.float64
    assert make_trainer(plugins=MixedPrecision("bf16-mixed", "cpu")).precision == "bf16-mixed"
    assert make_trainer(plugins=[HalfPrecision("bf16-true")]).precision == "bf16-true"
    assert make_trainer(plugins=[Precision()]).precision == "32-true"
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    trainer = make_trainer(plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    assert trainer.scaler is scaler and trainer.precision_plugin.precision == "16-mixed"


@pytest.mark.parametrize("plugins, message", [
    ([DoublePrecision(), Precision()], "two precision plugins"),
    (["64-true"], r"plugins=\['64-true'\] is not a plugin volt accepts"),
    ([object()], "is not a plugin volt accepts. Pass a precision plugin"),
    ([LayerSync()], r"plugins=\[LayerSync\(\)\]: volt synchronises BatchNorm layers itself"),
])
def test_bad_plugins_are_one_clear_error(plugins, message):
    with pytest.raises(MisconfigurationException, match=message):
        make_trainer(plugins=plugins)


def test_a_precision_plugin_and_the_precision_argument_conflict():
    with pytest.raises(MisconfigurationException, match=r"both `precision='bf16-mixed'` and `plugins=\[DoublePrecision"):
        make_trainer(precision="bf16-mixed", plugins=[DoublePrecision()])
    with pytest.raises(ValueError, match="choose '16-mixed' or 'bf16-mixed'"):
        MixedPrecision("16-true", "cpu")


def test_sync_batchnorm_plugin_is_sync_batchnorm_and_converts_layers():
    assert make_trainer(plugins=[TorchSyncBatchNorm()]).sync_batchnorm
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    synced = TorchSyncBatchNorm().apply(model)
    assert isinstance(synced[1], torch.nn.SyncBatchNorm)
    reverted = TorchSyncBatchNorm().revert(synced)
    assert not isinstance(reverted[1], torch.nn.SyncBatchNorm)
    assert reverted(torch.randn(5, 3)).shape == (5, 4)  # a working batch norm again


def test_checkpoint_io_plugin_is_the_strategys_and_torch_io_is_the_default(tmp_path):
    assert isinstance(make_trainer().strategy.checkpoint_io, TorchCheckpointIO)
    io = AsyncCheckpointIO()
    assert make_trainer(plugins=[io]).strategy.checkpoint_io is io


def test_the_strategy_tears_its_checkpoint_io_down_at_the_end_of_a_stage():
    class Recording(TorchCheckpointIO):
        torn_down = 0

        def teardown(self):
            self.torn_down += 1

    io = Recording()
    trainer = make_trainer(plugins=[io])
    trainer.fit(BoringModel(), loader())
    trainer.validate(BoringModel(), loader(), verbose=False)
    assert io.torn_down == 2


def test_torch_checkpoint_io_writes_volt_files_and_loads_safely(tmp_path):
    io = TorchCheckpointIO()
    path = tmp_path / "a.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 3
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(2))
    assert not any(p.name != "a.ckpt" for p in tmp_path.iterdir())  # no temporary file left behind
    with pytest.raises(TypeError, match="takes no storage_options"):
        io.save_checkpoint({}, path, storage_options={"x": 1})
    io.remove_checkpoint(path)
    assert not path.exists()


class SlowIO(CheckpointIO):
    """Writes after `delay` seconds; fails for paths containing "fail"; records what it wrote."""

    def __init__(self, delay: float = 0.3) -> None:
        self.delay = delay
        self.written = {}
        self.threads = set()

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if "fail" in str(path):
            raise OSError(f"disk full writing {path}")
        self.written[str(path)] = {k: v.clone() for k, v in checkpoint["state_dict"].items()}

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return {"state_dict": self.written[str(path)]}

    def remove_checkpoint(self, path):
        del self.written[str(path)]


def test_async_checkpoint_io_writes_in_the_background_what_the_state_was_when_saved():
    slow = SlowIO()
    io = AsyncCheckpointIO(slow)
    weight = torch.zeros(3)
    started = time.monotonic()
    io.save_checkpoint({"state_dict": {"w": weight}}, "one.ckpt")
    assert time.monotonic() - started < slow.delay  # returned before the write
    weight += 1  # training goes on; the checkpoint keeps the values it had when saved
    assert torch.equal(io.load_checkpoint("one.ckpt")["state_dict"]["w"], torch.zeros(3))  # load waits for it
    io.save_checkpoint({"state_dict": {"w": weight}}, "two.ckpt")
    io.save_checkpoint({"state_dict": {"w": weight * 2}}, "three.ckpt")  # waits for "two": one write in flight
    assert "two.ckpt" in slow.written
    io.teardown()
    assert torch.equal(slow.written["three.ckpt"]["w"], torch.full((3,), 2.0))
    assert slow.threads == {"volt-checkpoint-writer_0"}


def test_async_checkpoint_io_raises_a_failed_write_at_the_next_call_or_teardown():
    io = AsyncCheckpointIO(SlowIO(delay=0.05))
    io.save_checkpoint({"state_dict": {"w": torch.ones(1)}}, "fail.ckpt")
    with pytest.raises(OSError, match="disk full writing fail.ckpt"):
        io.teardown()
    io.save_checkpoint({"state_dict": {"w": torch.ones(1)}}, "fail.ckpt")
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"state_dict": {"w": torch.ones(1)}}, "ok.ckpt")
    io.teardown()


def test_async_checkpoint_io_defaults_to_volts_files(tmp_path):
    io = AsyncCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, tmp_path / "a.ckpt")
    io.teardown()
    assert torch.equal(torch.load(tmp_path / "a.ckpt", weights_only=True)["state_dict"]["w"], torch.ones(2))


class HandlerSpy(volt.Callback):
    """Records, while training runs, which signals volt handles."""

    def on_train_start(self, trainer, pl_module):
        self.handled = {sig: callable(signal.getsignal(sig)) for sig in (signal.SIGUSR1, signal.SIGUSR2)}


@pytest.mark.parametrize("plugin, usr1, usr2", [
    (None, True, False),
    (SLURMEnvironment(), True, False),
    (SLURMEnvironment(auto_requeue=False), False, False),
    (SLURMEnvironment(requeue_signal=signal.SIGUSR2), False, True),
])
def test_slurm_environment_controls_the_requeue_signal(monkeypatch, plugin, usr1, usr2):
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.delenv("SLURM_NTASKS", raising=False)  # one process: a job step without srun
    spy = HandlerSpy()
    make_trainer(callbacks=[spy], plugins=[plugin] if plugin else None).fit(BoringModel(), loader())
    assert spy.handled == {signal.SIGUSR1: usr1, signal.SIGUSR2: usr2}
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # restored after fit


def test_a_cluster_environment_plugin_is_used_by_the_strategy(monkeypatch):
    for key in ("LOCAL_RANK", "WORLD_SIZE", "RANK", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    env = LightningEnvironment()
    trainer = make_trainer(accelerator="cpu", devices=2, plugins=[env])
    assert trainer.strategy.cluster_environment is env and trainer.world_size == 2
    assert make_trainer(plugins=[SLURMEnvironment(auto_requeue=False)]).world_size == 1  # not inside SLURM here
