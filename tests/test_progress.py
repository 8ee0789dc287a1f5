"""Progress bars: what they print, how rarely they redraw (and read metric values), enabling and disabling, and
(end to end) the bars a real `fit` prints."""
import io
import re
from types import SimpleNamespace

import pytest
import torch

from volt.callbacks.progress import ProgressBar, RichProgressBar, TQDMProgressBar
from volt.callbacks.progress import rich_progress, tqdm_progress


class CountingTensor(torch.Tensor):
    """A metric value that counts how often it is read back to the host (`item()`, or copied into host memory)."""

    reads = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.item or (func is torch.Tensor.copy_ and isinstance(args[1], cls)):
            CountingTensor.reads += 1
        return super().__torch_function__(func, types, args, kwargs or {})


class StubTrainer:
    """The part of the Trainer surface the progress bars read."""

    def __init__(self, **overrides):
        self.is_global_zero = True
        self.state = SimpleNamespace(fn="fit", stage="train")
        self.sanity_checking = False
        self.training = True
        self.current_epoch = 0
        self.max_epochs = 1
        self.max_steps = -1
        self.global_step = 0
        self.num_training_batches = 4
        self.num_val_batches = [3]
        self.num_test_batches = [2]
        self.num_predict_batches = [2]
        self.num_sanity_val_steps = 2
        self.check_val_every_n_epoch = 1
        self.loggers = [SimpleNamespace(version=3)]
        self.progress_bar_tensors = {"loss": torch.tensor(0.5)}
        self.fit_loop = SimpleNamespace(batches_into_epoch=0)  # > 0: resumed inside an epoch
        self.__dict__.update(overrides)


def run_fit(bar, trainer, val_loss=0.25):
    """Drive the hooks in the order the Trainer calls them for one epoch with a sanity check and validation."""
    trainer.progress_bar_callback = bar
    bar.setup(trainer, None, "fit")
    trainer.sanity_checking = True
    bar.on_sanity_check_start(trainer, None)
    bar.on_validation_start(trainer, None)
    for i in range(trainer.num_sanity_val_steps):
        bar.on_validation_batch_start(trainer, None, None, i)
        bar.on_validation_batch_end(trainer, None, None, None, i)
    bar.on_validation_end(trainer, None)
    bar.on_sanity_check_end(trainer, None)
    trainer.sanity_checking = False
    bar.on_train_start(trainer, None)
    bar.on_train_epoch_start(trainer, None)
    for i in range(trainer.num_training_batches):
        bar.on_train_batch_end(trainer, None, None, None, i)
    bar.on_validation_start(trainer, None)
    for i in range(trainer.num_val_batches[0]):
        bar.on_validation_batch_start(trainer, None, None, i)
        bar.on_validation_batch_end(trainer, None, None, None, i)
    trainer.progress_bar_tensors = {**trainer.progress_bar_tensors, "val_loss": torch.tensor(val_loss)}
    bar.on_validation_end(trainer, None)
    bar.on_train_epoch_end(trainer, None)
    bar.on_train_end(trainer, None)
    bar.teardown(trainer, None, "fit")


class FakeClock:
    def __init__(self, step):
        self.now, self.step = 0.0, step

    def __call__(self):
        self.now += self.step
        return self.now


# --------------------------------------------------------------------------------------------------- TQDM


def test_tqdm_prints_epoch_line_with_prog_bar_metrics_and_version(capsys):
    run_fit(TQDMProgressBar(), StubTrainer())
    out = capsys.readouterr().out
    assert "Sanity Checking DataLoader 0" in out
    assert "Validation DataLoader 0" in out
    epoch_lines = [line for line in out.split("\r") if line.startswith("Epoch 0")]
    assert epoch_lines and "4/4" in epoch_lines[-1]
    assert "v_num=3" in epoch_lines[-1] and "loss=0.500" in epoch_lines[-1]
    assert "val_loss=0.250" in epoch_lines[-1]


def test_tqdm_redraws_rarely_and_reads_metrics_only_when_it_redraws(capsys, monkeypatch):
    # 200 steps of 10 ms each (a fake clock): 2 s at one redraw per 0.1 s is about 20 redraws, not 200
    monkeypatch.setattr(tqdm_progress, "_monotonic", FakeClock(step=0.01))
    CountingTensor.reads = 0
    trainer = StubTrainer(num_training_batches=200, progress_bar_tensors={
        "loss": torch.tensor(0.5).as_subclass(CountingTensor)})
    bar = TQDMProgressBar()
    bar.setup(trainer, None, "fit")
    bar.on_train_start(trainer, None)
    bar.on_train_epoch_start(trainer, None)
    for i in range(200):
        bar.on_train_batch_end(trainer, None, None, None, i)
    assert 10 <= CountingTensor.reads <= 25
    assert bar.train_progress_bar.n == 200  # the last batch is always drawn
    bar.on_train_end(trainer, None)


def test_tqdm_refresh_rate_counts_batches_between_redraws(capsys, monkeypatch):
    monkeypatch.setattr(tqdm_progress, "_monotonic", FakeClock(step=10.0))  # time never holds a redraw back
    CountingTensor.reads = 0
    trainer = StubTrainer(num_training_batches=100, progress_bar_tensors={
        "loss": torch.tensor(0.5).as_subclass(CountingTensor)})
    bar = TQDMProgressBar(refresh_rate=10)
    bar.setup(trainer, None, "fit")
    bar.on_train_start(trainer, None)
    bar.on_train_epoch_start(trainer, None)
    for i in range(100):
        bar.on_train_batch_end(trainer, None, None, None, i)
    assert CountingTensor.reads == 10
    bar.on_train_end(trainer, None)


def test_tqdm_draws_where_the_epoch_stopped_early(capsys):
    trainer = StubTrainer(num_training_batches=50)
    bar = TQDMProgressBar()
    bar.setup(trainer, None, "fit")
    bar.on_train_start(trainer, None)
    bar.on_train_epoch_start(trainer, None)
    for i in range(7):  # e.g. max_steps reached after 7 batches
        bar.on_train_batch_end(trainer, None, None, None, i)
    bar.on_train_epoch_end(trainer, None)
    assert bar.train_progress_bar.n == 7
    bar.on_train_end(trainer, None)
    assert "7/50" in capsys.readouterr().out


def test_tqdm_refresh_rate_zero_and_disable_print_nothing(capsys):
    hidden = TQDMProgressBar(refresh_rate=0)
    assert hidden.is_disabled and not hidden.is_enabled
    run_fit(hidden, StubTrainer())
    bar = TQDMProgressBar()
    bar.disable()
    assert bar.is_disabled
    run_fit(bar, StubTrainer())
    assert capsys.readouterr().out == ""
    bar.enable()
    assert bar.is_enabled


def test_tqdm_prints_nothing_on_other_ranks(capsys):
    bar = TQDMProgressBar()
    run_fit(bar, StubTrainer(is_global_zero=False))
    assert bar.is_disabled
    assert capsys.readouterr().out == ""


def test_tqdm_leave_keeps_one_bar_per_epoch(capsys):
    trainer = StubTrainer(num_training_batches=2, max_epochs=2)
    bar = TQDMProgressBar(leave=True)
    bar.setup(trainer, None, "fit")
    bar.on_train_start(trainer, None)
    for epoch in range(2):
        trainer.current_epoch = epoch
        bar.on_train_epoch_start(trainer, None)
        for i in range(2):
            bar.on_train_batch_end(trainer, None, None, None, i)
        bar.on_train_epoch_end(trainer, None)
    bar.on_train_end(trainer, None)
    out = capsys.readouterr().out
    finished = [line for line in out.split("\n") if re.search(r"Epoch \d: 100%", line)]
    assert len(finished) == 2


def test_tqdm_test_and_predict_bars(capsys):
    trainer = StubTrainer(training=False, state=SimpleNamespace(fn="test", stage="test"), num_test_batches=[2, 2])
    bar = TQDMProgressBar()
    bar.setup(trainer, None, "test")
    bar.on_test_start(trainer, None)
    for dataloader_idx in range(2):
        for i in range(2):
            bar.on_test_batch_start(trainer, None, None, i, dataloader_idx)
            bar.on_test_batch_end(trainer, None, None, None, i, dataloader_idx)
    bar.on_test_end(trainer, None)
    trainer.num_predict_batches = [float("inf")]
    bar.on_predict_start(trainer, None)
    for i in range(3):
        bar.on_predict_batch_start(trainer, None, None, i)
        bar.on_predict_batch_end(trainer, None, None, None, i)
    bar.on_predict_end(trainer, None)
    out = capsys.readouterr().out
    assert "Testing DataLoader 0: 100%" in out and "Testing DataLoader 1: 100%" in out
    assert "Predicting DataLoader 0: |" in out and "3/?" in out  # a loader without length: unknown total


def test_tqdm_print_goes_through_the_active_bar(capsys):
    trainer = StubTrainer()
    bar = TQDMProgressBar()
    bar.setup(trainer, None, "fit")
    bar.on_train_start(trainer, None)
    bar.print("hello", "world")
    bar.on_train_end(trainer, None)
    assert "hello world\n" in capsys.readouterr().out


def test_tqdm_bad_refresh_rate():
    with pytest.raises(ValueError, match=r"refresh_rate=-1.*int >= 0"):
        TQDMProgressBar(refresh_rate=-1)


def test_tqdm_pads_numbers_so_the_line_does_not_jitter():
    assert tqdm_progress.Tqdm.format_num(0.5) == "0.500"
    assert tqdm_progress.Tqdm.format_num(3) == "3"
    assert tqdm_progress.Tqdm.format_num(1e-7) == "1e-7"


# ------------------------------------------------------------------------------------------------ base


def test_get_metrics_converts_tensors_and_adds_the_logger_version():
    bar = TQDMProgressBar()
    trainer = StubTrainer(progress_bar_tensors={"loss": torch.tensor(0.25), "acc": torch.tensor(1.0)})
    assert bar.get_metrics(trainer, None) == {"v_num": 3, "loss": 0.25, "acc": 1.0}
    trainer.loggers = [SimpleNamespace(version="version_12345")]
    assert bar.get_metrics(trainer, None)["v_num"] == "2345"
    trainer.loggers = [SimpleNamespace(version=1), SimpleNamespace(version="b")]
    assert bar.get_metrics(trainer, None)["v_num"] == "1_b"
    trainer.loggers = []
    assert "v_num" not in bar.get_metrics(trainer, None)


def test_get_metrics_warns_once_when_a_logged_name_shadows_v_num():
    bar = TQDMProgressBar()
    trainer = StubTrainer(progress_bar_tensors={"v_num": torch.tensor(7.0)})
    with pytest.warns(UserWarning, match="already shows 'v_num'"):
        assert bar.get_metrics(trainer, None)["v_num"] == 7.0
    bar.get_metrics(trainer, None)  # no second warning (pytest's filterwarnings=error setups would catch it)


def test_total_train_batches_is_capped_by_max_steps_when_epochs_are_unbounded():
    bar = TQDMProgressBar()
    bar.setup(StubTrainer(max_epochs=-1, max_steps=10, global_step=7, num_training_batches=100), None, "fit")
    assert bar.total_train_batches == 3


def test_sanity_check_total_is_capped_by_num_sanity_val_steps():
    bar = TQDMProgressBar()
    trainer = StubTrainer(sanity_checking=True, num_val_batches=[5, 1])
    bar.setup(trainer, None, "fit")
    bar.has_dataloader_changed(0)
    assert bar.total_val_batches_current_dataloader == 2
    bar.has_dataloader_changed(1)
    assert bar.total_val_batches_current_dataloader == 1
    assert bar.total_val_batches == 6


def test_base_class_requires_disable_and_trainer():
    bar = ProgressBar()
    with pytest.raises(TypeError, match="has not been set yet"):
        bar.trainer
    with pytest.raises(NotImplementedError, match="must implement `disable"):
        bar.disable()


# ------------------------------------------------------------------------------------------------ Rich


def rich_console(file):
    from rich.console import Console

    return Console(file=file, width=200)


def test_rich_prints_epoch_and_metrics():
    file = io.StringIO()
    bar = RichProgressBar(console_kwargs={"file": file, "force_terminal": True, "width": 200})
    run_fit(bar, StubTrainer())
    out = file.getvalue()
    assert "Epoch 0/0" in out and "4/4" in out
    assert "loss: 0.500" in out and "val_loss: 0.250" in out and "v_num: 3" in out


def test_rich_redraws_rarely(monkeypatch):
    monkeypatch.setattr(rich_progress, "_monotonic", FakeClock(step=0.01))
    CountingTensor.reads = 0
    trainer = StubTrainer(num_training_batches=200, progress_bar_tensors={
        "loss": torch.tensor(0.5).as_subclass(CountingTensor)})
    bar = trainer.progress_bar_callback = RichProgressBar(console_kwargs={"file": io.StringIO(),
                                                                          "force_terminal": True})
    bar.setup(trainer, None, "fit")
    bar.on_train_start(trainer, None)
    bar.on_train_epoch_start(trainer, None)
    for i in range(200):
        bar.on_train_batch_end(trainer, None, None, None, i)
    assert 5 <= CountingTensor.reads <= 15  # 2 s at up to 5 redraws a second
    assert bar.train_progress_bar.completed == 200
    bar.on_train_batch_end(trainer, None, None, None, 0)  # between redraws, the bar still reads the last count
    assert bar.train_progress_bar.completed == 1 and CountingTensor.reads <= 15
    bar.teardown(trainer, None, "fit")


def test_rich_display_parts_under_lightnings_names(quiet_lightning):
    """The columns a `configure_columns` override builds from (Lightning's names), styled by the theme as in
    Lightning; the bar pulses and shows `--` for a loader without a length."""
    import pytorch_lightning.callbacks.progress.rich_progress as lightning_rich
    from rich.progress import Progress

    def described(module):
        theme = module.RichProgressBarTheme(progress_bar="red", progress_bar_finished="green", batch_progress="blue",
                                            time="yellow", processing_speed="cyan")
        return [(type(column).__name__, [getattr(column, name, None) for name in
                                         ("complete_style", "finished_style", "pulse_style", "style")])
                for column in module.RichProgressBar(theme=theme).configure_columns(None)]

    assert described(rich_progress) == described(lightning_rich)
    progress = rich_progress.CustomProgress(rich_progress.CustomBarColumn(), rich_progress.BatchesProcessedColumn(),
                                            rich_progress.CustomTimeColumn(), rich_progress.ProcessingSpeedColumn(),
                                            console=rich_console(io.StringIO()), auto_refresh=False)
    assert isinstance(progress, Progress)
    task_id = progress.add_task("stream", total=float("inf"))
    progress.update(task_id, completed=7)
    assert progress.tasks[task_id].total is None and progress.tasks[task_id].time_remaining is None
    assert str(progress.columns[1].render(progress.tasks[task_id])) == "7/--"
    progress.reset(task_id, total=4)
    progress.reset(task_id, total=float("nan"))
    assert progress.tasks[task_id].total is None


def test_rich_configure_columns_from_the_parts(tmp_path, monkeypatch):
    """A bar laid out from the importable parts draws in a real fit; a disabled bar creates no Progress at all."""
    from rich.progress import TextColumn

    class Compact(RichProgressBar):
        def configure_columns(self, trainer):
            return [TextColumn("{task.description}"), rich_progress.BatchesProcessedColumn(style="bold")]

    file = io.StringIO()
    trainer = fit_tiny(tmp_path, logger=False, callbacks=[Compact(console_kwargs={"file": file, "width": 200})])
    assert "Epoch 0/0  8/8 train_loss:" in file.getvalue()
    assert trainer.progress_bar_callback.train_progress_bar.completed == 8

    class NoProgress:
        def __init__(self, *args, **kwargs):
            raise AssertionError("a disabled bar built its display")

    disabled = RichProgressBar()
    disabled.disable()
    monkeypatch.setattr(rich_progress, "CustomProgress", NoProgress)
    fit_tiny(tmp_path, logger=False, callbacks=[disabled])
    assert disabled.train_progress_bar_id is None and disabled.val_progress_bar_id is None


def test_rich_disabled_prints_nothing():
    file = io.StringIO()
    run_fit(RichProgressBar(refresh_rate=0, console_kwargs={"file": file}), StubTrainer())
    run_fit(RichProgressBar(console_kwargs={"file": file}), StubTrainer(is_global_zero=False))
    assert file.getvalue() == ""


def test_rich_missing_gives_install_hint(monkeypatch):
    real_find_spec = rich_progress.importlib.util.find_spec
    monkeypatch.setattr(rich_progress.importlib.util, "find_spec",
                        lambda name, *args: None if name == "rich" else real_find_spec(name, *args))
    with pytest.raises(ModuleNotFoundError, match="pip install rich"):
        RichProgressBar()


# ------------------------------------------------------------------------------------------ end to end


def fit_tiny(tmp_path, steps=8, epochs=1, **trainer_kwargs):
    import volt
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(volt.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train_loss", loss, prog_bar=True)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.layer(batch[0]).pow(2).mean(), prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    if trainer_kwargs.get("enable_progress_bar", True):  # the TQDM bar (the default one without rich)
        trainer_kwargs.setdefault("callbacks", [TQDMProgressBar()])
    data = TensorDataset(torch.randn(2 * steps, 4))
    trainer = volt.Trainer(max_epochs=epochs, default_root_dir=str(tmp_path), enable_checkpointing=False,
                           enable_model_summary=False, **trainer_kwargs)
    trainer.fit(Tiny(), DataLoader(data, batch_size=2), DataLoader(data, batch_size=4))
    return trainer


def test_fit_prints_lightning_style_bars(tmp_path, capsys):
    from volt.loggers import CSVLogger

    trainer = fit_tiny(tmp_path, epochs=2, logger=CSVLogger(str(tmp_path)))
    assert isinstance(trainer.progress_bar_callback, TQDMProgressBar)
    lines = capsys.readouterr().out.replace("\r", "\n").splitlines()
    assert any(line.startswith("Sanity Checking DataLoader 0: 100%") for line in lines)
    assert any(line.startswith("Validation DataLoader 0: 100%|██████████| 4/4") for line in lines)
    last_epoch_1 = [line for line in lines if line.startswith("Epoch 1: 100%|██████████| 8/8")][-1]
    assert re.search(r"v_num=0, train_loss=[^,]+, val_loss=[^,]+\]$", last_epoch_1.rstrip())


def test_fit_redraws_the_train_bar_rarely(tmp_path, capsys):
    class CountingBar(TQDMProgressBar):
        redraws = 0

        def get_metrics(self, trainer, pl_module):
            CountingBar.redraws += 1
            return super().get_metrics(trainer, pl_module)

    fit_tiny(tmp_path, steps=200, callbacks=[CountingBar()], logger=False, num_sanity_val_steps=0,
             limit_val_batches=0)
    # first and last batch, epoch end, and one per 0.1 s in between: far fewer than the 200 steps
    assert 3 <= CountingBar.redraws <= 3 + 10 * 5
    assert "200/200" in capsys.readouterr().out


def test_enable_progress_bar_false_shows_no_bar(tmp_path, capsys):
    trainer = fit_tiny(tmp_path, enable_progress_bar=False, logger=False)
    assert trainer.progress_bar_callback is None
    assert not any(isinstance(cb, ProgressBar) for cb in trainer.callbacks)
    assert "Epoch 0" not in capsys.readouterr().out


def test_fit_with_rich_bar(tmp_path):
    file = io.StringIO()
    trainer = fit_tiny(tmp_path, logger=False, callbacks=[
        RichProgressBar(console_kwargs={"file": file, "force_terminal": True, "width": 200})])
    assert trainer.progress_bar_callback is trainer.callbacks[0]
    out = file.getvalue()
    assert "Epoch 0/0" in out and "8/8" in out and "train_loss:" in out and "val_loss:" in out


def test_rich_bars_stay_readable_after_the_run_as_lightning(tmp_path, quiet_lightning):
    """After fit, and after validate, the last run's bars can be read (`train_progress_bar.total`), as in Lightning;
    nothing is drawn after the run ends."""
    import pytorch_lightning.demos.boring_classes as lightning_demos

    import volt
    from volt.demos.boring_classes import BoringModel

    read = []
    for package, model_class in ((volt, BoringModel), (quiet_lightning, lightning_demos.BoringModel)):
        file = io.StringIO()
        bar = package.callbacks.RichProgressBar(console_kwargs={"file": file, "force_terminal": True})
        trainer = package.Trainer(default_root_dir=tmp_path, max_steps=3, limit_val_batches=2, logger=False,
                                  enable_checkpointing=False, enable_model_summary=False, callbacks=[bar])
        trainer.fit(model_class())
        after_fit = (bar.train_progress_bar.total, bar.train_progress_bar.completed)
        trainer.validate(model_class(), verbose=False)
        drawn = len(file.getvalue())
        bar.print("after")
        read.append((after_fit, bar.val_progress_bar.completed, len(file.getvalue()) == drawn))
    assert read[0] == read[1]
    assert read[0][1:] == (2, True) and read[0][0][1] == 3


def test_mid_epoch_validation_shows_where_training_paused(tmp_path, capsys):
    fit_tiny(tmp_path, logger=False, val_check_interval=0.5)
    lines = capsys.readouterr().out.replace("\r", "\n").splitlines()
    assert any(line.startswith("Epoch 0:  50%|█████     | 4/8") and "val_loss=" in line for line in lines)


def _tqdm_counts_and_metric_reads(pl, root):
    """The counts each bar showed and the stages at which the bar read the metrics, for refresh_rate=3 over 7
    training batches with validation after the 4th (volt's time limit on redraws off), and the two progress bar
    configurations the Trainer refuses."""
    import importlib
    from unittest import mock

    module = importlib.import_module(f"{pl.__name__}.callbacks.progress.tqdm_progress")

    class Tracking(module.Tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.shown = []

        def __setattr__(self, name, value):
            if name == "n" and "shown" in vars(self) and (not self.shown or self.shown[-1] != value):
                self.shown.append(value)
            super().__setattr__(name, value)

    class Bar(pl.callbacks.TQDMProgressBar):
        min_refresh_interval = 0.0
        reads = []

        def get_metrics(self, trainer, pl_module):
            stage = trainer.state.stage
            Bar.reads.append(stage.value if hasattr(stage, "value") else stage)
            return super().get_metrics(trainer, pl_module)

    trainer = pl.Trainer(default_root_dir=root, max_epochs=1, limit_train_batches=7, limit_val_batches=7,
                         val_check_interval=4, num_sanity_val_steps=1, callbacks=[Bar(refresh_rate=3)], logger=False,
                         enable_checkpointing=False, enable_model_summary=False)
    with mock.patch.object(module, "Tqdm", Tracking):
        trainer.fit(importlib.import_module(f"{pl.__name__}.demos.boring_classes").BoringModel())
    bar = trainer.progress_bar_callback
    counts = {"train": bar.train_progress_bar.shown, "validation": bar.val_progress_bar.shown}
    refused = []
    for kwargs in ({"callbacks": [Bar(), Bar()]}, {"callbacks": [Bar()], "enable_progress_bar": False}):
        with pytest.raises(Exception) as error:
            pl.Trainer(**kwargs)
        refused.append(type(error.value).__name__)
        refused.append(re.match(r"You added multiple progress bar callbacks|Trainer was configured with "
                                r"`enable_progress_bar=False` but found `Bar`", str(error.value)) is not None)
    return counts, Bar.reads, refused


def test_tqdm_counts_and_metric_reads_as_lightning(tmp_path, quiet_lightning):
    """As Lightning: the training bar moves every `refresh_rate` batches only (also across a validation), and reads
    the metrics after each drawn batch, at each validation end (the sanity check's too) and at the epoch end."""
    import volt

    ours = _tqdm_counts_and_metric_reads(volt, tmp_path / "volt")
    assert ours == ({"train": [0, 3, 6, 7], "validation": [0, 3, 6, 7]},
                    ["sanity_check", "train", "validate", "train", "train", "train"],
                    ["MisconfigurationException", True, "MisconfigurationException", True])
    assert ours == _tqdm_counts_and_metric_reads(quiet_lightning, tmp_path / "pl")
