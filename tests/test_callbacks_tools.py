"""LambdaCallback, OnExceptionCheckpoint, BasePredictionWriter, DeviceStatsMonitor, ThroughputMonitor,
SpikeDetection and the default progress bar and summary, through the Trainer's entry points."""
import json
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import volt
from volt.callbacks import (BasePredictionWriter, DeviceStatsMonitor, LambdaCallback, ModelSummary,
                            OnExceptionCheckpoint, RichModelSummary, RichProgressBar, SpikeDetection, ThroughputMonitor,
                            TQDMProgressBar)
from volt.callbacks.spike import TrainingSpikeException
from volt.utilities import measure_flops
from volt.utilities.exceptions import MisconfigurationException
from volt.utilities.throughput import Throughput

from helpers import BoringModel, MemoryLogger, dataset, trainer


# ------------------------------------------------------------------------------------------ LambdaCallback
def test_lambda_callback_calls_the_given_hooks_only(tmp_path):
    calls = []
    callback = LambdaCallback(on_fit_start=lambda t, m: calls.append(("fit_start", t.global_step)),
                              on_train_batch_end=lambda t, m, out, batch, idx: calls.append(("batch", idx)),
                              on_train_end=None)
    trainer(tmp_path, limit_train_batches=2, callbacks=[callback]).fit(BoringModel())
    assert calls == [("fit_start", 0), ("batch", 0), ("batch", 1)]
    assert "on_train_end" not in vars(callback)


def test_lambda_callback_bad_arguments():
    with pytest.raises(TypeError, match=r"unknown hook name\(s\) \['on_train_step'\]"):
        LambdaCallback(on_train_step=print)
    with pytest.raises(TypeError, match=r"LambdaCallback\(setup=...\) must be a function, got int"):
        LambdaCallback(setup=3)


# ------------------------------------------------------------------------------------------ OnExceptionCheckpoint
class FailsAt(BoringModel):
    def __init__(self, batch: int):
        super().__init__()
        self.fail_batch = batch

    def training_step(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == self.fail_batch:
            raise RuntimeError("bad batch")
        return super().training_step(batch, batch_idx)


def test_exception_checkpoint_is_written_then_removed_by_a_successful_run(tmp_path):
    callback = OnExceptionCheckpoint(tmp_path / "crash")
    with pytest.raises(RuntimeError, match="bad batch"):
        trainer(tmp_path, max_epochs=3, callbacks=[callback]).fit(FailsAt(batch=2))
    assert callback.ckpt_path == str(tmp_path / "crash" / "on_exception.ckpt")
    saved = torch.load(callback.ckpt_path, weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (1, 6)
    resumed = trainer(tmp_path, max_epochs=3, callbacks=[callback])
    resumed.fit(BoringModel(), ckpt_path=callback.ckpt_path)
    assert resumed.global_step == 12
    assert not (tmp_path / "crash" / "on_exception.ckpt").exists()


def test_exception_checkpoint_needs_a_filename(tmp_path):
    with pytest.raises(ValueError, match="the filename cannot be empty"):
        OnExceptionCheckpoint(tmp_path, filename="")


# ------------------------------------------------------------------------------------------ BasePredictionWriter
class Predictor(BoringModel):
    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self(batch[0])


class Writer(BasePredictionWriter):
    def __init__(self, interval):
        super().__init__(interval)
        self.batches, self.epochs = [], []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        self.batches.append((dataloader_idx, batch_idx, list(batch_indices), prediction))

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        self.epochs.append((predictions, batch_indices))


@pytest.mark.parametrize("interval", ["batch", "epoch", "batch_and_epoch"])
def test_prediction_writer_gets_predictions_and_sample_indices(tmp_path, interval):
    """A shuffled loader: each prediction comes with the dataset indices of its samples, which map it back."""
    model = Predictor()
    data = dataset(8)
    writer = Writer(interval)
    torch.manual_seed(1)
    out = trainer(tmp_path, callbacks=[writer]).predict(model, DataLoader(data, batch_size=3, shuffle=True),
                                                        return_predictions=False)
    assert out is None
    expected = model(data.tensors[0]).detach()
    if "batch" in interval:
        assert [(d, b) for d, b, _, _ in writer.batches] == [(0, 0), (0, 1), (0, 2)]
        assert sorted(i for _, _, indices, _ in writer.batches for i in indices) == list(range(8))
        for _, _, indices, prediction in writer.batches:
            assert torch.allclose(prediction, expected[indices])
    else:
        assert writer.batches == []
    if "epoch" in interval:
        [(predictions, batch_indices)] = writer.epochs
        assert len(predictions) == 3 and len(batch_indices) == 1 and len(batch_indices[0]) == 3
        assert torch.allclose(torch.cat(predictions), expected[sum(batch_indices[0], [])])
    else:
        assert writer.epochs == []


def test_prediction_writer_with_two_dataloaders(tmp_path):
    writer = Writer("epoch")
    loaders = [DataLoader(dataset(4), batch_size=2), DataLoader(dataset(3), batch_size=2)]
    trainer(tmp_path, callbacks=[writer]).predict(Predictor(), loaders)
    [(predictions, batch_indices)] = writer.epochs
    assert [len(p) for p in predictions] == [2, 2]
    assert batch_indices == [[[0, 1], [2, 3]], [[0, 1], [2]]]


def test_prediction_writer_bad_interval_and_missing_override(tmp_path):
    with pytest.raises(MisconfigurationException, match=r"`write_interval` should be one of \['batch', 'epoch'"):
        BasePredictionWriter("step")
    with pytest.raises(NotImplementedError, match="override `write_on_batch_end`"):
        trainer(tmp_path, callbacks=[BasePredictionWriter()]).predict(Predictor(), DataLoader(dataset(2)))


# ------------------------------------------------------------------------------------------ DeviceStatsMonitor
def test_device_stats_logged_at_the_logging_interval(tmp_path):
    pytest.importorskip("psutil")
    logger = MemoryLogger()
    trainer(tmp_path, logger=logger, max_epochs=2, log_every_n_steps=2, num_sanity_val_steps=1,
            callbacks=[DeviceStatsMonitor()]).fit(BoringModel())
    start = "DeviceStatsMonitor.on_train_batch_start/"
    train = [(step, sorted(m)) for step, m in logger.metrics if start + "cpu_percent" in m]
    assert [step for step, _ in train] == [1, 3, 5, 7]  # steps 2, 4, 6, 8 (1-based), logged before each batch
    assert train[0][1] == [start + "cpu_percent", start + "cpu_swap_percent", start + "cpu_vm_percent"]
    ends = [step for step, m in logger.metrics
            if any(k.startswith("DeviceStatsMonitor.on_train_batch_end/") for k in m)]
    val = [step for step, m in logger.metrics if any(k.startswith("DeviceStatsMonitor.on_validation_batch_end/")
                                                      for k in m)]
    assert ends == [1, 3, 5, 7] and val == [3, 3, 7, 7]  # validation batches 2 and 4 of each epoch, no sanity check
    values = [v for _, m in logger.metrics for k, v in m.items() if k.startswith("DeviceStatsMonitor")]
    assert all(0 <= v <= 100 for v in values)


def test_device_stats_come_from_the_accelerator(tmp_path, monkeypatch):
    """As Lightning: on the CPU the statistics are the accelerator's (`CPUAccelerator.get_device_stats`, which reads
    `volt.accelerators.get_cpu_stats`), once per logged hook."""
    from unittest import mock

    import volt.accelerators

    logger = MemoryLogger()
    with mock.patch.object(volt.accelerators, "get_cpu_stats", return_value={"cpu_percent": 42.0}) as stats:
        trainer(tmp_path, logger=logger, max_steps=2, log_every_n_steps=1, limit_val_batches=0,
                callbacks=[DeviceStatsMonitor()]).fit(BoringModel())
    assert stats.call_count == 4  # before and after each of the 2 batches
    assert [m for _, m in logger.metrics if "DeviceStatsMonitor.on_train_batch_end/cpu_percent" in m][-1] == {
        "DeviceStatsMonitor.on_train_batch_end/cpu_percent": 42.0}


def test_device_stats_need_a_logger_and_psutil(tmp_path, monkeypatch):
    with pytest.raises(MisconfigurationException, match="Cannot use `DeviceStatsMonitor` callback with "
                                                        r"`Trainer\(logger=False\)`"):
        trainer(tmp_path, callbacks=[DeviceStatsMonitor()]).fit(BoringModel())
    from volt.callbacks import device_stats_monitor

    monkeypatch.setattr(device_stats_monitor.importlib.util, "find_spec", lambda name, *a: None)
    for cpu_stats in (None, True):
        with pytest.raises(ModuleNotFoundError, match="pip install psutil"):
            trainer(tmp_path, logger=MemoryLogger(), callbacks=[DeviceStatsMonitor(cpu_stats=cpu_stats)]).fit(
                BoringModel())
    logger = MemoryLogger()  # cpu_stats=False on a CPU: nothing to log, and psutil is not needed
    trainer(tmp_path, logger=logger, log_every_n_steps=1, callbacks=[DeviceStatsMonitor(cpu_stats=False)]).fit(
        BoringModel())
    assert not any(k.startswith("DeviceStatsMonitor") for _, m in logger.metrics for k in m)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_stats_on_cuda(tmp_path):
    logger = MemoryLogger()
    trainer(tmp_path, accelerator="gpu", devices=1, logger=logger, log_every_n_steps=1,
            callbacks=[DeviceStatsMonitor()]).fit(BoringModel())
    keys = {k for _, m in logger.metrics for k in m}
    assert "DeviceStatsMonitor.on_train_batch_end/allocated_bytes.all.current" in keys
    assert not any(k.endswith("/cpu_percent") for k in keys)


# ------------------------------------------------------------------------------------------ ThroughputMonitor
class WithFlops(BoringModel):
    flops_per_batch = 1000


def test_throughput_logged_per_stage(tmp_path):
    logger = MemoryLogger()
    monitor = ThroughputMonitor(batch_size_fn=lambda batch: batch[0].size(0), length_fn=lambda batch: 3 * len(batch[0]),
                                window_size=2)
    fit = trainer(tmp_path, logger=logger, max_epochs=1, log_every_n_steps=2, num_sanity_val_steps=0,
                  callbacks=[monitor])
    fit.fit(WithFlops())
    train = [(step, m) for step, m in logger.metrics if "train/samples" in m]
    assert [step for step, _ in train] == [1, 3] and train[-1][1]["train/samples"] == 8
    last = train[-1][1]
    assert last["train/batches"] == 4 and last["train/lengths"] == 24 and last["epoch"] == 0
    rate = last["train/device/batches_per_sec"]
    assert last["train/device/samples_per_sec"] == pytest.approx(2 * rate)  # batches of 2 samples
    assert last["train/device/items_per_sec"] == pytest.approx(6 * rate)
    assert last["train/device/flops_per_sec"] == pytest.approx(1000 * rate)
    assert "train/device/mfu" not in last  # no peak FLOPs known for a CPU
    val = [(step, m) for step, m in logger.metrics if "validate/samples" in m]
    assert [(step, m["validate/batches"]) for step, m in val] == [(2, 2), (4, 4)]
    logger.metrics.clear()
    fit.test(WithFlops(), verbose=False)
    assert [m["test/batches"] for _, m in logger.metrics if "test/batches" in m] == [2, 4]


def _throughput_log_calls(pl, root):
    """ThroughputMonitor's logger calls, in their form (`log_metrics(metrics=..., step=...)`), for a fit that
    validates after every step and two `validate` runs after it, under a clock that ticks one second per reading."""
    import importlib
    import itertools
    from unittest import mock

    logger = mock.Mock(save_dir=str(root))
    monitor = pl.callbacks.ThroughputMonitor(batch_size_fn=lambda batch: 2, window_size=2)
    fit = pl.Trainer(default_root_dir=root, logger=logger, callbacks=[monitor], max_steps=3, val_check_interval=1,
                     limit_val_batches=2, log_every_n_steps=2, num_sanity_val_steps=0, enable_checkpointing=False,
                     enable_model_summary=False, enable_progress_bar=False)
    model = importlib.import_module(f"{pl.__name__}.demos.boring_classes").BoringModel()
    model.flops_per_batch = 10
    clock = itertools.count()
    with mock.patch("time.perf_counter", side_effect=lambda: float(next(clock))):
        fit.fit(model)
        fit.validate(model, verbose=False)
        fit.validate(model, verbose=False)
    return logger.log_metrics.mock_calls


def test_throughput_logs_as_lightning_does(tmp_path, quiet_lightning):
    """Lightning's call form, x axis (evaluation steps go on across runs) and training clock (which skips from its
    last measured batch to the validation's last), compared with Lightning's own monitor."""
    assert _throughput_log_calls(volt, tmp_path / "volt") == _throughput_log_calls(quiet_lightning, tmp_path / "pl")


def test_throughput_warns_without_flops_and_checks_arguments(tmp_path):
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['available_flops'\]"):
        ThroughputMonitor(batch_size_fn=len, available_flops=1)
    with pytest.warns(UserWarning, match="define a `flops_per_batch` attribute"):
        trainer(tmp_path, logger=MemoryLogger(), callbacks=[ThroughputMonitor(batch_size_fn=len)]).fit(BoringModel())


def test_throughput_window_and_monotonic_totals():
    throughput = Throughput(window_size=3, world_size=2)
    for i in range(1, 4):
        throughput.update(time=float(i), batches=i, samples=4 * i, flops=10)
    metrics = throughput.compute()
    assert metrics["device/batches_per_sec"] == 1.0 and metrics["batches_per_sec"] == 2.0
    assert metrics["device/samples_per_sec"] == 4.0 and metrics["samples_per_sec"] == 8.0
    assert metrics["flops_per_sec"] == 20.0 and metrics["device/flops_per_sec"] == 10.0
    with pytest.raises(ValueError, match="`time` must increase with each update"):
        throughput.update(time=3.0, batches=4, samples=16)
    with pytest.raises(ValueError, match=r"Expected samples \(1\) to be greater or equal than batches \(2\)"):
        throughput.update(time=9.0, batches=2, samples=1)
    with pytest.raises(ValueError, match="window_size=1"):
        Throughput(window_size=1)


def test_measure_flops_of_a_linear_layer():
    with torch.device("meta"):
        layer = torch.nn.Linear(8, 4)
        x = torch.randn(5, 8)
    assert measure_flops(layer, lambda: layer(x)) == 2 * 5 * 8 * 4
    # backward adds the weight gradient (the input needs none): twice the forward's multiply-adds
    assert measure_flops(layer, lambda: layer(x), loss_fn=lambda y: y.sum()) == 2 * 2 * 5 * 8 * 4


# ------------------------------------------------------------------------------------------ SpikeDetection
class SpikyData(BoringModel):
    """Identical samples, so the loss falls smoothly, except for one corrupted batch: the targets of batch `spike`
    in the second epoch are `value` off."""

    def __init__(self, spike=2, value=1e4):
        super().__init__(lr=0.01)
        self.spike, self.value = spike, value

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(8, 4), torch.zeros(8, 1)), batch_size=2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.current_epoch == 1 and batch_idx == self.spike:
            y = y + self.value
        return torch.nn.functional.mse_loss(self(x), y)


def test_spike_stops_training_and_lists_the_batches_to_skip(tmp_path):
    detection = SpikeDetection()
    with pytest.raises(TrainingSpikeException, match="Training spike detected in batch 2"):
        trainer(tmp_path, max_epochs=3, callbacks=[detection]).fit(SpikyData())
    assert json.loads((tmp_path / "skip_batches.json").read_text()) == [1, 2]
    assert detection.bad_batches == [1, 2] and len(detection.running) == 6  # 4 + 2 batches before the spike


def test_spike_tolerances_warmup_and_non_finite_losses(tmp_path):
    trainer(tmp_path, max_epochs=2, callbacks=[SpikeDetection(atol=1e9)]).fit(SpikyData())  # too small to count
    trainer(tmp_path, max_epochs=2, callbacks=[SpikeDetection(warmup=3)]).fit(SpikyData())  # inside the warmup
    with pytest.raises(TrainingSpikeException, match="batch 1"):
        trainer(tmp_path, max_epochs=2, callbacks=[SpikeDetection(exclude_batches_path=str(tmp_path / "nan"))]).fit(
            SpikyData(spike=1, value=math.nan))
    assert json.loads((tmp_path / "nan" / "skip_batches.json").read_text()) == [0, 1]
    detection = SpikeDetection(finite_only=False)
    trainer(tmp_path, max_epochs=2, callbacks=[detection]).fit(SpikyData(spike=1, value=math.nan))
    assert all(math.isfinite(v) for v in detection.running)  # a NaN loss stays out of the running mean
    with pytest.raises(TrainingSpikeException, match="batch 1"):  # +inf is judged like any loss: far above the mean
        trainer(tmp_path, max_epochs=2, callbacks=[SpikeDetection(finite_only=False)]).fit(
            SpikyData(spike=1, value=math.inf))


def test_spike_state_round_trips_through_a_checkpoint(tmp_path):
    detection = SpikeDetection(window=3)
    trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[detection]).fit(SpikyData(spike=99))
    saved = torch.load(next((tmp_path / "checkpoints").glob("*.ckpt")), weights_only=True)
    state = saved["callbacks"]["SpikeDetection"]
    assert state["running"] == list(detection.running) and len(state["running"]) == 3
    restored = SpikeDetection(window=3)
    restored.load_state_dict(state)
    assert restored.running_mean == detection.running_mean and restored.last_val == detection.last_val
    with pytest.raises(MisconfigurationException, match="mode='mean'"):
        SpikeDetection(mode="mean")


# ------------------------------------------------------------------------------------------ defaults with rich
def test_rich_bar_and_summary_by_default_when_rich_is_installed(monkeypatch, quiet_lightning):
    pytest.importorskip("rich")
    default = volt.Trainer(logger=False, enable_checkpointing=False)
    assert [type(cb) for cb in default.callbacks] == [RichProgressBar, RichModelSummary]
    lightning = quiet_lightning.Trainer(logger=False, enable_checkpointing=False)
    assert [type(cb).__name__ for cb in lightning.callbacks] == ["RichProgressBar", "RichModelSummary"]
    from volt.trainer import trainer as trainer_module

    monkeypatch.setattr(trainer_module.importlib.util, "find_spec", lambda name, *a: None)
    plain = volt.Trainer(logger=False, enable_checkpointing=False)
    assert [type(cb) for cb in plain.callbacks] == [TQDMProgressBar, ModelSummary]


def test_installed_packages_add_callbacks_through_entry_points(tmp_path, monkeypatch):
    """As Lightning: a package registers callback factories under the entry-point group
    `lightning.pytorch.callbacks_factory` (or `pytorch_lightning.callbacks_factory`), and every Trainer gets what
    they make, after its default callbacks; a factory that makes something else is an error naming it."""
    (tmp_path / "volt_test_plugin.py").write_text(
        "import volt\n\n"
        "class Registered(volt.Callback):\n    pass\n\n"
        "def two():\n    return [Registered(), Registered()]\n\n"
        "def nothing():\n    return None\n\n"
        "def wrong():\n    return 'not a callback'\n")
    info = tmp_path / "volt_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: volt-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[lightning.pytorch.callbacks_factory]\ntwo = volt_test_plugin:two\n"
                                           "nothing = volt_test_plugin:nothing\n\n"
                                           "[pytorch_lightning.callbacks_factory]\ntwo = volt_test_plugin:two\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    added = volt.Trainer(logger=False, enable_progress_bar=False).callbacks
    assert [type(cb).__name__ for cb in added][1:] == ["Registered", "Registered", "ModelCheckpoint"]
    assert volt.Trainer(logger=False).callbacks[-2] is not added[1]  # new instances for each Trainer

    (info / "entry_points.txt").write_text("[lightning.pytorch.callbacks_factory]\nwrong = volt_test_plugin:wrong\n")
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))  # sys.path changed: the packages are read again
    with pytest.raises(TypeError, match="entry point made a str, not a Callback"):
        volt.Trainer(logger=False)
