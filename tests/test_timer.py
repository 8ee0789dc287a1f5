"""Timer: duration formats, stopping the Trainer, per-stage times, and the elapsed time carried across a resume."""
import logging
from datetime import timedelta
from types import SimpleNamespace

import pytest
import torch

from volt.callbacks import timer as timer_module
from volt.callbacks.timer import Timer
from volt.utilities.exceptions import MisconfigurationException


@pytest.fixture
def volt_logs(caplog, monkeypatch):
    """caplog for volt's logger, which does not propagate to the root logger by default."""
    monkeypatch.setattr(logging.getLogger("volt"), "propagate", True)
    with caplog.at_level(logging.INFO, logger="volt"):
        yield caplog


class FakeTime:
    def __init__(self):
        self.now = 100.0

    def monotonic(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(timer_module, "time", fake)
    return fake


def stub_trainer(**overrides):
    trainer = SimpleNamespace(should_stop=False, sanity_checking=False,
                              strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj))
    trainer.__dict__.update(overrides)
    return trainer


@pytest.mark.parametrize("duration, seconds", [
    ("00:00:01:30", 90), ("01:02:03:04", 93784), (timedelta(hours=2), 7200), ({"minutes": 5}, 300), (None, None),
])
def test_duration_formats(duration, seconds):
    timer = Timer(duration=duration)
    assert timer.time_remaining() == (None if seconds is None else pytest.approx(seconds))


@pytest.mark.parametrize("duration, match", [
    ("1:30", r"Timer\(duration='1:30'\) is not a duration: use 'DD:HH:MM:SS' \(a string in the format DD:HH:MM:SS"),
    ({"fortnights": 1}, r"is not a duration \(.*fortnights.*\): use 'DD:HH:MM:SS'"),
    (90, r"Timer\(duration=90\) is not a duration: use 'DD:HH:MM:SS' .*, a datetime.timedelta, or a dict"),
])
def test_bad_duration(duration, match):
    with pytest.raises(MisconfigurationException, match=match):
        Timer(duration=duration)


def test_bad_interval_and_stage():
    with pytest.raises(MisconfigurationException, match=r"Unsupported parameter value `Timer\(interval='batch'\)`: use 'step' or 'epoch'"):
        Timer(interval="batch")
    with pytest.raises(ValueError, match="unknown stage 'training'.*train, sanity_check, validate"):
        Timer().time_elapsed("training")


def test_stops_after_the_step_that_exceeds_the_budget(clock, volt_logs):
    timer, trainer = Timer(duration="00:00:00:10"), stub_trainer()
    timer.on_fit_start(trainer, None)
    timer.on_train_start(trainer, None)
    clock.now += 9
    timer.on_train_batch_end(trainer, None, None, None, 0)
    assert not trainer.should_stop and timer.time_remaining() == pytest.approx(1)
    clock.now += 1
    timer.on_train_batch_end(trainer, None, None, None, 1)
    assert trainer.should_stop
    assert "Time limit reached. Elapsed time is 0:00:10. Signaling Trainer to stop." in volt_logs.text


def test_epoch_interval_checks_only_at_epoch_end(clock):
    timer, trainer = Timer(duration={"seconds": 1}, interval="epoch", verbose=False), stub_trainer()
    timer.on_train_start(trainer, None)
    clock.now += 5
    timer.on_train_batch_end(trainer, None, None, None, 0)
    assert not trainer.should_stop
    timer.on_train_epoch_end(trainer, None)
    assert trainer.should_stop


def test_stage_times(clock):
    timer, trainer = Timer(), stub_trainer()
    assert timer.start_time("validate") is None and timer.time_elapsed("validate") == 0
    timer.on_validation_start(stub_trainer(sanity_checking=True), None)
    clock.now += 1
    timer.on_validation_end(stub_trainer(sanity_checking=True), None)
    assert timer.time_elapsed("validate") == pytest.approx(1)  # as Lightning: a sanity check is timed as "validate"
    timer.on_train_start(trainer, None)
    clock.now += 2
    timer.on_validation_start(trainer, None)
    clock.now += 3
    assert timer.time_elapsed("validate") == pytest.approx(3)  # still running
    timer.on_validation_end(trainer, None)
    clock.now += 1
    timer.on_train_end(trainer, None)
    clock.now += 50
    assert timer.time_elapsed("validate") == pytest.approx(3)
    assert timer.time_elapsed("sanity_check") == 0
    assert timer.time_elapsed() == pytest.approx(6)
    assert timer.end_time("train") - timer.start_time("train") == pytest.approx(6)
    timer.on_test_start(trainer, None)
    clock.now += 4
    timer.on_test_end(trainer, None)
    assert timer.time_elapsed("test") == pytest.approx(4)


def test_resume_keeps_counting_the_training_time(clock):
    first, trainer = Timer(duration="00:00:00:10"), stub_trainer()
    first.on_train_start(trainer, None)
    clock.now += 7
    state = first.state_dict()
    assert state["time_elapsed"]["train"] == pytest.approx(7)
    assert set(state["time_elapsed"]) == {"train", "sanity_check", "validate", "test", "predict"}

    resumed, trainer = Timer(duration="00:00:00:10"), stub_trainer()
    resumed.load_state_dict(state)
    resumed.on_fit_start(trainer, None)
    assert not trainer.should_stop
    resumed.on_train_start(trainer, None)
    clock.now += 3
    resumed.on_train_batch_end(trainer, None, None, None, 0)
    assert trainer.should_stop and resumed.time_elapsed() == pytest.approx(10)


def test_a_spent_budget_stops_before_training(clock):
    timer, trainer = Timer(duration="00:00:00:05", verbose=False), stub_trainer()
    timer.load_state_dict({"time_elapsed": {"train": 6.0}})
    timer.on_fit_start(trainer, None)
    assert trainer.should_stop


def test_rank_zero_decides(clock):
    timer = Timer(duration="00:00:00:01", verbose=False)
    trainer = stub_trainer(strategy=SimpleNamespace(broadcast=lambda obj, src=0: False))  # rank 0 says: go on
    timer.on_train_start(trainer, None)
    clock.now += 5
    timer.on_train_batch_end(trainer, None, None, None, 0)
    assert not trainer.should_stop


# ------------------------------------------------------------------------------------------ end to end


def fit_for_a_while(tmp_path, timer, ckpt_path=None):
    import time

    from torch.utils.data import DataLoader, TensorDataset

    import volt

    class Slow(volt.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            time.sleep(0.02)
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    trainer = volt.Trainer(max_epochs=1000, default_root_dir=str(tmp_path), callbacks=[timer], logger=False,
                           enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(Slow(), DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2), ckpt_path=ckpt_path)
    return trainer


def test_fit_stops_when_the_time_is_up_and_a_resume_keeps_the_count(tmp_path, volt_logs):
    timer = Timer(duration={"seconds": 0.2})
    trainer = fit_for_a_while(tmp_path, timer)
    assert 2 <= trainer.global_step < 100
    assert timer.time_elapsed() >= 0.2 and timer.end_time() is not None
    assert "Time limit reached" in volt_logs.text

    ckpt = str(tmp_path / "timed.ckpt")
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["callbacks"]["Timer"]["time_elapsed"]["train"] >= 0.2
    resumed = Timer(duration={"seconds": 0.2})
    trainer = fit_for_a_while(tmp_path, resumed, ckpt_path=ckpt)
    assert resumed.time_elapsed() >= 0.2
    assert trainer.global_step == saved["global_step"]  # the budget was already spent: no more steps


def test_trainer_max_time_adds_a_step_timer():
    import volt

    trainer = volt.Trainer(max_time="00:00:01:00", logger=False, enable_checkpointing=False)
    (timer,) = [cb for cb in trainer.callbacks if isinstance(cb, Timer)]
    assert timer.time_remaining() == 60 and timer._interval == "step"
