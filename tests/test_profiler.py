import logging
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import volt as pl
from volt.profilers import AdvancedProfiler, PassThroughProfiler, SimpleProfiler
from volt.utilities.exceptions import MisconfigurationException


@pytest.fixture
def volt_logs(caplog, monkeypatch):
    """caplog for volt's logger, which does not propagate to the root logger by default (reports are logged)."""
    monkeypatch.setattr(logging.getLogger("volt"), "propagate", True)
    with caplog.at_level(logging.INFO, logger="volt"):
        yield caplog


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("v", self.layer(batch[0]).mean())

    def on_train_epoch_end(self):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader():
    return DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=4)


def _trainer(tmp_path, profiler):
    return pl.Trainer(max_epochs=1, default_root_dir=tmp_path, profiler=profiler, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)


def test_simple_profiler_reports_steps_and_hooks(tmp_path, volt_logs):
    trainer = _trainer(tmp_path, "simple")
    trainer.fit(Tiny(), _loader(), _loader())
    out = volt_logs.text
    assert "FIT Profiler Report" in out
    for action in ("[Strategy]SingleDeviceStrategy.training_step", "[Strategy]SingleDeviceStrategy.optimizer_step",
                   "[Strategy]SingleDeviceStrategy.validation_step", "[LightningModule]Tiny.on_train_epoch_end"):
        assert action in out
    row = next(line for line in out.splitlines() if "SingleDeviceStrategy.training_step " in line)
    assert row.split("|")[3].strip() == "4"  # four training steps, each counted


def test_profiler_writes_to_file(tmp_path):
    profiler = SimpleProfiler(dirpath=str(tmp_path), filename="perf")
    trainer = _trainer(tmp_path, profiler)
    trainer.fit(Tiny(), _loader())
    report = (tmp_path / "fit-perf.txt").read_text()
    assert "[Strategy]SingleDeviceStrategy.optimizer_step" in report


def test_advanced_profiler_gives_cprofile_stats(tmp_path, volt_logs):
    trainer = _trainer(tmp_path, AdvancedProfiler())
    trainer.fit(Tiny(), _loader())
    out = volt_logs.text
    assert "Profile stats for: [Strategy]SingleDeviceStrategy.training_step" in out
    assert "function calls" in out


def test_unknown_profiler_is_a_clear_error(tmp_path):
    with pytest.raises(MisconfigurationException,
                       match=r"profiler='fancy'\) is not supported. When passing string value for the `profiler`"):
        _trainer(tmp_path, "fancy")


def test_simple_profiler_rejects_unbalanced_stop():
    with pytest.raises(ValueError, match="never started"):
        SimpleProfiler().stop("nothing")


def _tiny_module(package):
    """Tiny, built on `package` (volt or Lightning)."""
    class Tiny(package.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def on_train_epoch_end(self):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Tiny()


def test_simple_profiler_durations_by_action_as_lightning(tmp_path, quiet_lightning):
    """`recorded_durations` maps each action to its calls' durations, under the action names Lightning records."""
    calls = {}
    for name, package in (("volt", pl), ("lightning", quiet_lightning)):
        profiler = package.profilers.SimpleProfiler()
        trainer = package.Trainer(max_epochs=1, default_root_dir=tmp_path / name, profiler=profiler, logger=False,
                                  enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
        trainer.fit(_tiny_module(package), _loader())
        assert all(d >= 0 for durations in profiler.recorded_durations.values() for d in durations)
        calls[name] = {action: len(durations) for action, durations in profiler.recorded_durations.items()}
    assert calls["volt"]["[LightningModule]Tiny.on_train_epoch_end"] == 1
    assert calls["lightning"]["[LightningModule]Tiny.on_train_epoch_end"] == 1
    assert calls["volt"]["[Strategy]SingleDeviceStrategy.training_step"] == 4
    assert calls["lightning"]["[Strategy]SingleDeviceStrategy.training_step"] == 4


def test_default_profiler_is_a_passthrough_that_user_code_can_call(tmp_path, volt_logs):
    """As Lightning: `trainer.profiler` is a PassThroughProfiler when none is asked for, so a module may profile its
    own code with `self.trainer.profiler.profile(...)` whether or not the run is profiled."""

    class ProfilesItself(Tiny):
        def training_step(self, batch, batch_idx):
            with self.trainer.profiler.profile("my_forward"):
                return super().training_step(batch, batch_idx)

    for profiler, reported in ((None, False), ("simple", True)):
        trainer = _trainer(tmp_path, profiler)
        assert isinstance(trainer.profiler, PassThroughProfiler) is not reported
        trainer.fit(ProfilesItself(), _loader())
        assert ("my_forward" in volt_logs.text) is reported


def test_advanced_profiler_dumps_raw_stats_per_action(tmp_path):
    profiler = AdvancedProfiler(dirpath=tmp_path, filename="perf", dump_stats=True)
    trainer = _trainer(tmp_path, profiler)
    trainer.fit(Tiny(), _loader())
    dumped = sorted(path.name for path in tmp_path.glob("*.prof"))
    # one file per action, named like the report file; characters a file name cannot hold become "_"
    assert "fit-perf-[Strategy]SingleDeviceStrategy.training_step.prof" in dumped
    assert not any(set(name) & set('/\\:*?"<>|') for name in dumped)
    import pstats

    stats = pstats.Stats(str(tmp_path / "fit-perf-[Strategy]SingleDeviceStrategy.training_step.prof"))
    assert stats.total_calls > 0
    profiler = AdvancedProfiler(dirpath=tmp_path / "unsafe", dump_stats=True)
    with profiler.profile("val/loss:a"):
        pass
    profiler.describe()
    assert [path.name for path in (tmp_path / "unsafe").iterdir()] == ["val_loss_a.prof"]


@pytest.mark.parametrize("extended", [True, False])
def test_simple_profiler_report_text_as_lightning(monkeypatch, extended, quiet_lightning):
    """The report is Lightning's text, cell for cell: `extended` adds the calls and the share of the time since
    `start_time`, with a total row; rows by share (extended) or by mean duration."""
    import time

    monkeypatch.setattr(time, "perf_counter", lambda: 4.0)
    reports = []
    for package in (pl, quiet_lightning):
        profiler = package.profilers.SimpleProfiler(extended=extended)
        profiler.recorded_durations["slow_but_frequent"] = [0.1] * 10  # math.fsum: exactly 1.0
        profiler.recorded_durations["fast"] = [0.5]
        profiler.start_time = 0.0
        reports.append(profiler.summary())
    assert reports[0] == reports[1]
    cells = [[cell.strip() for cell in line.split("|")[1:-1]] for line in reports[0].splitlines() if "|" in line]
    if extended:
        assert cells[1:] == [["Total", "-", "11", "4.0", "100 %"], ["slow_but_frequent", "0.1", "10", "1.0", "25.0"],
                             ["fast", "0.5", "1", "0.5", "12.5"]]
    else:
        assert cells[1:] == [["fast", "0.5", "0.5"], ["slow_but_frequent", "0.1", "1.0"]]



def test_datamodule_state_dict_is_profiled_as_lightning(tmp_path, quiet_lightning):
    """A checkpoint's datamodule state is profiled under the name Lightning records, once per save."""
    calls = {}
    for name, package in (("volt", pl), ("lightning", quiet_lightning)):
        class Data(package.LightningDataModule):
            def train_dataloader(self):
                return _loader()

            def state_dict(self):
                return {"seen": 1}

        profiler = SimpleProfiler()
        trainer = package.Trainer(max_epochs=2, default_root_dir=tmp_path / name, profiler=profiler, logger=False,
                                  enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(_tiny_module(package), datamodule=Data())
        calls[name] = len(profiler.recorded_durations["[LightningDataModule]Data.state_dict"])
    assert calls == {"volt": 2, "lightning": 2}  # a checkpoint at each epoch end


def test_data_fetching_is_profiled_as_lightning(tmp_path, quiet_lightning):
    """With a profiler, the fetch of each batch is timed under Lightning's action names (train, each validation
    dataloader, predict); the counts match Lightning's, and a SimpleProfiler keeps them across stages."""
    counts = {}
    for name, package in (("volt", pl), ("lightning", quiet_lightning)):
        class TwoValLoaders(type(_tiny_module(package))):
            def validation_step(self, batch, batch_idx, dataloader_idx=0):
                self.log("v", self.layer(batch[0]).mean())

            def predict_step(self, batch, batch_idx):
                return self.layer(batch[0])

        profiler = SimpleProfiler()
        trainer = package.Trainer(fast_dev_run=2, profiler=profiler, default_root_dir=tmp_path / name,
                                  enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(TwoValLoaders(), _loader(), [_loader(), _loader()])
        trainer.predict(TwoValLoaders(), _loader())  # as Lightning, the fit's durations stay
        durations = profiler.recorded_durations
        counts[name] = {action: len(durations[action]) for action in durations if action.endswith("_next")}
        assert all(d > 0 for action in counts[name] for d in durations[action])
    assert counts["volt"] == counts["lightning"] == {"[_TrainingEpochLoop].train_dataloader_next": 2,
                                                    "[_EvaluationLoop].val_next": 4,
                                                    "[_PredictionLoop].predict_next": 2}
