"""Trainer(plugins=[...]): precision plugins, cluster environments (SLURMEnvironment(auto_requeue=...)), checkpoint
I/O plugins and TorchSyncBatchNorm, through the public API; and the checkpoint I/O plugins themselves."""
import os
import signal
import threading
import time
from io import BytesIO

import pytest
import torch

import volt
from helpers import BoringModel, loader
from volt.plugins import (AsyncCheckpointIO, CheckpointIO, DoublePrecision, HalfPrecision, LayerSync, MixedPrecision,
                          Precision, TorchCheckpointIO, TorchSyncBatchNorm)
from volt.callbacks import ModelCheckpoint
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


class _ManualModel(BoringModel):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(self.loss(batch))
        optimizer.step()


@pytest.mark.parametrize("model_class", [BoringModel, _ManualModel])
def test_a_precision_plugin_that_overrides_optimizer_step_runs_every_step(model_class):
    """The fit loop calls `optimizer.step` itself only when the plugin's `optimizer_step` is Precision's own."""

    class CountingPrecision(Precision):
        steps = 0

        def optimizer_step(self, optimizer, closure, after_closure, automatic, **kwargs):
            CountingPrecision.steps += 1
            return super().optimizer_step(optimizer, closure, after_closure, automatic, **kwargs)

    trainer = make_trainer(plugins=[CountingPrecision()])
    model = model_class()
    before = model.layer.weight.detach().clone()
    trainer.fit(model, loader())
    assert CountingPrecision.steps == trainer.global_step == 4
    assert not torch.equal(model.layer.weight, before)


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
    with pytest.raises(ValueError, match=r"Passed `MixedPrecision\(precision='16-true'\)`. Precision must be '16-mixed' or"):
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
    assert slow.threads == {"volt-checkpoint-writer"}


def test_async_checkpoint_io_raises_a_failed_write_at_the_next_call_or_teardown():
    io = AsyncCheckpointIO(SlowIO(delay=0.05))
    io.save_checkpoint({"state_dict": {"w": torch.ones(1)}}, "fail.ckpt")
    with pytest.raises(RuntimeError, match="fail.ckpt in the background .* failed: OSError.*disk full") as error:
        io.teardown()
    assert isinstance(error.value.__cause__, OSError)
    io.save_checkpoint({"state_dict": {"w": torch.ones(1)}}, "fail.ckpt")
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"state_dict": {"w": torch.ones(1)}}, "ok.ckpt")
    io.teardown()  # the failure was reported once


def test_async_checkpoint_io_defaults_to_volts_files(tmp_path):
    io = AsyncCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, tmp_path / "a.ckpt")
    io.teardown()
    assert torch.equal(torch.load(tmp_path / "a.ckpt", weights_only=True)["state_dict"]["w"], torch.ones(2))


class MemoryIO(CheckpointIO):
    """Keeps checkpoints as bytes in a dict (nothing reaches the disk; removed ones move to `removed`) and records
    every call, saves with their storage options and thread."""

    def __init__(self) -> None:
        self.files, self.removed, self.calls = {}, {}, []

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.calls.append(("save", os.path.basename(path), storage_options, threading.current_thread().name))
        buffer = BytesIO()
        torch.save(checkpoint, buffer)
        self.files[os.path.basename(path)] = buffer.getvalue()

    def load_checkpoint(self, path, storage_options=None, weights_only=True):  # no map_location: the Trainer calls
        self.calls.append(("load", os.path.basename(path)))       # it as Lightning's does, without one
        return torch.load(BytesIO(self.files[os.path.basename(path)]), weights_only=True)

    def remove_checkpoint(self, path):
        self.calls.append(("remove", os.path.basename(path)))
        self.removed[os.path.basename(path)] = self.files.pop(os.path.basename(path))


def _fit_with_io(folder, plugins, ckpt_path=None):
    """Two epochs of 4 steps, a top-1 checkpoint every 2 steps; the final weight."""
    volt.seed_everything(0)
    model = BoringModel()
    every_2_steps = ModelCheckpoint(dirpath=folder, every_n_train_steps=2, save_top_k=1)
    make_trainer(max_epochs=2, plugins=plugins, callbacks=[every_2_steps], enable_checkpointing=True,
                 default_root_dir=folder).fit(model, loader(), ckpt_path=ckpt_path)
    return model.layer.weight.detach().clone()


_SAVED = ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "epoch=1-step=6.ckpt", "epoch=1-step=8.ckpt"]


def test_a_checkpoint_io_plugin_writes_reads_and_removes_every_checkpoint_file(tmp_path):
    expected = _fit_with_io(tmp_path / "plain", None)
    memory, folder = MemoryIO(), tmp_path / "memory"
    assert torch.equal(_fit_with_io(folder, [memory]), expected)
    assert [call[1] for call in memory.calls if call[0] == "save"] == _SAVED
    assert [call[1] for call in memory.calls if call[0] == "remove"] == _SAVED[:-1]  # top 1: through the plugin
    assert list(memory.files) == _SAVED[-1:] and not folder.exists()  # nothing of it on the disk

    memory.files["epoch=0-step=4.ckpt"] = memory.removed["epoch=0-step=4.ckpt"]
    memory.calls.clear()
    assert torch.equal(_fit_with_io(folder, [memory], ckpt_path=folder / "epoch=0-step=4.ckpt"), expected)
    assert memory.calls[0] == ("load", "epoch=0-step=4.ckpt")

    trainer = make_trainer(plugins=[memory])
    trainer.validate(BoringModel(), loader(), verbose=False)
    trainer.save_checkpoint(tmp_path / "tagged.ckpt", storage_options={"bucket": "runs"})
    assert memory.calls[-1][:3] == ("save", "tagged.ckpt", {"bucket": "runs"})
    trainer = make_trainer()  # volt's own files take no storage options
    trainer.validate(BoringModel(), loader(), verbose=False)
    with pytest.raises(TypeError, match="TorchCheckpointIO.save_checkpoint takes no storage_options"):
        trainer.save_checkpoint(tmp_path / "x.ckpt", storage_options={"bucket": "runs"})


def test_an_async_checkpoint_io_plugin_writes_every_checkpoint_in_the_background_and_resumes_exactly(tmp_path):
    expected = _fit_with_io(tmp_path / "plain", None)
    memory, folder = MemoryIO(), tmp_path / "memory"
    assert torch.equal(_fit_with_io(folder, [AsyncCheckpointIO(memory)]), expected)
    saves = [call for call in memory.calls if call[0] == "save"]
    assert [call[1] for call in saves] == _SAVED and {call[3] for call in saves} == {"volt-checkpoint-writer"}
    # each removal follows the save that replaces it
    assert [call[0] for call in memory.calls] == ["save"] + ["save", "remove"] * 3
    assert list(memory.files) == _SAVED[-1:]

    memory.files["epoch=0-step=4.ckpt"] = memory.removed["epoch=0-step=4.ckpt"]
    resumed = _fit_with_io(folder, [AsyncCheckpointIO(memory)], ckpt_path=folder / "epoch=0-step=4.ckpt")
    assert torch.equal(resumed, expected)


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


def test_precision_plugin_contexts_as_lightning(quiet_lightning):
    """`module_init_context` creates modules in the plugin's dtype, `autocast_context_manager` is the forward's
    autocast: the same dtypes as Lightning's plugins give."""
    from pytorch_lightning.plugins import precision as theirs

    pairs = [(HalfPrecision("bf16-true"), theirs.HalfPrecision("bf16-true")),
             (DoublePrecision(), theirs.DoublePrecision()), (MixedPrecision("bf16-mixed", "cpu"),
                                                            theirs.MixedPrecision("bf16-mixed", "cpu"))]
    for ours, lightnings in pairs:
        dtypes = []
        for plugin in (ours, lightnings):
            with plugin.module_init_context():
                dtypes.append(torch.nn.Linear(2, 2).weight.dtype)
        assert dtypes[0] == dtypes[1] and torch.get_default_dtype() == torch.float32
    ours, lightnings = pairs[2][0].autocast_context_manager(), pairs[2][1].autocast_context_manager()
    assert isinstance(ours, torch.autocast) and (ours.device, ours.fast_dtype) == ("cpu", torch.bfloat16)
    assert (ours.device, ours.fast_dtype) == (lightnings.device, lightnings.fast_dtype)


def test_a_strategy_takes_the_precision_plugin_and_creates_modules_in_its_dtype():
    """`SingleDeviceStrategy(precision_plugin=...)` (also DDP/FSDP) is the Trainer's precision plugin, as in
    Lightning; its `tensor_init_context` and `configure_model` create tensors in the plugin's dtype; a second
    precision elsewhere that disagrees is one clear error."""
    from volt.strategies import DDPStrategy, SingleDeviceStrategy

    for plugin, dtype in [(Precision(), torch.float32), (DoublePrecision(), torch.float64),
                          (HalfPrecision("16-true"), torch.float16)]:
        strategy = SingleDeviceStrategy(device=torch.device("cpu"), precision_plugin=plugin)
        with strategy.tensor_init_context(empty_init=True):
            assert torch.nn.Linear(2, 2).weight.dtype == dtype
    assert DDPStrategy(precision_plugin=Precision()).precision_plugin is not None

    class ConfiguredLater(BoringModel):
        def configure_model(self):
            self.late = torch.nn.Linear(2, 2)
            self.dtype_in_hook = self.late.weight.dtype
            self.register_buffer("phases", torch.complex(torch.ones(2), torch.ones(2)), persistent=False)

    plugin = DoublePrecision()
    trainer = make_trainer(strategy=SingleDeviceStrategy(precision_plugin=plugin), max_steps=1)
    model = ConfiguredLater()
    model.register_buffer("early_phases", torch.complex(torch.ones(2), torch.ones(2)), persistent=False)
    trainer.fit(model, loader())
    assert trainer.precision_plugin is plugin and trainer.precision == "64-true"
    assert model.dtype_in_hook == torch.float64 and model.layer.weight.dtype == torch.float64
    # complex buffers stay complex: created in configure_model they take the precision's complex dtype
    assert model.phases.dtype == torch.complex128 and model.early_phases.dtype == torch.complex64
    assert model.early_phases.imag.abs().sum() > 0
    with pytest.raises(MisconfigurationException, match="disagrees with the strategy's precision plugin"):
        make_trainer(strategy=SingleDeviceStrategy(precision_plugin=DoublePrecision()), precision="16-mixed")
    with pytest.raises(MisconfigurationException, match="pass it in one place only"):
        make_trainer(strategy=SingleDeviceStrategy(precision_plugin=DoublePrecision()), plugins=[Precision()])


def test_precision_plugins_clip_gradients_and_keep_lightnings_old_names(quiet_lightning):
    """`clip_gradients` clips as Lightning's plugins do (0: off) and is what `LightningModule.clip_gradients` calls;
    `connect` hands back what it is given; Lightning's pre-2.2 names still work, with its deprecation warning."""
    from pytorch_lightning.plugins import precision as theirs

    from volt.plugins import DoublePrecisionPlugin, HalfPrecisionPlugin, MixedPrecisionPlugin, PrecisionPlugin

    grads = []
    for plugin, algorithm in [(Precision(), "norm"), (theirs.Precision(), "norm"), (Precision(), "value"),
                              (theirs.Precision(), "value")]:
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 4)
        layer(torch.randn(3, 4)).sum().backward()
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
        plugin.clip_gradients(optimizer, 0.0, algorithm)
        assert layer.weight.grad.abs().max() > 0.05  # 0 turns clipping off
        plugin.clip_gradients(optimizer, clip_val=0.05, gradient_clip_algorithm=algorithm)
        grads.append(layer.weight.grad)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[2], grads[3]) and grads[2].abs().max() <= 0.05

    calls = []

    class Recording(Precision):
        def clip_gradients(self, optimizer, clip_val=0.0, gradient_clip_algorithm="norm"):
            calls.append((clip_val, gradient_clip_algorithm))

    make_trainer(plugins=[Recording()], max_steps=1, gradient_clip_val=0.5).fit(BoringModel(), loader())
    assert calls == [(0.5, "norm")]
    model = BoringModel()
    assert DoublePrecision().connect(model, [1], [2]) == (model, [1], [2])

    for old, new, args in [(PrecisionPlugin, Precision, ()), (DoublePrecisionPlugin, DoublePrecision, ()),
                           (HalfPrecisionPlugin, HalfPrecision, ()),
                           (MixedPrecisionPlugin, MixedPrecision, ("bf16-mixed", "cpu"))]:
        with pytest.deprecated_call(match=f"The `{old.__name__}` is deprecated"):
            plugin = old(*args)
        assert isinstance(plugin, new) and make_trainer(plugins=[plugin]).precision_plugin is plugin
