"""The tuner through its public API: `Tuner(trainer).lr_find` / `.scale_batch_size` and the `LearningRateFinder` /
`BatchSizeFinder` callbacks. The run after a search must be bit-identical to a run without it (weights, optimizer,
RNG, loop counters, callbacks, logs, files); the suggested rate must really train; the batch-size search must stop
at an out-of-memory error and leave the size it found in the module and the dataloaders."""
import os
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import volt
from helpers import BoringModel, MemoryLogger, dataset
from volt.callbacks import BatchSizeFinder, EarlyStopping, LearningRateFinder, ModelCheckpoint
from volt.loggers import CSVLogger
from volt.tuner import Tuner
from volt.utilities.exceptions import MisconfigurationException

EXACT = dict(atol=0, rtol=0)


class Net(BoringModel):
    """Regression with dropout on 64 shuffled samples (so the RNG streams matter), lr in `self.lr`."""

    def __init__(self, lr: float = 0.05, batch_size: int = 8, generator_seed=None):
        super().__init__()
        self.layer = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(),
                                         torch.nn.Linear(16, 1))
        self.save_hyperparameters("lr")
        self.lr, self.batch_size = lr, batch_size
        # the sampler's own generator, kept across dataloader calls: the search draws from it too
        self.generator = None if generator_seed is None else torch.Generator().manual_seed(generator_seed)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        return DataLoader(dataset(64), batch_size=self.batch_size, shuffle=True, generator=self.generator)

    def val_dataloader(self):
        return DataLoader(dataset(16, seed=1), batch_size=self.batch_size)

    def on_train_epoch_end(self):
        if self.logger is not None:  # user code writing to the logger itself, which a search must not reach
            self.logger.log_metrics({"epoch_end": float(self.current_epoch)}, step=self.global_step)


class CallLogger(MemoryLogger):
    """Keeps every call, hyperparameters and graphs included."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def log_hyperparams(self, params, *args, **kwargs):
        self.calls.append(("hparams", dict(params)))

    def log_graph(self, model, input_array=None):
        self.calls.append(("graph",))

    def log_metrics(self, metrics, step=None):
        self.calls.append(("metrics", step, dict(metrics)))

    def finalize(self, status):
        self.calls.append(("finalize", status))


def make_trainer(root, **options):
    defaults = dict(default_root_dir=root, max_epochs=2, enable_progress_bar=False, enable_model_summary=False,
                    logger=[CSVLogger(root), CallLogger()], log_every_n_steps=2,
                    callbacks=[ModelCheckpoint(monitor="val_loss", save_top_k=2), EarlyStopping("val_loss")])
    defaults.update(options)
    return volt.Trainer(**defaults)


def run(root, search=None, model_options=None, **trainer_options):
    """Seeded: make the model and trainer, `search(trainer, model)` if given, then fit."""
    volt.seed_everything(7, verbose=False)
    model = Net(**(model_options or {}))
    trainer = make_trainer(root, **trainer_options)
    found = search(trainer, model) if search is not None else None
    trainer.fit(model)
    return model, trainer, found


def files(root):
    """Every file under `root`, relative, with the contents of the text ones (checkpoints are compared apart)."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = open(path).read() if name.endswith((".csv", ".yaml")) else None
    return found


def assert_same_run(a, b, root_a, root_b):
    (model_a, trainer_a), (model_b, trainer_b) = a, b
    for (name, x), (_, y) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        torch.testing.assert_close(x, y, **EXACT, msg=name)
    opt_a, opt_b = trainer_a.optimizers[0].state_dict(), trainer_b.optimizers[0].state_dict()
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for key in opt_a["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(opt_a["state"][key][name], opt_b["state"][key][name], **EXACT)
    assert (trainer_a.current_epoch, trainer_a.global_step) == (trainer_b.current_epoch, trainer_b.global_step)
    states_b = {cb.state_key: cb.state_dict() for cb in trainer_b.callbacks}
    for callback in trainer_a.callbacks:
        if not isinstance(callback, (LearningRateFinder, BatchSizeFinder)):
            state_a, state_b = callback.state_dict(), states_b[callback.state_key]
            assert str(state_a).replace(str(root_a), "") == str(state_b).replace(str(root_b), ""), callback.state_key
    assert files(root_a) == files(root_b)  # same log version, same rows, same checkpoints, nothing left over
    calls = [[logger.calls for logger in trainer.loggers if isinstance(logger, CallLogger)]
             for trainer in (trainer_a, trainer_b)]
    assert calls[0] == calls[1]  # hyperparameters logged once, no metrics from the search


@pytest.mark.parametrize("generator_seed", [None, 5])
def test_fit_after_lr_find_is_bit_identical_to_fit_alone(tmp_path, generator_seed):
    """With `update_attr=False` the search changes nothing: the fit after it equals a fit without it, weights,
    Adam state, counters, ModelCheckpoint/EarlyStopping state, logs and files, and the RNG streams after it."""
    options = dict(model_options={"generator_seed": generator_seed})
    model, trainer, _ = run(tmp_path / "plain", **options)
    after_plain = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    tuned, tuned_trainer, finder = run(
        tmp_path / "tuned", lambda t, m: Tuner(t).lr_find(m, num_training=12, update_attr=False), **options)
    assert len(finder.results["lr"]) > 2 and tuned.lr == 0.05
    assert torch.equal(torch.get_rng_state(), after_plain[0]) and (np.random.get_state()[1] == after_plain[1]).all()
    assert random.getstate() == after_plain[2]
    assert_same_run((model, trainer), (tuned, tuned_trainer), tmp_path / "plain", tmp_path / "tuned")
    assert os.listdir(tmp_path / "tuned" / "lightning_logs") == ["version_0"]


def test_learning_rate_finder_callback_leaves_the_fit_unchanged(tmp_path):
    """The callback searches inside the real fit, at `on_fit_start`: the fit then runs as if it had not."""
    model, trainer, _ = run(tmp_path / "plain")
    finder = LearningRateFinder(num_training_steps=12, update_attr=False)
    callbacks = [finder, ModelCheckpoint(monitor="val_loss", save_top_k=2), EarlyStopping("val_loss")]
    tuned, tuned_trainer, _ = run(tmp_path / "tuned", callbacks=callbacks)
    assert finder.optimal_lr is not None and len(finder.optimal_lr.results["loss"]) > 2
    assert_same_run((model, trainer), (tuned, tuned_trainer), tmp_path / "plain", tmp_path / "tuned")


class SchedulerNet(Net):
    """SGD with a warm-up LambdaLR scheduler, stepped every batch: it scales from its base rate."""

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 4))
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]


def test_callback_trains_with_the_suggestion_when_the_optimizer_exists(tmp_path):
    """The suggestion reaches the optimizer `configure_optimizers` already made and its scheduler's base rate
    (#21068): the fit equals one whose module had the suggested rate from the start."""
    options = dict(logger=False, enable_checkpointing=False, callbacks=None)
    volt.seed_everything(7, verbose=False)
    model = SchedulerNet()
    finder = LearningRateFinder(num_training_steps=30, max_lr=0.5)
    trainer = make_trainer(tmp_path / "a", **{**options, "callbacks": [finder]})
    trainer.fit(model)
    suggestion = finder.optimal_lr.suggestion()
    assert suggestion is not None and suggestion != 0.05 and model.lr == suggestion
    assert trainer.lr_schedulers[0].base_lrs == [suggestion]

    volt.seed_everything(7, verbose=False)
    direct = SchedulerNet(lr=suggestion)
    make_trainer(tmp_path / "b", **options).fit(direct)
    for x, y in zip(model.parameters(), direct.parameters()):
        torch.testing.assert_close(x, y, **EXACT)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(suggestion)


class HparamsNet(Net):
    def __init__(self, learning_rate: float = 0.05, encoder: torch.nn.Module = None):
        super().__init__()
        # `encoder` is an nn.Module: Lightning's temporary checkpoint failed (#21757). `ignore` also drops the `lr`
        # that Net's `__init__` saved, as in Lightning, so the rate lives in `hparams.learning_rate` only.
        self.save_hyperparameters(ignore=["lr"])
        del self.lr

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate)


def test_tuner_sets_the_suggestion_where_the_module_keeps_its_rate(tmp_path):
    volt.seed_everything(7, verbose=False)
    model = HparamsNet(encoder=torch.nn.Linear(2, 2))
    trainer = make_trainer(tmp_path, logger=False, enable_checkpointing=False, callbacks=None)
    finder = Tuner(trainer).lr_find(model, num_training=20, max_lr=0.5)
    assert model.hparams.learning_rate == finder.suggestion() != 0.05
    trainer.fit(model)
    assert trainer.optimizers[0].param_groups[0]["lr"] == finder.suggestion()

    model = Net()
    model.step_size = 0.05
    finder = Tuner(make_trainer(tmp_path, logger=False, enable_checkpointing=False, callbacks=None)).lr_find(
        model, num_training=20, max_lr=0.5, attr_name="step_size", early_stop_threshold=None)
    assert model.step_size == finder.suggestion() and model.lr == 0.05


def test_lr_find_results_schedule_and_plot(tmp_path, monkeypatch):
    """Rates rise from min_lr to max_lr (Lightning's schedule); `plot` returns a Figure with the suggestion marked
    and saves a PNG; linear mode draws a linear axis."""
    import matplotlib

    matplotlib.use("Agg")
    trainer = make_trainer(tmp_path, logger=False, enable_checkpointing=False, callbacks=None)
    finder = Tuner(trainer).lr_find(Net(), min_lr=1e-4, max_lr=1.0, num_training=20, early_stop_threshold=None,
                                    update_attr=False)
    lrs = finder.results["lr"]
    assert len(lrs) == len(finder.results["loss"]) == 20
    assert lrs[0] == 1e-4 and lrs[-1] == pytest.approx(1.0) and lrs == sorted(lrs)
    suggestion = finder.suggestion()
    assert suggestion == lrs[finder._optimal_idx]
    figure = finder.plot(suggest=True)
    assert type(figure).__name__ == "Figure" and figure.axes[0].get_xscale() == "log"
    marked = [line for line in figure.axes[0].lines if line.get_marker() == "o"]
    assert len(marked) == 1 and marked[0].get_xdata()[0] == pytest.approx(suggestion)
    figure.savefig(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    linear = Tuner(trainer).lr_find(Net(), min_lr=0.0, max_lr=0.5, num_training=15, mode="linear",
                                    update_attr=False)
    assert linear.results["lr"][0] == 0.0 and linear.plot().axes[0].get_xscale() == "linear"
    import matplotlib.pyplot as plt

    shown_calls = []
    monkeypatch.setattr(plt, "show", lambda: shown_calls.append(plt.get_fignums()))
    shown = linear.plot(show=True)
    assert shown_calls == [[shown.number]]  # made through pyplot, so that `show` opens it
    plt.close(shown)


def test_suggestion_needs_points():
    from volt.tuner.lr_finder import _LRFinder

    finder = _LRFinder("exponential", 1e-5, 1.0, 10)
    finder.results = {"lr": [1e-3, 2e-3, 3e-3, 4e-3], "loss": [1.0, 0.95, 0.3, 0.29]}
    assert finder.suggestion() is None  # fewer than two points after skipping the first 10
    assert finder.suggestion(skip_begin=0, skip_end=0) == 2e-3  # the steepest fall: 0.95 -> 0.3
    assert finder._optimal_idx == 1
    finder.results["loss"][1] = float("nan")  # non-finite losses are left out
    assert finder.suggestion(skip_begin=0, skip_end=0) == 1e-3


def test_lr_find_errors(tmp_path):
    trainer = make_trainer(tmp_path, logger=False, enable_checkpointing=False, callbacks=None)
    tuner = Tuner(trainer)
    with pytest.raises(MisconfigurationException, match="method='fit' is the only valid"):
        tuner.lr_find(Net(), method="validate")
    with pytest.raises(MisconfigurationException, match="`dataloaders` argument should be None"):
        tuner.lr_find(Net(), dataloaders=DataLoader(dataset()))
    with pytest.raises(ValueError, match="`mode` should be either of"):
        tuner.lr_find(Net(), mode="cosine")
    with pytest.raises(ValueError, match="0 < min_lr < max_lr"):
        tuner.lr_find(Net(), min_lr=1.0, max_lr=0.1)
    model = Net()
    del model.lr
    del model.hparams["lr"]
    model.configure_optimizers = lambda: torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(AttributeError, match=r"should have one of these fields: \('lr', 'learning_rate'\)"):
        tuner.lr_find(model)
    with pytest.raises(AttributeError, match="set to 'rate', but could not find"):
        tuner.lr_find(Net(), attr_name="rate")
    two = Net()
    two.configure_optimizers = lambda: [torch.optim.SGD(two.parameters(), lr=0.1)] * 2
    two.automatic_optimization = False
    with pytest.raises(MisconfigurationException, match="returned 2 optimizers, but the learning rate finder only "
                                                        "works with single optimizer"):
        tuner.lr_find(two, update_attr=False)
    assert trainer.callbacks == [] and trainer.global_step == 0  # a failed search leaves the trainer as it was
    configured = make_trainer(tmp_path, logger=False, callbacks=[LearningRateFinder()])
    with pytest.raises(ValueError, match="already configured with a `LearningRateFinder`"):
        Tuner(configured).lr_find(Net())
    fast = make_trainer(tmp_path, logger=False, callbacks=None, fast_dev_run=True)
    with pytest.warns(UserWarning, match="Skipping learning rate finder"):
        assert Tuner(fast).lr_find(Net()) is None


# ------------------------------------------------------------------------------------------ batch size


class MemoryBound(Net):
    """Raises `error` for a batch larger than `limit` (what running out of memory looks like, on the CPU)."""

    def __init__(self, limit: int, batch_size: int = 2, error=MemoryError):
        super().__init__(batch_size=batch_size)
        self.limit, self.error, self.tried = limit, error, []

    def check(self, batch):
        self.tried.append(len(batch[0]))
        if len(batch[0]) > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB" if self.error is RuntimeError else "")

    def training_step(self, batch, batch_idx):
        self.check(batch)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.check(batch)
        return super().validation_step(batch, batch_idx)

    def test_step(self, batch, batch_idx):
        self.check(batch)
        return super().test_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx):
        self.check(batch)
        return self(batch[0])

    def train_dataloader(self):
        return DataLoader(dataset(200), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(dataset(200, seed=1), batch_size=self.batch_size)

    test_dataloader = predict_dataloader = val_dataloader


@pytest.mark.parametrize("mode, margin, expected", [("power", 0.05, 16), ("binsearch", 0.0, 23),
                                                    ("binsearch", 0.1, 20)])
@pytest.mark.parametrize("error", [MemoryError, RuntimeError])
def test_scale_batch_size_stops_at_out_of_memory(tmp_path, mode, margin, expected, error):
    """Sizes double until a batch of 32 runs out of memory (limit 23); "power" keeps 16, "binsearch" bisects to
    exactly 23 (less the margin). The module and its dataloader end with that size."""
    model = MemoryBound(limit=23, error=error)
    trainer = make_trainer(tmp_path, logger=False, enable_checkpointing=False, callbacks=None)
    found = Tuner(trainer).scale_batch_size(model, mode=mode, margin=margin, steps_per_trial=2)
    assert found == model.batch_size == expected
    assert max(size for size in model.tried if size <= 23) == (16 if mode == "power" else 23)
    assert trainer.train_dataloader.batch_size == expected and trainer.global_step == 0
    trainer.fit(model)
    assert trainer.train_dataloader.batch_size == expected


def test_fit_after_batch_size_search_equals_fit_at_that_size(tmp_path):
    """The search's trials leave no trace: BatchSizeFinder's fit equals a fit with the found size from the start,
    logs included."""
    volt.seed_everything(7, verbose=False)
    model = MemoryBound(limit=40)
    finder = BatchSizeFinder(mode="binsearch", margin=0.0)
    callbacks = [finder, ModelCheckpoint(monitor="val_loss")]
    trainer = make_trainer(tmp_path / "a", callbacks=callbacks, logger=CSVLogger(tmp_path / "a"))
    trainer.fit(model)
    assert finder.optimal_batch_size == 40

    volt.seed_everything(7, verbose=False)
    direct = MemoryBound(limit=40, batch_size=40)
    direct_trainer = make_trainer(tmp_path / "b", callbacks=[BatchSizeFinder(init_val=40, max_val=40),
                                                             ModelCheckpoint(monitor="val_loss")],
                                  logger=CSVLogger(tmp_path / "b"))
    direct_trainer.fit(direct)
    assert_same_run((model, trainer), (direct, direct_trainer), tmp_path / "a", tmp_path / "b")


class SizedData(volt.LightningDataModule):
    def __init__(self, batch_size: int = 2):
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self):
        return DataLoader(dataset(64), batch_size=self.hparams.batch_size)

    val_dataloader = test_dataloader = predict_dataloader = train_dataloader


@pytest.mark.parametrize("method", ["validate", "test", "predict"])
def test_scale_batch_size_for_evaluation_and_a_datamodule(tmp_path, method):
    """The size can live in a datamodule's hparams; evaluation searches run evaluation batches."""
    model, data = MemoryBound(limit=20), SizedData()
    del model.batch_size
    trainer = make_trainer(tmp_path, logger=False, enable_checkpointing=False, callbacks=None)
    assert Tuner(trainer).scale_batch_size(model, datamodule=data, method=method, mode="binsearch", margin=0) == 20
    assert data.hparams.batch_size == 20 and model.training  # the call ended early: the module's mode is back
    finder = BatchSizeFinder(mode="power")
    trainer = make_trainer(tmp_path, logger=False, enable_checkpointing=False, callbacks=[finder])
    data = SizedData()
    getattr(trainer, method)(model, datamodule=data)
    assert finder.optimal_batch_size == data.hparams.batch_size == 16


def test_batch_size_search_until_the_dataset_or_max_val(tmp_path, caplog):
    """Nothing runs out of memory: the search stops once a batch holds the whole dataset, or at `max_val`, or
    after `max_trials` (0: none, the initial size stays)."""
    trainer = make_trainer(tmp_path, logger=False, enable_checkpointing=False, callbacks=None)
    assert Tuner(trainer).scale_batch_size(MemoryBound(limit=10**6)) == 256  # 200 samples: 256 holds them all
    assert Tuner(trainer).scale_batch_size(MemoryBound(limit=10**6), max_val=48) == 48
    assert Tuner(trainer).scale_batch_size(MemoryBound(limit=10**6), init_val=64, max_val=48) == 48
    model = MemoryBound(limit=10**6)
    caplog.clear()
    with caplog.at_level("INFO", logger="volt.tuner"):
        assert Tuner(trainer).scale_batch_size(model, init_val=4, max_trials=3) == 16 and max(model.tried) == 16
    # Lightning's log lines: the next size is named only when it is tried
    assert caplog.text.count("trying batch size") == 2 and "Batch size 16 succeeded.\n" in caplog.text
    model = MemoryBound(limit=10**6)
    assert Tuner(trainer).scale_batch_size(model, init_val=4, max_trials=0) == 4 and model.tried == []


def test_batch_size_errors(tmp_path):
    trainer = make_trainer(tmp_path, logger=False, enable_checkpointing=False, callbacks=None)
    tuner = Tuner(trainer)
    with pytest.raises(MemoryError, match="even with batch_size=1"):
        tuner.scale_batch_size(MemoryBound(limit=0))
    with pytest.raises(ZeroDivisionError):  # not a memory error: it propagates
        tuner.scale_batch_size(MemoryBound(limit=4, error=ZeroDivisionError))
    with pytest.raises(MisconfigurationException, match="dataloaders passed directly to `.fit\\(\\)`"):
        tuner.scale_batch_size(MemoryBound(limit=4), train_dataloaders=DataLoader(dataset()))
    model = MemoryBound(limit=4)
    model.val_dataloader = lambda: [DataLoader(dataset()), DataLoader(dataset())]
    with pytest.raises(MisconfigurationException, match="multiple val dataloaders"):
        tuner.scale_batch_size(model, method="validate")
    with pytest.raises(MisconfigurationException, match="Field batch_size not found"):
        tuner.scale_batch_size(BoringModel())
    with pytest.raises(ValueError, match="method 'train' is invalid"):
        tuner.scale_batch_size(MemoryBound(limit=4), method="train")
    with pytest.raises(ValueError, match="`mode` should be either of"):
        BatchSizeFinder(mode="linear")
    with pytest.raises(ValueError, match="`margin` should be between 0 and 1"):
        BatchSizeFinder(margin=1.5)
    assert trainer.callbacks == []


def test_import_paths():
    """Lightning's module paths for the tuner's parts."""
    from volt.tuner.batch_size_scaling import _scale_batch_size  # noqa: F401
    from volt.tuner.lr_finder import _lr_find, _LRFinder  # noqa: F401
    from volt.tuner.tuning import Tuner as TunerAgain
    from volt.utilities.memory import garbage_collection_cuda, is_oom_error  # noqa: F401
    from volt.utilities.parsing import lightning_getattr, lightning_hasattr, lightning_setattr  # noqa: F401

    assert TunerAgain is Tuner and volt.tuner.Tuner is Tuner
    assert volt.callbacks.LearningRateFinder is LearningRateFinder
    assert is_oom_error(torch.cuda.OutOfMemoryError("CUDA out of memory.")) and is_oom_error(MemoryError())
    assert is_oom_error(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"))
    assert not is_oom_error(RuntimeError("shape mismatch")) and not is_oom_error(ValueError("out of memory"))


def test_trial_run_needs_a_running_call(tmp_path):
    trainer = make_trainer(tmp_path, logger=False, callbacks=None)
    with pytest.raises(RuntimeError, match="needs a running Trainer call"):
        with trainer.trial_run():
            pass


def test_lr_find_writes_nothing_with_tensorboard(tmp_path):
    """A module writing to `self.logger.experiment` itself runs during the search, and the search leaves no file:
    the log folder appears only with the fit after it."""
    from volt.loggers import TensorBoardLogger

    class Writes(Net):
        def training_step(self, batch, batch_idx):
            self.logger.experiment.add_scalar("custom", 1.0, self.global_step)
            return super().training_step(batch, batch_idx)

    trainer = make_trainer(tmp_path, logger=TensorBoardLogger(tmp_path), callbacks=None)
    model = Writes()
    assert len(Tuner(trainer).lr_find(model, num_training=8, early_stop_threshold=None).results["lr"]) == 8
    assert os.listdir(tmp_path) == []
    trainer.fit(model)
    assert os.listdir(tmp_path / "lightning_logs") == ["version_0"]


class LaterSearch(LearningRateFinder):
    """Lightning's documented pattern: search at a later epoch (fine-tuning), not at fit start."""

    def on_fit_start(self, trainer, pl_module):
        return

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            self.lr_find(trainer, pl_module)


def test_search_in_the_middle_of_a_fit_leaves_it_unchanged(tmp_path):
    """A search from `on_train_epoch_start` of epoch 1, inside the running loop: it gets all its points (its loss
    smoothing counts its own steps), and the fit goes on exactly as without it."""
    model, trainer, _ = run(tmp_path / "plain")
    finder = LaterSearch(num_training_steps=15, update_attr=False)
    callbacks = [finder, ModelCheckpoint(monitor="val_loss", save_top_k=2), EarlyStopping("val_loss")]
    tuned, tuned_trainer, _ = run(tmp_path / "tuned", callbacks=callbacks)
    assert len(finder.optimal_lr.results["lr"]) == 15
    assert_same_run((model, trainer), (tuned, tuned_trainer), tmp_path / "plain", tmp_path / "tuned")
