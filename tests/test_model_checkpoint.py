"""ModelCheckpoint: naming, validation of arguments, top-k bookkeeping, state, and (end to end) the files a real
`fit` leaves behind, compared with PyTorch Lightning 2.6.6 where it is installed."""
import logging
import math
import os
from datetime import timedelta
from types import SimpleNamespace

import pytest
import torch

from volt.callbacks.model_checkpoint import ModelCheckpoint
from volt.utilities.exceptions import MisconfigurationException


# ------------------------------------------------------------------------------------------- unit level: a stub


class _SingleProcess:
    state_dict_type = "full"
    is_global_zero = True

    def broadcast(self, obj, src=0):
        return obj

    def reduce_boolean_decision(self, decision, all=True):
        return decision

    def barrier(self, name=None):
        pass

    def remove_checkpoint(self, filepath):  # as the real strategies do: rank 0 removes
        if self.is_global_zero:
            os.remove(filepath)


class StubTrainer:
    """The part of the Trainer surface ModelCheckpoint uses. `schedule_checkpoint` writes the callback's state at
    once, as the real Trainer does outside a running batch, so tests can check what ended up in each file."""

    def __init__(self, root, callback, **overrides):
        self.default_root_dir = str(root)
        self.loggers = []
        self.strategy = _SingleProcess()
        self.is_global_zero = True
        self.global_step = 0
        self.current_epoch = 0
        self.callback_metrics = {}
        self.state = SimpleNamespace(fn="fit")
        self.sanity_checking = False
        self.fast_dev_run = False
        self.ckpt_path = None
        self.check_val_every_n_epoch = 1
        self.num_val_batches = [2]
        self.val_check_interval = 1.0
        self.num_training_batches = 4
        self.__dict__.update(overrides)
        self.callback = callback
        self.files_before_each_save = []

    def at_checkpoint_point(self, fn):
        fn()

    def schedule_checkpoint(self, filepath, weights_only=False, background=False):
        os.makedirs(os.path.dirname(filepath), exist_ok=True)
        self.files_before_each_save.append(sorted(os.listdir(os.path.dirname(filepath))))
        state = {"global_step": self.global_step, "weights_only": weights_only}
        state["callbacks"] = {self.callback.state_key: self.callback.state_dict()}
        torch.save(state, filepath)


def _epoch(trainer, cb, **metrics):
    """One training epoch of `trainer.num_training_batches` steps, then validation logging `metrics`."""
    for batch_idx in range(trainer.num_training_batches):
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, None, None, None, batch_idx)
    trainer.callback_metrics = {k: torch.tensor(float(v)) for k, v in metrics.items()}
    cb.on_validation_end(trainer, None)
    cb.on_train_epoch_end(trainer, None)
    trainer.current_epoch += 1


def _fit(tmp_path, cb, epochs_metrics, **overrides):
    trainer = StubTrainer(tmp_path, cb, **overrides)
    cb.setup(trainer, None, "fit")
    cb.on_train_start(trainer, None)
    for metrics in epochs_metrics:
        _epoch(trainer, cb, **metrics)
    cb.on_train_end(trainer, None)
    return trainer


def _files(folder):
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------------------------------------- file names


@pytest.mark.parametrize(
    ("filename", "auto_insert", "metrics", "expected"),
    [
        (None, True, {"epoch": 0, "step": 4}, "epoch=0-step=4.ckpt"),
        ("{epoch}-{val_loss:.2f}", True, {"epoch": 2, "val_loss": torch.tensor(0.1234)}, "epoch=2-val_loss=0.12.ckpt"),
        ("{epoch:02d}-{val_loss:.1f}", False, {"epoch": 3, "val_loss": 1.25}, "03-1.2.ckpt"),
        ("{epoch}-{missing}-{also_missing:.2f}", True, {"epoch": 1}, "epoch=1-missing=0-also_missing=0.00.ckpt"),
        ("{epoch}_{epoch_loss:.1f}", True, {"epoch": 1, "epoch_loss": 2.0}, "epoch=1_epoch_loss=2.0.ckpt"),
        ("run-{val/acc:.2f}", False, {"val/acc": torch.tensor(0.5)}, "run-0.50.ckpt"),
        ("model", True, {}, "model.ckpt"),
    ],
)
def test_format_checkpoint_name(filename, auto_insert, metrics, expected):
    cb = ModelCheckpoint(filename=filename, auto_insert_metric_name=auto_insert)
    assert cb.format_checkpoint_name(metrics) == expected


def test_format_checkpoint_name_dirpath_version_prefix_and_class_constants(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}")
    assert cb.format_checkpoint_name({"epoch": 3}, ver=2) == str(tmp_path / "epoch=3-v2.ckpt")
    assert cb.format_checkpoint_name({"epoch": 3}, prefix="run") == str(tmp_path / "run-epoch=3.ckpt")

    class Custom(ModelCheckpoint):
        CHECKPOINT_JOIN_CHAR = "_"
        CHECKPOINT_EQUALS_CHAR = ":"
        FILE_EXTENSION = ".pt"

    assert Custom().format_checkpoint_name({"epoch": 1, "step": 2}, ver=1) == "epoch:1_step:2_v1.pt"


def test_metric_name_with_slash_makes_a_subfolder_unless_names_are_not_inserted(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}-{val/loss:.1f}")
    assert cb.format_checkpoint_name({"epoch": 0, "val/loss": 0.5}) == str(tmp_path / "epoch=0-val" / "loss=0.5.ckpt")


def test_dirpath_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ModelCheckpoint(dirpath="ckpts").dirpath == os.path.realpath(tmp_path / "ckpts")


def test_default_dirpath_from_logger_or_root_dir(tmp_path):
    logger = SimpleNamespace(save_dir=str(tmp_path / "logs"), name="exp", version=3)
    cb = ModelCheckpoint()
    cb.setup(StubTrainer(tmp_path, cb, loggers=[logger]), None, "fit")
    assert cb.dirpath == str(tmp_path / "logs" / "exp" / "version_3" / "checkpoints")

    named = SimpleNamespace(save_dir=None, name="exp", version="custom")
    cb = ModelCheckpoint()
    cb.setup(StubTrainer(tmp_path, cb, loggers=[named]), None, "fit")
    assert cb.dirpath == str(tmp_path / "exp" / "custom" / "checkpoints")

    cb = ModelCheckpoint()
    cb.setup(StubTrainer(tmp_path, cb), None, "fit")
    assert cb.dirpath == str(tmp_path / "checkpoints")


# ------------------------------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "mean"}, r"`mode` can be min, max but got mean; use 'min' or 'max'"),
        ({"save_top_k": -2}, r"save_top_k=-2\)\. Must be >= -1"),
        ({"save_top_k": 3}, r"save_top_k=3, monitor=None.*Pass `monitor=`"),
        ({"every_n_train_steps": -1}, r"every_n_train_steps=-1\)\. Must be >= 0"),
        ({"every_n_epochs": -1}, r"every_n_epochs=-1"),
        ({"every_n_train_steps": 2, "every_n_epochs": 1}, r"Combination of parameters every_n_train_steps=2.*mutually"),
        ({"every_n_train_steps": 2, "train_time_interval": timedelta(seconds=1)}, r"mutually exclusive"),
        ({"train_time_interval": 5}, r"timedelta"),
        ({"save_last": "yes"}, r"save_last='yes'"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(MisconfigurationException, match=match):
        ModelCheckpoint(**kwargs)


def test_zero_valued_triggers_are_not_exclusive():
    cb = ModelCheckpoint(every_n_train_steps=0, every_n_epochs=3)
    assert (cb._every_n_train_steps, cb.every_n_epochs) == (0, 3)
    assert ModelCheckpoint(every_n_train_steps=5).every_n_epochs == 0
    assert ModelCheckpoint().every_n_epochs == 1


def test_link_mode_rejects_remote_dirpath(tmp_path):
    cb = ModelCheckpoint(dirpath="memory://bucket/ckpts", save_last="link")
    with pytest.raises(ValueError, match="save_last='link'.* is only supported for local file paths"):
        cb.setup(StubTrainer(tmp_path, cb), None, "fit")


def test_state_key_names_the_distinguishing_arguments():
    cb = ModelCheckpoint(monitor="val_loss", mode="max", every_n_train_steps=5)
    assert cb.state_key == (
        "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'max', 'every_n_train_steps': 5, 'every_n_epochs': 0,"
        " 'train_time_interval': None}"
    )


# ----------------------------------------------------------------------------------------- top-k bookkeeping


def test_top_k_keeps_the_best_and_removes_the_rest(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2, filename="{epoch}-{val_loss:.1f}")
    _fit(tmp_path, cb, [{"val_loss": 3}, {"val_loss": 1}, {"val_loss": 2}, {"val_loss": 0.5}])
    assert _files(tmp_path) == ["epoch=1-val_loss=1.0.ckpt", "epoch=3-val_loss=0.5.ckpt"]
    assert cb.best_model_path == str(tmp_path / "epoch=3-val_loss=0.5.ckpt")
    assert cb.best_model_score == torch.tensor(0.5)
    assert cb.kth_best_model_path == str(tmp_path / "epoch=1-val_loss=1.0.ckpt")
    assert cb.kth_value == torch.tensor(1.0)
    assert cb.current_score == torch.tensor(0.5)
    assert set(cb.best_k_models) == {str(tmp_path / f) for f in _files(tmp_path)}


def test_mode_max(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="acc", mode="max", filename="{epoch}")
    _fit(tmp_path, cb, [{"acc": 0.2}, {"acc": 0.9}, {"acc": 0.5}])
    assert _files(tmp_path) == ["epoch=1.ckpt"]
    assert cb.best_model_score == torch.tensor(0.9)


def test_nan_ranks_worst_and_is_stored_as_inf(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2, filename="{epoch}")
    _fit(tmp_path, cb, [{"val_loss": math.nan}, {"val_loss": 5}, {"val_loss": 7}])
    assert _files(tmp_path) == ["epoch=1.ckpt", "epoch=2.ckpt"]
    assert cb.best_model_score == torch.tensor(5.0)

    cb = ModelCheckpoint(dirpath=tmp_path / "max", monitor="acc", mode="max", save_top_k=2, filename="{epoch}")
    _fit(tmp_path, cb, [{"acc": math.nan}])
    assert cb.best_model_score == torch.tensor(-math.inf)


def test_save_top_k_all_and_none(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "all", monitor="val_loss", save_top_k=-1)
    _fit(tmp_path, cb, [{"val_loss": 3}, {"val_loss": 4}])
    assert _files(tmp_path / "all") == ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt"]

    cb = ModelCheckpoint(dirpath=tmp_path / "none", save_top_k=0)
    _fit(tmp_path, cb, [{}, {}])
    assert not (tmp_path / "none").exists()


def test_no_monitor_keeps_the_newest(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path)
    _fit(tmp_path, cb, [{}, {}, {}])
    assert _files(tmp_path) == ["epoch=2-step=12.ckpt"]
    assert cb.best_model_path == str(tmp_path / "epoch=2-step=12.ckpt")
    assert cb.best_model_score is None


def test_version_counter_on_name_clash(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=-1, filename="model")
    _fit(tmp_path, cb, [{"val_loss": 3}, {"val_loss": 2}, {"val_loss": 1}])
    assert _files(tmp_path) == ["model-v1.ckpt", "model-v2.ckpt", "model.ckpt"]

    cb = ModelCheckpoint(dirpath=tmp_path / "off", monitor="val_loss", save_top_k=-1, filename="model",
                         enable_version_counter=False)
    _fit(tmp_path, cb, [{"val_loss": 3}, {"val_loss": 2}])
    assert _files(tmp_path / "off") == ["model.ckpt"]


def test_a_file_left_from_an_earlier_run_is_not_overwritten(tmp_path):
    (tmp_path / "last.ckpt").write_text("earlier run")
    cb = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    with pytest.warns(UserWarning, match="exists and is not empty"):
        _fit(tmp_path, cb, [{}, {}])
    assert _files(tmp_path) == ["epoch=1-step=8.ckpt", "last-v1.ckpt", "last.ckpt"]
    assert (tmp_path / "last.ckpt").read_text() == "earlier run"
    assert cb.last_model_path == str(tmp_path / "last-v1.ckpt")


def test_state_written_into_each_file_already_names_that_file(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_last=True)
    _fit(tmp_path, cb, [{"val_loss": 1}])
    for name in ("epoch=0-step=4.ckpt", "last.ckpt"):
        state = torch.load(tmp_path / name, weights_only=True)["callbacks"][cb.state_key]
        assert state["best_model_path"] == str(tmp_path / "epoch=0-step=4.ckpt")
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"][cb.state_key]["last_model_path"] == str(
        tmp_path / "last.ckpt"
    )


def test_save_weights_only_is_passed_to_the_trainer(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, save_weights_only=True)
    _fit(tmp_path, cb, [{}])
    assert torch.load(tmp_path / "epoch=0-step=4.ckpt", weights_only=True)["weights_only"] is True


# ---------------------------------------------------------------------------------------------------- triggers


def test_every_n_train_steps(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    _fit(tmp_path, cb, [{}, {}])
    assert _files(tmp_path) == ["epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt"]


def test_train_time_interval(tmp_path, monkeypatch):
    clock = iter(range(100))
    monkeypatch.setattr("volt.callbacks.model_checkpoint.time.monotonic", lambda: next(clock) * 10.0)
    cb = ModelCheckpoint(dirpath=tmp_path, train_time_interval=timedelta(seconds=15), save_top_k=-1)
    _fit(tmp_path, cb, [{}])  # start at t=0, batches at t=10, 20 (save), 30, 40 (save)
    assert _files(tmp_path) == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"]


def test_every_n_epochs(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=2, save_top_k=-1)
    _fit(tmp_path, cb, [{}, {}, {}, {}])
    assert _files(tmp_path) == ["epoch=1-step=8.ckpt", "epoch=3-step=16.ckpt"]


def test_saves_after_validation_when_it_runs_several_times_per_epoch(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1)
    trainer = StubTrainer(tmp_path, cb, val_check_interval=0.5)
    cb.setup(trainer, None, "fit")
    cb.on_train_start(trainer, None)
    trainer.global_step = 2
    cb.on_validation_end(trainer, None)
    trainer.global_step = 4
    cb.on_validation_end(trainer, None)
    cb.on_train_epoch_end(trainer, None)  # already saved at this step
    assert _files(tmp_path) == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"]


@pytest.mark.parametrize(
    ("overrides", "on_train_epoch_end"),
    [
        ({}, True),
        ({"num_val_batches": []}, True),
        ({"num_val_batches": [0]}, True),
        ({"val_check_interval": 0.25}, False),
        ({"check_val_every_n_epoch": 2}, False),
    ],
)
def test_where_epoch_checkpoints_are_saved(tmp_path, overrides, on_train_epoch_end):
    cb = ModelCheckpoint()
    assert cb._should_save_on_train_epoch_end(StubTrainer(tmp_path, cb, **overrides)) is on_train_epoch_end
    forced = ModelCheckpoint(save_on_train_epoch_end=not on_train_epoch_end)
    assert forced._should_save_on_train_epoch_end(StubTrainer(tmp_path, cb, **overrides)) is not on_train_epoch_end


@pytest.mark.parametrize("state", [{"sanity_checking": True}, {"state": SimpleNamespace(fn="validate")}])
def test_never_saves_in_sanity_check_or_outside_fit(tmp_path, state):
    for cb in (ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1),
               ModelCheckpoint(dirpath=tmp_path, save_last=True, save_on_train_epoch_end=False)):
        trainer = StubTrainer(tmp_path, cb, **state)
        cb.setup(trainer, None, "fit")
        _epoch(trainer, cb)
    assert _files(tmp_path) == []


def test_never_saves_in_fast_dev_run_not_even_last(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1)
    _fit(tmp_path, cb, [{}], fast_dev_run=1)
    assert _files(tmp_path) == []


def test_step_trigger_waits_for_validation_when_the_monitored_metric_is_missing(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", every_n_train_steps=3, save_top_k=-1,
                         save_on_train_epoch_end=False)
    _fit(tmp_path, cb, [{"val_loss": 2}])
    assert _files(tmp_path) == ["epoch=0-step=4.ckpt"]  # deferred from step 3 to the validation at step 4
    assert cb.best_model_score == torch.tensor(2.0)


# -------------------------------------------------------------------------------------------------- save_last


def test_save_last_copy(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_last=True)
    _fit(tmp_path, cb, [{"val_loss": 1}, {"val_loss": 2}])
    # epoch 1 was not in the top 1, so nothing (not even last) was saved then
    assert _files(tmp_path) == ["epoch=0-step=4.ckpt", "last.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 4
    assert cb.last_model_path == str(tmp_path / "last.ckpt")


def test_save_last_with_top_k_zero_saves_only_at_train_end(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, save_top_k=0, save_last=True)
    trainer = _fit(tmp_path, cb, [{}, {}])
    assert _files(tmp_path) == ["last.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == trainer.global_step


def test_save_last_with_a_formatted_name_replaces_the_previous_one(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=-1)
    cb.CHECKPOINT_NAME_LAST = "{epoch}-last"
    _fit(tmp_path, cb, [{}, {}])
    assert _files(tmp_path) == ["epoch=0-step=4.ckpt", "epoch=1-last.ckpt", "epoch=1-step=8.ckpt"]


def test_old_files_are_removed_only_after_the_new_ones_are_written(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = _fit(tmp_path, cb, [{}, {}])
    assert trainer.files_before_each_save == [
        [],
        ["epoch=0-step=4.ckpt"],
        ["epoch=0-step=4.ckpt", "last.ckpt"],
        ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt", "last.ckpt"],  # epoch 0 is still there while last is written
    ]
    assert _files(tmp_path) == ["epoch=1-step=8.ckpt", "last.ckpt"]


def test_save_last_link_always_points_at_an_existing_checkpoint(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, save_last="link", every_n_train_steps=1)
    trainer = StubTrainer(tmp_path, cb)
    cb.setup(trainer, None, "fit")
    cb.on_train_start(trainer, None)
    for step in range(1, 4):
        trainer.global_step = step
        cb.on_train_batch_end(trainer, None, None, None, step - 1)
        assert os.readlink(tmp_path / "last.ckpt") == f"epoch=0-step={step}.ckpt"
        assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == step
    assert _files(tmp_path) == ["epoch=0-step=3.ckpt", "last.ckpt"]
    assert [files for files in trainer.files_before_each_save] == [
        [], ["epoch=0-step=1.ckpt", "last.ckpt"], ["epoch=0-step=2.ckpt", "last.ckpt"]
    ]


def test_save_last_link_with_top_k_zero_writes_a_real_file(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, save_last="link", save_top_k=0, every_n_train_steps=2)
    _fit(tmp_path, cb, [{}])
    assert not os.path.islink(tmp_path / "last.ckpt")
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 4


def test_save_on_exception(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, save_on_exception=True, save_last=True)
    trainer = _fit(tmp_path, cb, [{}])
    cb.on_exception(trainer, None, RuntimeError("boom"))  # nothing new since the epoch-end save
    trainer.global_step = 6
    cb.on_exception(trainer, None, RuntimeError("boom"))
    assert _files(tmp_path) == ["epoch=0-step=4.ckpt", "epoch=1-step=6.ckpt", "last.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 6

    off = ModelCheckpoint(dirpath=tmp_path / "off")
    trainer = _fit(tmp_path, off, [])
    trainer.global_step = 2
    off.on_exception(trainer, None, RuntimeError("boom"))
    assert not (tmp_path / "off").exists()


def test_other_ranks_follow_rank_zero_and_never_touch_files(tmp_path):
    class Rank1(_SingleProcess):
        is_global_zero = False

        def broadcast(self, obj, src=0):
            return str(tmp_path / "from_rank_0") if isinstance(obj, str) else True  # rank 0's dirpath, "time is up"

    class Rank1Trainer(StubTrainer):
        def schedule_checkpoint(self, filepath, weights_only=False, background=False):
            self.files_before_each_save.append(filepath)  # every rank calls this; only rank 0 writes

    rank0_dir = tmp_path / "from_rank_0"
    rank0_dir.mkdir()
    (rank0_dir / "epoch=0-step=1.ckpt").write_text("written by rank 0")
    cb = ModelCheckpoint(train_time_interval=timedelta(hours=1))
    trainer = Rank1Trainer(tmp_path, cb, is_global_zero=False, strategy=Rank1())
    cb.setup(trainer, None, "fit")
    cb.on_train_start(trainer, None)
    for step in (1, 2):
        trainer.global_step = step
        cb.on_train_batch_end(trainer, None, None, None, step - 1)
    # rank 0 saw no clash (the reduced decision), so rank 1 uses the same plain names; and it removes nothing
    assert trainer.files_before_each_save == [str(rank0_dir / "epoch=0-step=1.ckpt"),
                                              str(rank0_dir / "epoch=0-step=2.ckpt")]
    assert _files(rank0_dir) == ["epoch=0-step=1.ckpt"]


# ------------------------------------------------------------------------------------------ missing monitor key


def test_missing_monitor_after_validation_names_the_key_and_the_available_ones(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_acc")
    with pytest.raises(
        MisconfigurationException,
        match=r"ModelCheckpoint\(monitor='val_acc'\)` could not find the monitored key in the returned metrics:"
        r" \['val_loss', 'epoch', 'step'\]. HINT: Did you call `log\('val_acc', value\)`",
    ):
        _fit(tmp_path, cb, [{"val_loss": 1}])


def test_missing_monitor_without_validation_only_warns(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_acc")
    trainer = StubTrainer(tmp_path, cb, num_val_batches=[])
    cb.setup(trainer, None, "fit")
    cb.on_train_start(trainer, None)
    trainer.global_step = 4
    with pytest.warns(UserWarning, match="could not find the monitored key"):
        cb.on_train_epoch_end(trainer, None)
    assert not tmp_path.joinpath("epoch=0-step=4.ckpt").exists()


# --------------------------------------------------------------------------------------------------- state


def test_state_dict_round_trip(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2, save_last=True)
    _fit(tmp_path, cb, [{"val_loss": 3}, {"val_loss": 1}, {"val_loss": 2}])
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"][cb.state_key]
    lightning_keys = {"monitor", "best_model_score", "best_model_path", "current_score", "dirpath", "best_k_models",
                      "kth_best_model_path", "kth_value", "last_model_path"}
    # volt adds what decides the next saves, so that a resumed run saves where an uninterrupted one does
    assert set(state) == lightning_keys | {"last_global_step_saved", "last_checkpoint_saved",
                                           "defer_save_until_validation"}
    # last.ckpt is a copy of the top-k file saved at the same step, with that file's callback state (as Lightning)
    newest = str(tmp_path / "epoch=2-step=12.ckpt")
    assert state["last_global_step_saved"] == 12 and state["last_checkpoint_saved"] == newest
    assert torch.load(newest, weights_only=True)["callbacks"][cb.state_key] == state

    restored = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2, save_last=True)
    restored.load_state_dict(state)
    for attr in ("best_model_path", "best_model_score", "best_k_models", "kth_best_model_path", "kth_value",
                 "last_model_path"):
        assert getattr(restored, attr) == getattr(cb, attr), attr
    saved_again = restored.state_dict()
    for key in ("last_global_step_saved", "last_checkpoint_saved", "defer_save_until_validation"):
        assert saved_again[key] == state[key], key


def test_load_state_dict_from_another_folder_restores_only_best_model_path(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "a", monitor="val_loss")
    _fit(tmp_path, cb, [{"val_loss": 3}])
    moved = ModelCheckpoint(dirpath=tmp_path / "b", monitor="val_loss")
    with pytest.warns(UserWarning, match="dirpath has changed from .* Only `best_model_path` will be reloaded"):
        moved.load_state_dict(cb.state_dict())
    assert moved.best_model_path == cb.best_model_path
    assert moved.best_k_models == {} and moved.best_model_score is None


def test_resumed_run_never_deletes_the_checkpoint_it_resumed_from(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path)
    _fit(tmp_path, cb, [{}])
    resumed = ModelCheckpoint(dirpath=tmp_path)
    resumed.load_state_dict(cb.state_dict())
    trainer = StubTrainer(tmp_path, resumed, ckpt_path=cb.best_model_path, current_epoch=1, global_step=4)
    with pytest.warns(UserWarning, match="not empty"):
        resumed.setup(trainer, None, "fit")
    resumed.on_train_start(trainer, None)
    _epoch(trainer, resumed)
    assert _files(tmp_path) == ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt"]


def test_to_yaml(tmp_path):
    import yaml

    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2, filename="{epoch}")
    _fit(tmp_path, cb, [{"val_loss": 3}, {"val_loss": 1}])
    cb.to_yaml()
    assert yaml.safe_load((tmp_path / "best_k_models.yaml").read_text()) == {
        str(tmp_path / "epoch=0.ckpt"): 3.0,
        str(tmp_path / "epoch=1.ckpt"): 1.0,
    }


@pytest.fixture
def volt_logs(caplog, monkeypatch):
    """caplog for volt's logger, which does not propagate to the root logger by default."""
    monkeypatch.setattr(logging.getLogger("volt"), "propagate", True)
    with caplog.at_level(logging.INFO, logger="volt"):
        yield caplog


def test_verbose_messages(tmp_path, volt_logs):
    cb = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", verbose=True, filename="{epoch}")
    _fit(tmp_path, cb, [{"val_loss": 2}, {"val_loss": 3}])
    path = str(tmp_path / "epoch=0.ckpt")
    assert f"Epoch 0, global step 4: 'val_loss' reached 2.00000 (best 2.00000), saving model to {path!r} as top 1" \
        in volt_logs.text
    assert "Epoch 1, global step 8: 'val_loss' was not in top 1" in volt_logs.text


def test_loggers_hear_about_each_save(tmp_path):
    saved = []
    logger = SimpleNamespace(save_dir=str(tmp_path), name="x", version=0,
                             after_save_checkpoint=lambda cb: saved.append(cb.best_model_path))
    cb = ModelCheckpoint(dirpath=tmp_path)
    _fit(tmp_path, cb, [{}, {}], loggers=[logger])
    assert saved == [str(tmp_path / "epoch=0-step=4.ckpt"), str(tmp_path / "epoch=1-step=8.ckpt")]


# ------------------------------------------------------------------------------- end to end, with a real Trainer
# Each scenario lists the files a 3-epoch fit (4 training batches of 4 samples, 2 validation batches) leaves in
# `dirpath` ("name -> target" for links) and the name of `best_model_path`. The expectations are what PyTorch
# Lightning 2.6.6 produces; the `lightning`-marked test checks that they still are.

EVERY_2_STEPS = ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "epoch=1-step=6.ckpt", "epoch=1-step=8.ckpt",
                 "epoch=2-step=10.ckpt", "epoch=2-step=12.ckpt"]
E2E_SCENARIOS = {
    "default": ({}, {}, None, ["epoch=2-step=12.ckpt"], "epoch=2-step=12.ckpt"),
    "top_k_0_with_last": ({"save_top_k": 0, "save_last": True}, {}, None, ["last.ckpt"], ""),
    "last_link": ({"save_last": "link"}, {}, None, ["epoch=2-step=12.ckpt", "last.ckpt -> epoch=2-step=12.ckpt"],
                  "epoch=2-step=12.ckpt"),
    "monitor_top_2_with_last": (
        {"monitor": "val_loss", "save_top_k": 2, "save_last": True}, {}, [3, 1, 2],
        ["epoch=1-step=8.ckpt", "epoch=2-step=12.ckpt", "last.ckpt"], "epoch=1-step=8.ckpt",
    ),
    "monitor_top_1_link": (
        {"monitor": "val_loss", "save_last": "link"}, {}, [3, 1, 2],
        ["epoch=1-step=8.ckpt", "last.ckpt -> epoch=1-step=8.ckpt"], "epoch=1-step=8.ckpt",
    ),
    "nan_is_worst": (
        {"monitor": "val_loss", "save_top_k": 2, "filename": "{epoch}-{val_loss:.2f}"}, {}, [math.nan, 1, 2],
        ["epoch=1-val_loss=1.00.ckpt", "epoch=2-val_loss=2.00.ckpt"], "epoch=1-val_loss=1.00.ckpt",
    ),
    "max_mode": ({"monitor": "val_loss", "mode": "max", "filename": "{epoch}"}, {}, [1, 3, 2], ["epoch=1.ckpt"],
                 "epoch=1.ckpt"),
    "fixed_name_no_monitor": ({"filename": "model", "save_top_k": -1}, {}, None, ["model.ckpt"], "model.ckpt"),
    "version_counter": (
        {"filename": "model", "save_top_k": -1, "monitor": "val_loss"}, {}, [3, 2, 1],
        ["model-v1.ckpt", "model-v2.ckpt", "model.ckpt"], "model-v2.ckpt",
    ),
    "every_2_steps": (
        {"every_n_train_steps": 2, "save_top_k": -1}, {}, None,
        EVERY_2_STEPS, "epoch=2-step=12.ckpt",
    ),
    "every_3_steps_monitor_val": (
        {"every_n_train_steps": 3, "save_top_k": -1, "monitor": "val_loss"}, {}, [3, 1, 2],
        ["epoch=1-step=6.ckpt", "epoch=2-step=12.ckpt", "epoch=2-step=9.ckpt"], "epoch=2-step=9.ckpt",
    ),
    "val_twice_per_epoch": (
        {"save_top_k": -1}, {"val_check_interval": 2}, None,
        EVERY_2_STEPS, "epoch=2-step=12.ckpt",
    ),
    "val_every_2_epochs": ({"save_top_k": -1}, {"check_val_every_n_epoch": 2}, None, ["epoch=1-step=8.ckpt"],
                           "epoch=1-step=8.ckpt"),
    "every_2_epochs": ({"save_top_k": -1, "every_n_epochs": 2}, {}, None, ["epoch=1-step=8.ckpt"],
                       "epoch=1-step=8.ckpt"),
    "slash_and_missing_keys": (
        {"filename": "{epoch:02d}-{val/loss:.1f}-{missing}", "save_top_k": -1}, {}, None,
        [f"epoch=0{e}-val/loss=0.0-missing=0.ckpt" for e in range(3)], "loss=0.0-missing=0.ckpt",
    ),
    "no_metric_names": (
        {"filename": "{epoch:02d}-{val_loss:.1f}", "auto_insert_metric_name": False, "save_top_k": -1}, {},
        [3, 1, 2], ["00-3.0.ckpt", "01-1.0.ckpt", "02-2.0.ckpt"], "02-2.0.ckpt",
    ),
    "sanity_check_saves_nothing": ({"save_top_k": -1, "save_last": True}, {"num_sanity_val_steps": 2}, None,
                                   ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt", "epoch=2-step=12.ckpt",
                                    "last.ckpt"], "epoch=2-step=12.ckpt"),
}


def _make_module(pl, val_losses):
    class Module(pl.LightningModule):
        """Logs `val_loss` from a fixed list, one value per validation run (the sanity check excluded)."""

        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.validations = 0

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            if val_losses is not None:
                loss = torch.tensor(float(val_losses[self.validations]))
            self.log("val_loss", loss)

        def on_validation_epoch_end(self):
            if not self.trainer.sanity_checking:
                self.validations += 1

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Module()


def _loaders(n_train=16, n_val=8):
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(0)
    train = DataLoader(TensorDataset(torch.randn(n_train, 4, generator=gen)), batch_size=4)
    val = DataLoader(TensorDataset(torch.randn(n_val, 4, generator=gen)), batch_size=4)
    return train, val


def _trainer(pl, root, callbacks, **kwargs):
    kwargs = {"max_epochs": 3, "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
              "num_sanity_val_steps": 0, "default_root_dir": str(root), **kwargs}
    return pl.Trainer(callbacks=callbacks, **kwargs)


def _listing(folder):
    found = []
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            entry = os.path.relpath(path, folder)
            found.append(f"{entry} -> {os.readlink(path)}" if os.path.islink(path) else entry)
    return sorted(found)


def _run_scenario(pl, root, name):
    ckpt_kwargs, trainer_kwargs, val_losses, _, _ = E2E_SCENARIOS[name]
    cb = pl.callbacks.ModelCheckpoint(dirpath=root / "ckpts", **ckpt_kwargs)
    _trainer(pl, root, [cb], **trainer_kwargs).fit(_make_module(pl, val_losses), *_loaders())
    return _listing(root / "ckpts"), os.path.basename(cb.best_model_path)


@pytest.mark.parametrize("name", sorted(E2E_SCENARIOS))
def test_fit_leaves_the_expected_files(tmp_path, name):
    import volt

    files, best = _run_scenario(volt, tmp_path, name)
    assert (files, best) == (sorted(E2E_SCENARIOS[name][3]), E2E_SCENARIOS[name][4])


@pytest.mark.lightning
@pytest.mark.parametrize("name", sorted(E2E_SCENARIOS))
def test_lightning_leaves_the_same_files(tmp_path, name, quiet_lightning):
    files, best = _run_scenario(quiet_lightning, tmp_path, name)
    assert (files, best) == (sorted(E2E_SCENARIOS[name][3]), E2E_SCENARIOS[name][4])


def _resume(pl, root):
    """2 epochs keeping the best 2 and last.ckpt, then resume from last.ckpt for 2 more: the rankings carry over,
    last.ckpt is replaced in place (no `last-v1`), and the file resumed from is not deleted."""
    def callbacks():
        return [pl.callbacks.ModelCheckpoint(dirpath=root / "ckpts", monitor="val_loss", save_top_k=2,
                                             save_last=True, filename="{epoch}-{val_loss:.1f}")]

    _trainer(pl, root, callbacks(), max_epochs=2).fit(_make_module(pl, [3, 1]), *_loaders())
    resumed = callbacks()
    with pytest.warns(UserWarning, match="exists and is not empty"):
        _trainer(pl, root, resumed, max_epochs=4).fit(_make_module(pl, [2, 0.5]), *_loaders(),
                                                      ckpt_path=str(root / "ckpts" / "last.ckpt"))
    cb = resumed[0]
    return _listing(root / "ckpts"), os.path.basename(cb.best_model_path), float(cb.best_model_score), \
        sorted(os.path.basename(p) for p in cb.best_k_models)


RESUMED = (["epoch=1-val_loss=1.0.ckpt", "epoch=3-val_loss=0.5.ckpt", "last.ckpt"], "epoch=3-val_loss=0.5.ckpt", 0.5,
           ["epoch=1-val_loss=1.0.ckpt", "epoch=3-val_loss=0.5.ckpt"])


def test_resume_continues_the_rankings(tmp_path):
    import volt

    assert _resume(volt, tmp_path) == RESUMED


@pytest.mark.lightning
def test_lightning_resumes_the_same_way(tmp_path, quiet_lightning):
    assert _resume(quiet_lightning, tmp_path) == RESUMED


def _default_locations(pl, root):
    """Where checkpoints go without a dirpath: under the first logger's version folder, else the root dir."""
    found = []
    for logger in (pl.loggers.CSVLogger(str(root), name="exp"), False):
        trainer = _trainer(pl, root, None, max_epochs=1, logger=logger)
        trainer.fit(_make_module(pl, None), *_loaders())
        found.append(os.path.relpath(trainer.checkpoint_callback.best_model_path, root))
    return found


DEFAULT_LOCATIONS = [os.path.join("exp", "version_0", "checkpoints", "epoch=0-step=4.ckpt"),
                     os.path.join("checkpoints", "epoch=0-step=4.ckpt")]


def test_default_dirpath(tmp_path):
    import volt

    assert _default_locations(volt, tmp_path) == DEFAULT_LOCATIONS


@pytest.mark.lightning
def test_lightning_default_dirpath(tmp_path, quiet_lightning):
    assert _default_locations(quiet_lightning, tmp_path) == DEFAULT_LOCATIONS


MISSING_MONITOR = (r"`ModelCheckpoint\(monitor='val_acc'\)` could not find the monitored key in the returned metrics:"
                   r" \[.*'val_loss'.*\]\. HINT: Did you call `log\('val_acc', value\)` in the `LightningModule`\?")


def test_fit_with_a_never_logged_monitor_names_it(tmp_path):
    import volt

    cb = volt.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="val_acc")
    with pytest.raises(MisconfigurationException, match=MISSING_MONITOR):
        _trainer(volt, tmp_path, [cb]).fit(_make_module(volt, None), *_loaders())


@pytest.mark.lightning
def test_lightning_names_a_never_logged_monitor_the_same_way(tmp_path, quiet_lightning):
    cb = quiet_lightning.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="val_acc")
    with pytest.raises(quiet_lightning.utilities.exceptions.MisconfigurationException, match=MISSING_MONITOR):
        _trainer(quiet_lightning, tmp_path, [cb]).fit(_make_module(quiet_lightning, None), *_loaders())


def test_fast_dev_run_writes_nothing(tmp_path):
    import volt

    cb = volt.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True, every_n_train_steps=1)
    _trainer(volt, tmp_path, [cb], fast_dev_run=2).fit(_make_module(volt, None), *_loaders())
    assert not (tmp_path / "ckpts").exists()


def test_at_most_one_save_per_optimizer_step(tmp_path):
    import volt

    # with accumulation, global_step stays at 2 for two batches: one file, not a `-v1` copy
    cb = volt.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=1, save_top_k=-1)
    _trainer(volt, tmp_path, [cb], max_epochs=1, accumulate_grad_batches=2).fit(_make_module(volt, None), *_loaders())
    assert _listing(tmp_path / "ckpts") == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt"]


def _save_checkpoint_calls(pl, root):
    """The `trainer.save_checkpoint` calls of a fit with step saves, a `last` copy and weights only, the files they
    left; then what a fit leaves whose `save_checkpoint` is replaced by a mock that writes nothing."""
    from unittest import mock

    cb = pl.callbacks.ModelCheckpoint(dirpath=root / "a", every_n_train_steps=3, save_last=True, save_weights_only=True)
    trainer = _trainer(pl, root, [cb], max_epochs=2)
    with mock.patch.object(trainer, "save_checkpoint", wraps=trainer.save_checkpoint) as save:
        trainer.fit(_make_module(pl, None), *_loaders())
    calls = [(os.path.basename(c.args[0]), *c.args[1:], c.kwargs) for c in save.call_args_list]
    trainer = _trainer(pl, root, [pl.callbacks.ModelCheckpoint(dirpath=root / "b", save_last=True)], max_epochs=2)
    with mock.patch.object(trainer, "save_checkpoint") as replaced:
        trainer.fit(_make_module(pl, None), *_loaders())
    return calls, _listing(root / "a"), replaced.call_count, _listing(root / "b")


SAVE_CHECKPOINT_CALLS = ([("epoch=0-step=3.ckpt", True, {}), ("last.ckpt", True, {}), ("epoch=1-step=6.ckpt", True, {}),
                          ("last.ckpt", True, {})], ["epoch=1-step=6.ckpt", "last.ckpt"], 4, [])


def test_every_save_calls_trainer_save_checkpoint(tmp_path):
    """As in Lightning, ModelCheckpoint saves by calling `trainer.save_checkpoint(filepath, weights_only)` (volt calls
    it at the loop's checkpoint point): an override or a patch sees every save, and one that writes nothing leaves
    nothing written."""
    import volt

    assert _save_checkpoint_calls(volt, tmp_path) == SAVE_CHECKPOINT_CALLS


@pytest.mark.lightning
def test_lightning_calls_trainer_save_checkpoint_the_same_way(tmp_path, quiet_lightning):
    assert _save_checkpoint_calls(quiet_lightning, tmp_path) == SAVE_CHECKPOINT_CALLS


def test_checkpoints_load_safely_and_hold_the_callback_state(tmp_path):
    import volt

    cb = volt.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="val_loss", save_top_k=2)
    _trainer(volt, tmp_path, [cb], max_epochs=2).fit(_make_module(volt, [2, 1]), *_loaders())
    checkpoint = torch.load(cb.best_model_path, weights_only=True)
    state = checkpoint["callbacks"][cb.state_key]
    assert state["best_model_path"] == cb.best_model_path == str(tmp_path / "epoch=1-step=8.ckpt")
    assert state["best_k_models"] == cb.best_k_models
    assert checkpoint["global_step"] == 8 and "optimizer_states" in checkpoint

    weights_only = volt.callbacks.ModelCheckpoint(dirpath=tmp_path / "w", save_weights_only=True)
    _trainer(volt, tmp_path, [weights_only], max_epochs=1).fit(_make_module(volt, None), *_loaders())
    assert "optimizer_states" not in torch.load(weights_only.best_model_path, weights_only=True)


def test_remote_dirpath_through_fsspec(tmp_path):
    import fsspec

    import volt

    url = f"memory://{tmp_path.name}/ckpts"
    cb = volt.callbacks.ModelCheckpoint(dirpath=url, monitor="val_loss", save_top_k=2, save_last=True, filename="m")
    _trainer(volt, tmp_path, [cb]).fit(_make_module(volt, [3, 1, 2]), *_loaders())
    fs = fsspec.filesystem("memory")
    try:
        # epoch 2 evicts epoch 0's `m.ckpt` (the worst) and takes its name; epoch 1 holds `m-v1.ckpt`
        assert sorted(os.path.basename(p) for p in fs.ls(f"/{tmp_path.name}/ckpts", detail=False)) == [
            "last.ckpt", "m-v1.ckpt", "m.ckpt"]
        assert cb.best_model_path == f"{url}/m-v1.ckpt"
        assert torch.load(fs.open(f"/{tmp_path.name}/ckpts/m.ckpt"), weights_only=True)["global_step"] == 12
        cb.to_yaml()
        yaml_text = fs.cat(f"/{tmp_path.name}/ckpts/best_k_models.yaml").decode()
        assert yaml_text == f"{url}/m-v1.ckpt: 1.0\n{url}/m.ckpt: 2.0\n"
    finally:
        fs.rm(f"/{tmp_path.name}", recursive=True)
