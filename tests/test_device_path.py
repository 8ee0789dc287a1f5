"""Data to the device without stalls, and no host synchronisation in a training step with the Trainer's defaults.

On the CPU, `DeviceTensor` stands for a tensor on a GPU: every way of reading its value on the host (`item()`,
`bool()`, `float()`, `tolist()`, printing, a blocking copy into host memory, ...) is what would make the host wait
for the GPU, and while a test arms it, such a read raises. The batches of a fit are DeviceTensors, so everything
computed from them (outputs, loss, logged values) is too: a training step with logging, progress bar and
checkpointing that reads none of them on the host makes no device-to-host synchronisation. A non-blocking copy
into host memory is allowed: that is how volt reads values for loggers and progress bars (volt/utilities/
host_copy.py), and on a GPU it does not wait. The tests marked for CUDA (skipped here) check the real thing with
`torch.cuda.set_sync_debug_mode("error")`.
"""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import volt
from helpers import MemoryLogger, trainer
from volt.callbacks import RichProgressBar, TQDMProgressBar
from volt.trainer import logger_writes
from volt.trainer.data import wrap_loader
from volt.utilities.host_copy import HostCopy

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

_HOST_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
               torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.cpu,
               torch.Tensor.__array__, torch.Tensor.__format__, torch.Tensor.__repr__, torch.equal, torch.allclose,
               torch.is_nonzero, torch.Tensor.nonzero, torch.nonzero, torch.Tensor.is_nonzero}


class DeviceTensor(torch.Tensor):
    """A CPU tensor standing for one on a GPU: while `armed`, reading its value on the host raises."""

    armed = False

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if cls.armed and (func in _HOST_READS or _blocking_copy_to_host(func, args, kwargs)):
            raise AssertionError(f"host read of a device tensor in a training step: {func.__name__}")
        return super().__torch_function__(func, types, args, kwargs)


def _blocking_copy_to_host(func, args, kwargs) -> bool:
    non_blocking = kwargs.get("non_blocking", args[2] if len(args) > 2 and isinstance(args[2], bool) else False)
    if func is torch.Tensor.copy_:
        return isinstance(args[1], DeviceTensor) and not non_blocking
    if func is torch.Tensor.to:
        device = kwargs.get("device", args[1] if len(args) > 1 else None)
        return device is not None and torch.device(device).type == "cpu" and not non_blocking
    return False


class ArmInSteadyState(volt.Callback):
    """Arms DeviceTensor from the third training batch on, except during validation and epoch ends."""

    def __init__(self):
        self.armed_batches = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx >= 2:
            DeviceTensor.armed = True
            self.armed_batches += 1

    def on_validation_start(self, trainer, module):
        DeviceTensor.armed = False

    def on_train_epoch_end(self, trainer, module):
        DeviceTensor.armed = False


class Classifier(volt.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        self.log("loss", loss, prog_bar=True)
        self.log("acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def device_batches(n: int = 96, batch_size: int = 8, kind: type = DeviceTensor) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=generator).as_subclass(kind)
    y = torch.randint(0, 3, (n,), generator=generator).as_subclass(kind)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def plain_batches() -> DataLoader:
    return device_batches(kind=torch.Tensor)


@pytest.fixture
def redraw_every_batch(monkeypatch):
    """Either default bar (rich when installed, else tqdm) redraws, reading the metrics, at every batch end."""
    monkeypatch.setattr(TQDMProgressBar, "min_refresh_interval", 0.0)
    monkeypatch.setattr(RichProgressBar, "max_redraws_per_second", 1e9)


def test_default_training_step_reads_nothing_on_the_host(tmp_path, redraw_every_batch, monkeypatch, capsys):
    monkeypatch.setattr(volt.checkpoint, "_TENSOR_TYPES", (torch.Tensor, torch.nn.Parameter, DeviceTensor))
    arm = ArmInSteadyState()
    fit = volt.Trainer(default_root_dir=tmp_path, max_epochs=2, log_every_n_steps=2, callbacks=[arm])
    try:
        fit.fit(Classifier(), device_batches(), device_batches(32))
    finally:
        DeviceTensor.armed = False
    assert arm.armed_batches == 2 * 10
    assert fit.checkpoint_callback.best_model_path  # checkpointing, logging and the progress bar were on
    assert fit.logger.log_dir and fit.progress_bar_callback is not None


def test_the_guard_catches_a_host_read(tmp_path):
    """The same fit with one `.item()` in the step fails: the test above could fail."""

    class Reads(Classifier):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            if loss > 100:  # bool() of a device tensor: waits for the device
                raise RuntimeError
            return loss

    try:
        with pytest.raises(AssertionError, match="host read of a device tensor in a training step: __bool__"):
            trainer(tmp_path, callbacks=[ArmInSteadyState()]).fit(Reads(), device_batches())
    finally:
        DeviceTensor.armed = False


class Deferred:
    """A HostCopy whose values land only when `land()` is called (what a busy GPU does)."""

    landed = False

    def __init__(self, values):
        self.copy = HostCopy(values)

    def ready(self):
        return Deferred.landed

    def numbers(self):
        return self.copy.numbers()


def test_logger_rows_wait_for_their_values_and_keep_their_order(tmp_path, monkeypatch):
    """Rows whose values have not landed are written later, in order, and all before a checkpoint is built."""
    monkeypatch.setattr(logger_writes, "HostCopy", Deferred)
    Deferred.landed = False
    seen_at_checkpoint = []

    class Watch(volt.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx == 5:
                assert logger.metrics == []  # nothing landed: nothing written, and the step did not wait
                trainer.save_checkpoint(tmp_path / "mid.ckpt")
                seen_at_checkpoint.extend(step for step, _ in logger.metrics)

    logger = MemoryLogger()
    trainer(tmp_path, logger=logger, log_every_n_steps=2, callbacks=[Watch()]).fit(Classifier(), plain_batches())
    assert seen_at_checkpoint == [1, 3]  # flushed before the checkpoint (step 5 is logged after this hook)
    steps = [step for step, metrics in logger.metrics if "loss" in metrics]
    assert steps == [1, 3, 5, 7, 9, 11]  # the rest at the end of the run, in order
    assert "acc_epoch" in logger.metrics[-1][1]

    Deferred.landed = True  # values that land at once are written at once: the same rows
    landed_logger = MemoryLogger()
    trainer(tmp_path, logger=landed_logger, log_every_n_steps=2).fit(Classifier(), plain_batches())
    assert [step for step, _ in landed_logger.metrics] == [step for step, _ in logger.metrics]


def test_training_loader_is_pinned_on_a_copy():
    user = DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=2)
    pinned = wrap_loader(user, pin_memory=True)
    assert pinned.pin_memory and not user.pin_memory
    iterable = DataLoader(torch.utils.data.IterableDataset.__new__(_Numbers), batch_size=2)
    assert wrap_loader(iterable, pin_memory=True).pin_memory and not iterable.pin_memory
    assert wrap_loader(user) is not user and not wrap_loader(user).pin_memory


class _Numbers(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(range(4))


# ------------------------------------------------------------------------------------------------ on a GPU
@cuda
def test_no_sync_in_steady_state_on_cuda(tmp_path, redraw_every_batch, capsys):
    """torch's own sync detector, armed around every training step after the first two."""

    class SyncDebug(ArmInSteadyState):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx >= 2:
                torch.cuda.set_sync_debug_mode("error")
                self.armed_batches += 1

        def on_validation_start(self, trainer, module):
            torch.cuda.set_sync_debug_mode("default")

        on_train_epoch_end = on_validation_start

    arm = SyncDebug()
    x, y = torch.randn(384, 8), torch.randint(0, 3, (384,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8, num_workers=2)
    fit = volt.Trainer(accelerator="gpu", devices=1, default_root_dir=tmp_path, max_epochs=2, log_every_n_steps=5,
                       callbacks=[arm])
    try:
        fit.fit(Classifier(), loader, DataLoader(TensorDataset(x[:64], y[:64]), batch_size=8))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert arm.armed_batches == 2 * 46
    assert fit.checkpoint_callback.best_model_path


@cuda
@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_reach_the_gpu_in_order_and_intact(tmp_path, num_workers):
    """With workers the batches are prefetched on a side stream; without, copied in place. Either way each step sees
    exactly its batch, on the GPU."""
    x = torch.arange(64 * 8, dtype=torch.float32).reshape(64, 8)
    y = torch.arange(64) % 3
    seen = []

    class Record(Classifier):
        def training_step(self, batch, batch_idx):
            assert batch[0].is_cuda and batch[1].is_cuda
            torch.cuda._sleep(1_000_000)  # a slow step: a copy racing it would show in the values
            seen.append(batch[0][:, 0].clone())
            return super().training_step(batch, batch_idx)

    trainer(tmp_path, accelerator="gpu", devices=1, max_epochs=1).fit(
        Record(), DataLoader(TensorDataset(x, y), batch_size=8, num_workers=num_workers))
    assert torch.equal(torch.cat(seen).cpu(), x[:, 0])


@cuda
def test_overridden_transfer_hooks_keep_their_place_on_cuda(tmp_path):
    """With the transfer hooks overridden, nothing is prefetched: each batch's hooks run right before its step."""
    calls = []

    class Hooked(Classifier):
        def on_before_batch_transfer(self, batch, dataloader_idx):
            calls.append("on_before_batch_transfer")
            return batch

        def transfer_batch_to_device(self, batch, device, dataloader_idx):
            calls.append("transfer_batch_to_device")
            return super().transfer_batch_to_device(batch, device, dataloader_idx)

        def on_after_batch_transfer(self, batch, dataloader_idx):
            calls.append("on_after_batch_transfer")
            return batch

        def on_train_batch_start(self, batch, batch_idx):
            calls.append("on_train_batch_start")

        def on_train_batch_end(self, outputs, batch, batch_idx):
            calls.append("on_train_batch_end")

    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    trainer(tmp_path, accelerator="gpu", devices=1).fit(
        Hooked(), DataLoader(TensorDataset(x, y), batch_size=8, num_workers=2))
    assert calls == ["on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer",
                     "on_train_batch_start", "on_train_batch_end"] * 4
