"""Every Trainer argument of Lightning 2.x: what it does in a real run, and the clear error for a bad value."""
import os
from datetime import timedelta

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import volt
from volt.accelerators import CPUAccelerator
from helpers import BoringModel, MemoryLogger, loader, trainer
from volt.callbacks import EarlyStopping, ModelCheckpoint, ModelSummary, ProgressBar, Timer
from volt.utilities.exceptions import MisconfigurationException


class Counting(BoringModel):
    """BoringModel that records which batches each stage saw and how often each dataloader hook ran."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = {"train": [], "validate": [], "test": [], "predict": []}
        self.loader_calls = {"train": 0, "val": 0}
        self.val_runs = 0

    def training_step(self, batch, batch_idx):
        self.seen["train"].append((self.current_epoch, batch_idx))
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        if not self.trainer.sanity_checking:
            self.seen["validate"].append((self.current_epoch, batch_idx))
        return super().validation_step(batch, batch_idx)

    def on_validation_start(self):
        self.val_runs += not self.trainer.sanity_checking

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self.seen["test"].append(batch_idx)
        return super().test_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        self.seen["predict"].append(batch_idx)
        return self(batch[0])

    def train_dataloader(self):
        self.loader_calls["train"] += 1
        return super().train_dataloader()

    def val_dataloader(self):
        self.loader_calls["val"] += 1
        return super().val_dataloader()


def fit(tmp_path, model=None, **kwargs):
    """Fit `model` (a fresh Counting by default: 4 train and 4 val batches) and return (trainer, model)."""
    model = model or Counting()
    run = trainer(tmp_path, **kwargs)
    run.fit(model)
    return run, model


# ------------------------------------------------------------------------------------------ loop limits


def test_max_epochs_and_its_default(tmp_path):
    run, model = fit(tmp_path, max_epochs=2, num_sanity_val_steps=0)
    assert (run.current_epoch, run.global_step, len(model.seen["train"])) == (2, 8, 8)
    # as Lightning: unset stays None until fit decides (1000, with a warning, unless max_steps or max_time ends it)
    assert volt.Trainer(logger=False).max_epochs is None
    assert volt.Trainer(logger=False, max_steps=10).max_epochs is None
    run = trainer(tmp_path, max_epochs=None, limit_train_batches=1, max_steps=2, num_sanity_val_steps=0)
    run.fit(Counting())
    assert (run.max_epochs, run.global_step, run.current_epoch) == (-1, 2, 2)
    run = trainer(tmp_path, max_epochs=None, limit_train_batches=1, max_time={"seconds": 0.5},
                  num_sanity_val_steps=0)
    run.fit(Counting())
    assert run.max_epochs == -1
    run = trainer(tmp_path, max_epochs=None, limit_train_batches=1, limit_val_batches=0,
                  callbacks=[StopAtFirstBatch()])
    with pytest.warns(UserWarning, match="`max_epochs` was not set. Setting it to 1000 epochs"):
        run.fit(Counting())
    assert run.max_epochs == 1000


def test_max_steps_stops_inside_an_epoch(tmp_path):
    run, model = fit(tmp_path, max_epochs=5, max_steps=3)
    assert (run.global_step, run.current_epoch) == (3, 1)  # as Lightning: the stopped epoch counts as done
    assert model.seen["train"] == [(0, 0), (0, 1), (0, 2)]


class StopAtFirstBatch(volt.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        trainer.should_stop = True


def test_should_stop_ends_training_after_the_current_batch(tmp_path):
    run, model = fit(tmp_path, max_epochs=3, callbacks=[StopAtFirstBatch()], num_sanity_val_steps=0)
    assert (run.global_step, run.current_epoch) == (1, 1) and run.should_stop
    assert model.seen["train"] == [(0, 0)]
    assert model.seen["validate"], "stopping early still validates, so monitors see the last state"


def test_min_epochs_and_min_steps_hold_off_should_stop(tmp_path):
    run, _ = fit(tmp_path, max_epochs=5, min_epochs=2, callbacks=[StopAtFirstBatch()], limit_val_batches=0)
    assert (run.current_epoch, run.global_step) == (2, 8)
    run, _ = fit(tmp_path, max_epochs=5, min_steps=6, callbacks=[StopAtFirstBatch()], limit_val_batches=0)
    assert run.global_step == 6


def test_max_time_adds_a_timer_that_stops_training(tmp_path):
    run, model = fit(tmp_path, max_epochs=100, max_time={"seconds": 0}, limit_val_batches=0)
    timers = [cb for cb in run.callbacks if isinstance(cb, Timer)]
    assert len(timers) == 1 and timers[0].time_remaining() <= 0
    assert run.global_step == 0  # the budget is checked at fit start too
    assert [isinstance(cb, Timer) for cb in volt.Trainer(max_time="00:12:00:00", logger=False).callbacks].count(True)
    assert volt.Trainer(max_time=timedelta(hours=1), logger=False) is not None
    with pytest.raises(MisconfigurationException, match=r"'soon'\) is not a duration: use 'DD:HH:MM:SS'"):
        volt.Trainer(max_time="soon", logger=False)
    own = Timer(duration={"minutes": 5})  # as Lightning: a Timer in the callbacks wins over max_time
    assert [cb for cb in volt.Trainer(max_time={"seconds": 1}, callbacks=[own]).callbacks if isinstance(cb, Timer)] \
        == [own]


# ------------------------------------------------------------------------------------------ how many batches


@pytest.mark.parametrize("limit, expected", [(2, 2), (0.5, 2), (1.0, 4), (10, 4), (0.8, 3)])
def test_limit_train_batches(tmp_path, limit, expected):
    run, model = fit(tmp_path, limit_train_batches=limit, limit_val_batches=0)
    assert run.num_training_batches == expected == len(model.seen["train"])


def test_limit_val_test_predict_batches(tmp_path):
    run, model = fit(tmp_path, limit_val_batches=0.5, limit_test_batches=1, limit_predict_batches=3,
                     num_sanity_val_steps=0)
    assert run.num_val_batches == [2] and len(model.seen["validate"]) == 2
    run.test(model, verbose=False)
    assert run.num_test_batches == [1] and model.seen["test"] == [0]
    assert len(run.predict(model)) == 3
    run, model = fit(tmp_path, limit_val_batches=0)
    assert model.val_runs == 0 and model.loader_calls["val"] == 0


def test_val_check_interval_float_validates_within_the_epoch(tmp_path):
    _, model = fit(tmp_path, val_check_interval=0.5, limit_val_batches=1, num_sanity_val_steps=0)
    assert model.val_runs == 2


def test_val_check_interval_int(tmp_path):
    _, model = fit(tmp_path, max_epochs=2, val_check_interval=3, limit_val_batches=1, num_sanity_val_steps=0)
    assert model.val_runs == 2  # after batch 3 of each epoch
    # with check_val_every_n_epoch=None the count runs across epochs: after batches 3 and 6 of 8
    _, model = fit(tmp_path, max_epochs=2, val_check_interval=3, check_val_every_n_epoch=None,
                   limit_val_batches=1, num_sanity_val_steps=0)
    assert model.val_runs == 2 and [e for e, _ in model.seen["validate"]] == [0, 1]
    with pytest.raises(ValueError, match=r"`val_check_interval` \(5\) must be less than or equal"):
        fit(tmp_path, val_check_interval=5)
    with pytest.raises(MisconfigurationException, match="val_check_interval=1.5"):
        volt.Trainer(val_check_interval=1.5, logger=False)


def test_check_val_every_n_epoch(tmp_path):
    _, model = fit(tmp_path, max_epochs=4, check_val_every_n_epoch=2, limit_val_batches=1, num_sanity_val_steps=0)
    assert [epoch for epoch, _ in model.seen["validate"]] == [1, 3]


@pytest.mark.parametrize("steps, expected", [(0, 0), (2, 2), (-1, 4), (None, 2)])
def test_num_sanity_val_steps(tmp_path, steps, expected):
    class SanityCounter(volt.Callback):
        batches = 0

        def on_validation_batch_end(self, trainer, *args):
            self.batches += trainer.sanity_checking

    counter = SanityCounter()
    fit(tmp_path, num_sanity_val_steps=steps, limit_train_batches=1, callbacks=[counter])
    assert counter.batches == expected


def test_fast_dev_run_runs_n_batches_and_writes_nothing(tmp_path):
    run = volt.Trainer(default_root_dir=tmp_path, fast_dev_run=True, enable_progress_bar=False,
                       enable_model_summary=False)
    model = Counting()
    run.fit(model)
    run.test(model, verbose=False)
    assert model.seen["train"] == [(0, 0)] and model.seen["validate"] == [(0, 0)] and model.seen["test"] == [0]
    # as Lightning: the logger is a DummyLogger (user code calling `self.logger.experiment...` runs), nothing written
    assert [type(logger).__name__ for logger in run.loggers] == ["DummyLogger"] and os.listdir(tmp_path) == []
    run.logger.experiment.add_scalar("x", 1.0)
    run.logger.log_table(key="t", data=[[1]])
    assert volt.Trainer(fast_dev_run=True, logger=False).loggers == []
    run = trainer(tmp_path, fast_dev_run=3, max_epochs=10)
    model = Counting()
    run.fit(model)
    assert len(model.seen["train"]) == 3 and len(model.seen["validate"]) == 3 and run.current_epoch == 1
    with pytest.raises(MisconfigurationException, match="fast_dev_run=-1"):
        volt.Trainer(fast_dev_run=-1)


def test_overfit_batches_trains_on_the_same_first_batches_in_order(tmp_path):
    batches = []

    class Recording(Counting):
        def training_step(self, batch, batch_idx):
            batches.append(batch[0])
            return super().training_step(batch, batch_idx)

        def train_dataloader(self):
            return loader(shuffle=True)

    run, _ = fit(tmp_path, Recording(), max_epochs=2, overfit_batches=2, num_sanity_val_steps=0)
    first_two = [x for x, _ in loader()][:2]
    assert run.num_training_batches == 2 and run.num_val_batches == [2]
    assert all(torch.equal(a, b) for a, b in zip(batches, first_two * 2)) and len(batches) == 4
    with pytest.raises(MisconfigurationException, match="overfit_batches=-1"):
        volt.Trainer(overfit_batches=-1)


# ------------------------------------------------------------------------------------------ the optimizer step


class ScalarModel(volt.LightningModule):
    """loss = x * w for a batch of one x, so the gradient of each batch is x; SGD with lr=1 makes w -= grad."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.grads = []

    def training_step(self, batch, batch_idx):
        return (batch[0][0] * self.w).sum()

    def on_before_optimizer_step(self, optimizer):
        self.grads.append(self.w.grad.clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


def scalar_data(*rows):
    return DataLoader(TensorDataset(torch.tensor(rows, dtype=torch.float32)), batch_size=1)


def test_accumulate_grad_batches_averages_each_window_and_the_partial_last_one(tmp_path):
    model = ScalarModel()
    run = trainer(tmp_path, accumulate_grad_batches=2)
    run.fit(model, scalar_data([1.0, 0.0], [3.0, 0.0], [0.0, 5.0]))
    assert run.global_step == 2
    # window [1, 3] -> mean 2; the final partial window holds one batch and is divided by 1 (volt differs from
    # Lightning, which divides it by 2: Lightning issue #19987)
    assert [g.tolist() for g in model.grads] == [[2.0, 0.0], [0.0, 5.0]]
    assert model.w.tolist() == [-2.0, -5.0]


@pytest.mark.parametrize("algorithm, expected", [
    ("norm", [-0.6, -0.8]),  # the gradient (3, 4) scaled to norm 1
    ("value", [-1.0, -1.0]),  # each element clamped to [-1, 1]
])
def test_gradient_clipping(tmp_path, algorithm, expected):
    model = ScalarModel()
    trainer(tmp_path, gradient_clip_val=1.0, gradient_clip_algorithm=algorithm).fit(model, scalar_data([3.0, 4.0]))
    assert model.grads[0].tolist() == [3.0, 4.0]  # on_before_optimizer_step sees the gradient before clipping
    assert model.w.tolist() == pytest.approx(expected)


def test_gradient_clipping_off_and_invalid(tmp_path):
    model = ScalarModel()
    trainer(tmp_path, gradient_clip_val=0).fit(model, scalar_data([3.0, 4.0]))
    assert model.w.tolist() == [-3.0, -4.0]
    with pytest.raises(MisconfigurationException, match="gradient_clip_algorithm='l1'.*'norm', 'value'"):
        volt.Trainer(gradient_clip_algorithm="l1")


# ------------------------------------------------------------------------------------------ precision


class DtypeModel(BoringModel):
    def training_step(self, batch, batch_idx):
        self.dtypes = (batch[0].dtype, self.layer.weight.dtype, self(batch[0]).dtype)
        return self.loss(batch).float()


@pytest.mark.parametrize("precision, name, batch, weight, output", [
    (64, "64-true", torch.float64, torch.float64, torch.float64),
    ("32", "32-true", torch.float32, torch.float32, torch.float32),
    (None, "32-true", torch.float32, torch.float32, torch.float32),
    ("16-mixed", "16-mixed", torch.float32, torch.float32, torch.float16),
    ("bf16-mixed", "bf16-mixed", torch.float32, torch.float32, torch.bfloat16),
    ("16-true", "16-true", torch.float16, torch.float16, torch.float16),
    ("bf16-true", "bf16-true", torch.bfloat16, torch.bfloat16, torch.bfloat16),
])
def test_precision_sets_the_dtypes_inside_training_step(tmp_path, precision, name, batch, weight, output):
    model = DtypeModel()
    run = trainer(tmp_path, precision=precision, limit_train_batches=1, limit_val_batches=0)
    run.fit(model)
    assert run.precision == name
    assert model.dtypes == (batch, weight, output)
    assert isinstance(run.scaler, torch.amp.GradScaler) == (name == "16-mixed")


def test_invalid_precision_lists_the_choices():
    with pytest.raises(ValueError, match="precision='8' is not supported. Choose one of '64-true', '32-true'"):
        volt.Trainer(precision="8")


# ------------------------------------------------------------------------------------------ debugging and speed


@pytest.fixture
def restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("value, warn_only", [(True, False), ("warn", True)])
def test_deterministic(value, warn_only, restore_determinism):
    volt.Trainer(deterministic=value, logger=False)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled() == warn_only


def test_deterministic_invalid():
    with pytest.raises(MisconfigurationException, match="deterministic='always'"):
        volt.Trainer(deterministic="always")


@pytest.mark.parametrize("inference_mode", [True, False])
def test_inference_mode(tmp_path, inference_mode):
    class Model(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.modes = (torch.is_inference_mode_enabled(), torch.is_grad_enabled())

    model = Model()
    trainer(tmp_path, inference_mode=inference_mode).validate(model, verbose=False)
    assert model.modes == (inference_mode, False)
    trainer(tmp_path, inference_mode=inference_mode, limit_train_batches=1).fit(model)
    assert model.modes == (False, False), "validation inside fit runs under no_grad"


def test_detect_anomaly_stops_at_a_nan_loss(tmp_path):
    class NaNModel(BoringModel):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx) * (float("nan") if batch_idx == 1 else 1.0)

    with pytest.raises(RuntimeError, match="returned nan values in its 0th output"):  # torch's anomaly mode
        trainer(tmp_path, detect_anomaly=True).fit(NaNModel())


def test_barebones_turns_every_extra_off(tmp_path):
    run = volt.Trainer(barebones=True, default_root_dir=tmp_path, max_epochs=1)
    assert run.callbacks == [] and run.loggers == []
    run.fit(BoringModel())
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="barebones=True, enable_checkpointing=True"):
        volt.Trainer(barebones=True, enable_checkpointing=True)


# ------------------------------------------------------------------------------------------ data


@pytest.mark.parametrize("every, train_calls, val_calls", [(0, 1, 1), (1, 3, 3), (2, 2, 2)])
def test_reload_dataloaders_every_n_epochs(tmp_path, every, train_calls, val_calls):
    _, model = fit(tmp_path, max_epochs=3, reload_dataloaders_every_n_epochs=every, num_sanity_val_steps=0)
    assert model.loader_calls == {"train": train_calls, "val": val_calls}


def test_several_val_and_test_loaders(tmp_path):
    class Model(Counting):
        def val_dataloader(self):
            return [loader(n=4), loader(n=6)]

        def test_dataloader(self):
            return {"a": loader(n=2), "b": loader(n=4)}

    run, model = fit(tmp_path, Model(), num_sanity_val_steps=0)
    assert run.num_val_batches == [2, 3] and len(model.seen["validate"]) == 5
    assert len(run.val_dataloaders) == 2
    results = run.test(model, verbose=False)
    assert run.num_test_batches == [1, 2] and len(results) == 2
    assert set(results[1]) == {"test_loss/dataloader_idx_1"}


def test_estimated_stepping_batches(tmp_path):
    class Model(BoringModel):
        def configure_optimizers(self):
            self.estimate = self.trainer.estimated_stepping_batches
            return super().configure_optimizers()

    cases = [(dict(max_epochs=3), 12), (dict(max_epochs=3, accumulate_grad_batches=3), 6),
             (dict(max_epochs=3, max_steps=5), 5), (dict(max_epochs=2, limit_train_batches=3), 6),
             (dict(max_epochs=-1, max_steps=7), 7)]
    for kwargs, expected in cases:
        model = Model()
        trainer(tmp_path, limit_val_batches=0, **kwargs).fit(model)
        assert model.estimate == expected, kwargs


def test_metric_dicts_are_empty_before_fit_and_tensors_after(tmp_path):
    run = trainer(tmp_path)
    assert run.callback_metrics == run.logged_metrics == run.progress_bar_metrics == {}
    run.fit(BoringModel())
    assert set(run.callback_metrics) == {"train_loss", "val_loss"}
    assert all(isinstance(v, torch.Tensor) for v in run.callback_metrics.values())


# ------------------------------------------------------------------------------------------ files and extras


def test_default_root_dir_and_log_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = volt.Trainer(max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
    assert run.default_root_dir == str(tmp_path)
    run.fit(BoringModel())
    assert run.log_dir == os.path.join(str(tmp_path), "lightning_logs", "version_0")
    assert os.listdir(os.path.join(run.log_dir, "checkpoints")) == ["epoch=0-step=4.ckpt"]
    assert trainer(tmp_path / "elsewhere").log_dir == str(tmp_path / "elsewhere")  # logger=False
    memory = MemoryLogger()
    assert trainer(tmp_path, logger=memory).log_dir is None  # a logger without a directory


@pytest.mark.parametrize("flag, kind", [("enable_checkpointing", ModelCheckpoint),
                                        ("enable_progress_bar", ProgressBar),
                                        ("enable_model_summary", ModelSummary)])
def test_enable_flags_add_or_remove_their_callback(flag, kind):
    assert any(isinstance(cb, kind) for cb in volt.Trainer(logger=False).callbacks)
    assert not any(isinstance(cb, kind) for cb in volt.Trainer(logger=False, **{flag: False}).callbacks)


def test_enable_checkpointing_false_with_a_checkpoint_callback_is_a_contradiction():
    with pytest.raises(MisconfigurationException, match="enable_checkpointing=False` but found `ModelCheckpoint`"):
        volt.Trainer(enable_checkpointing=False, callbacks=[ModelCheckpoint()])


def test_callbacks_argument(tmp_path):
    stopper = EarlyStopping(monitor="val_loss")
    assert stopper in volt.Trainer(callbacks=stopper).callbacks
    with pytest.raises(TypeError, match="must contain Callback instances, got str"):
        volt.Trainer(callbacks=["early_stopping"])


# ------------------------------------------------------------------------------------------ hardware


@pytest.mark.parametrize("accelerator", ["cpu", "auto"])
def test_accelerator_cpu_and_auto_on_a_cpu_machine(accelerator, tmp_path):
    if accelerator == "auto" and torch.cuda.is_available():
        pytest.skip("auto picks the GPU here")
    run, _ = fit(tmp_path, accelerator=accelerator, limit_train_batches=1, limit_val_batches=0)
    assert isinstance(run.accelerator, CPUAccelerator) and run.strategy.root_device == torch.device("cpu")
    assert run.num_devices == 1 and run.world_size == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("kwargs", [dict(accelerator="gpu"), dict(accelerator="cuda", devices=1), dict(gpus=1)])
def test_gpu_without_a_gpu_is_a_clear_error(kwargs):
    with pytest.raises(RuntimeError, match="asks for a CUDA GPU, but none is available on this machine"):
        volt.Trainer(**kwargs)


def test_unknown_accelerator():
    with pytest.raises(ValueError, match="accelerator='quantum' is not supported. Choose 'cpu', 'gpu'"):
        volt.Trainer(accelerator="quantum")


@pytest.mark.parametrize("devices", [1, "1", [0], "auto", None])
def test_devices_that_mean_one_cpu(devices):
    assert volt.Trainer(accelerator="cpu", devices=devices, logger=False).num_devices == 1


@pytest.mark.parametrize("devices, message", [(0, "devices=0 must be a positive int"),
                                              ("many", "devices='many' is not understood"),
                                              ([], r"devices=\[\] selects no device"),
                                              (True, "devices=True is not understood")])
def test_invalid_devices(devices, message):
    with pytest.raises(ValueError, match=message):
        volt.Trainer(accelerator="cpu", devices=devices)


# ------------------------------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize("name, replacement", [
    ("resume_from_checkpoint", r"trainer.fit\(model, ckpt_path=...\)"),
    ("gpus_per_node", None),
    ("auto_lr_find", "Tuner"),
    ("progress_bar_refresh_rate", r"TQDMProgressBar\(refresh_rate=N\)"),
    ("checkpoint_callback", "enable_checkpointing="),
    ("weights_summary", "enable_model_summary="),
    ("replace_sampler_ddp", "use_distributed_sampler="),
    ("amp_backend", "precision='16-mixed'"),
    ("tpu_cores", "accelerator='tpu', devices=N"),
])
def test_removed_1x_arguments_name_their_replacement(name, replacement):
    if replacement is None:  # not a 1.x argument: a plain unknown keyword
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}'"):
            volt.Trainer(**{name: 1})
        return
    with pytest.raises(TypeError, match=f"`{name}`=...\\) was removed in Lightning 2.0.*{replacement}"):
        volt.Trainer(**{name: 1})


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_steps=-2), r"max_steps=-2\)` is invalid: `max_steps` must be a non-negative integer or -1"),
    (dict(accumulate_grad_batches=0), r"accumulate_grad_batches=0\)` is invalid: .* a positive integer"),
    (dict(log_every_n_steps=-1), r"log_every_n_steps=-1\)` is invalid: .* a non-negative integer, or None"),
    (dict(limit_train_batches=-1), r"limit_train_batches=-1\)` must be a fraction of the batches in \[0.0, 1.0\] or an int"),
    (dict(limit_train_batches=1.5), r"limit_train_batches=1.5\)` must be a fraction of the batches in \[0.0, 1.0\] or an"),
    (dict(limit_val_batches=0.01), r"limit_val_batches=0.01` keeps less than one of the 4 batches: 0.01 \* 4 < 1"),
    (dict(plugins=["something"]), "plugins=\\['something'\\] is not a plugin volt accepts"),
    (dict(strategy="horovod"), "strategy='horovod' is not supported"),
])
def test_invalid_values_are_clear_errors(kwargs, message, tmp_path):
    with pytest.raises((MisconfigurationException, ValueError), match=message):
        fit(tmp_path, **kwargs)


def test_trainer_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        volt.Trainer("cpu")


class WithHparams(BoringModel):
    def __init__(self, lr=0.1):
        super().__init__(lr=lr)
        self.save_hyperparameters()


@pytest.mark.parametrize("enable_autolog_hparams", [True, False])
def test_enable_autolog_hparams(tmp_path, enable_autolog_hparams):
    memory = MemoryLogger()
    trainer(tmp_path, logger=memory, enable_autolog_hparams=enable_autolog_hparams).fit(WithHparams())
    assert memory.hparams == ({"lr": 0.1} if enable_autolog_hparams else {})
    assert memory.metrics, "metrics are logged either way"


def test_model_registry_is_accepted_and_says_it_uploads_nothing(tmp_path):
    with pytest.warns(UserWarning, match=r"Trainer\(model_registry='my-model'\) is ignored: volt does not upload "
                                         r"checkpoints to Lightning's model registry \(litmodels\)"):
        run = trainer(tmp_path, model_registry="my-model", enable_checkpointing=True)
    run.fit(BoringModel())
    assert os.listdir(tmp_path / "checkpoints") == ["epoch=0-step=4.ckpt"]
