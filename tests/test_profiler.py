import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import volt as pl
from volt.profilers import AdvancedProfiler, SimpleProfiler


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


def test_simple_profiler_reports_steps_and_hooks(tmp_path, capsys):
    trainer = _trainer(tmp_path, "simple")
    trainer.fit(Tiny(), _loader(), _loader())
    out = capsys.readouterr().out
    assert "FIT Profiler Report" in out
    for action in ("[Strategy]Strategy.training_step", "[Strategy]Strategy.optimizer_step",
                   "[Strategy]Strategy.validation_step", "[LightningModule]Tiny.on_train_epoch_end"):
        assert action in out
    assert "|          4 |" in out  # four training steps, each counted


def test_profiler_writes_to_file(tmp_path):
    profiler = SimpleProfiler(dirpath=str(tmp_path), filename="perf")
    trainer = _trainer(tmp_path, profiler)
    trainer.fit(Tiny(), _loader())
    report = (tmp_path / "fit-perf.txt").read_text()
    assert "[Strategy]Strategy.optimizer_step" in report


def test_advanced_profiler_gives_cprofile_stats(tmp_path, capsys):
    trainer = _trainer(tmp_path, AdvancedProfiler())
    trainer.fit(Tiny(), _loader())
    out = capsys.readouterr().out
    assert "Profile stats for: [Strategy]Strategy.training_step" in out
    assert "function calls" in out


def test_unknown_profiler_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="profiler='fancy' is not supported"):
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
    assert calls["volt"]["[Strategy]Strategy.training_step"] == 4
    assert calls["lightning"]["[Strategy]SingleDeviceStrategy.training_step"] == 4
